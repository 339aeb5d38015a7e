"""Call tracing: one record per plugin call, with secrets redacted, to a sink.

Every in-process plugin run goes through :func:`pycni.invoke.run_in_process`, which hands a
record (:func:`call_record`) to the current sink: the node agent installs its in-memory ring
(:func:`set_trace_sink`); everything else (a shim running a call itself, ``pycni run``'s
in-process plugins) appends one JSON line to a size-bounded file (:func:`append_to_file`,
``/run/pycni/trace.jsonl`` unless ``PYCNI_TRACE`` names another path or ``off``), which is
renamed to ``<file>.1`` when the next line would take it past its limit (one backup).

A record (all keys always present)::

    {"ts": 1700000000.123, "ms": 4.2, "source": "standalone", "pid": 123,
     "command": "ADD", "container": "c1", "netns": "/run/netns/x", "ifname": "eth0",
     "plugin": "bridge", "network": "pods", "chain": "", "depth": 0,
     "config": {... redacted ...}, "status": 0, "result": {...} | null,
     "error": {"code": 7, "msg": "...", "details": "..."} | null}

``chain`` is set when the caller knows it (the runtime's in-process chains); otherwise
:func:`assign_chains` correlates calls into chains when they are read: runtimes never say
which calls belong together. ``depth`` is 1 and more for a call a plugin delegated (its IPAM).

This module lies on the shim's standalone path: it imports only what the plugin it traces
has loaded already (``json``, ``os``, ``re``, ``threading``, ``time``; not ``pathlib``), and
VERSION probes are not traced.
"""

import json
import os
import re
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

#: Where standalone calls are traced unless ``PYCNI_TRACE`` says otherwise (``off``: nowhere).
DEFAULT_TRACE_FILE = "/run/pycni/trace.jsonl"
#: Size past which the file is rotated (``PYCNI_TRACE_MAX_BYTES`` overrides it).
DEFAULT_MAX_BYTES = 4 << 20
#: A record larger than this loses its config and result (they are summarised): one call
#: can never take over the file, and a line stays one write.
MAX_RECORD = 64 << 10
#: What replaces a secret.
REDACTED = "<redacted>"

#: Keys whose values are secrets wherever they appear in a config (case-insensitive,
#: substring): kubeconfig tokens, passwords, keys, Authorization headers.
_SENSITIVE_KEY_RULE = r"token|passw|secret|key|authorization|credential|cookie"
#: Secrets inside string values: an inline kubeconfig or an Authorization header.
_SENSITIVE_TEXT_RULE = (
    r"((?:token|password|passwd|secret|client-key-data|authorization)\s*[:=]\s*"
    r"(?:bearer\s+|basic\s+)?)[^\s,;\"']+"
    r"|(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*")
#: The two above, compiled on first use: the common call never needs them, and compiling
#: costs a plugin's start a fraction of a millisecond each.
_compiled: "list[re.Pattern[str]]" = []

#: Every word either pattern above starts from, and JSON's ``\u`` escape (a key spelt
#: ``"\u0074oken"`` decodes to ``token``), lower-case: bytes without any of these (ignoring
#: ASCII case) hold no secret, so the common call skips the walk over its config (most of a
#: record's cost).
_SECRET_HINTS = (b"token", b"passw", b"secret", b"key", b"authorization", b"credential",
                 b"cookie", b"bearer", b"\\u")


def _patterns() -> "list[re.Pattern[str]]":
    """[secret key, secret text], compiled once."""
    if not _compiled:
        _compiled[:] = [re.compile(_SENSITIVE_KEY_RULE, re.I),
                        re.compile(_SENSITIVE_TEXT_RULE, re.I)]
    return _compiled


def _secret_key(key: str) -> bool:
    return _patterns()[0].search(key) is not None


def _may_hold_secrets(data: bytes) -> bool:
    """Whether ``data`` holds any of :data:`_SECRET_HINTS`, ignoring ASCII case (what a
    case-insensitive bytes pattern ignores)."""
    lowered = data.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


_sink: "Callable[[dict[str, Any]], None] | None" = None
#: How deep in delegation the call running on this thread is.
_nesting = threading.local()


def redact(value: "Any") -> "Any":
    """``value`` (decoded JSON) with every secret replaced by :data:`REDACTED`."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _secret_key(k)
                    and value[k] not in (None, "", [], {}) else redact(value[k]))
                for k in value}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """``text`` with ``token: x``, ``password=x``, ``Bearer x`` values replaced."""
    if not text:  # nothing to compile the pattern for
        return text
    pattern = _patterns()[1]
    if not pattern.search(text):
        return text
    return pattern.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


def _cni_args(value: str) -> str:
    # CNI_ARGS is K=V;K=V: a value under a secret-looking key goes. Runtimes always set it
    # (pod name, namespace...): without a hint it is kept as it is, no pattern compiled.
    if not _may_hold_secrets(value.encode(errors="replace")):
        return value
    parts = []
    for item in value.split(";"):
        key, sep, _val = item.partition("=")
        parts.append(f"{key}={REDACTED}" if sep and _secret_key(key)
                     else redact_text(item))
    return ";".join(parts)


def _decode(data: bytes) -> "Any":
    try:
        return json.loads(data) if data else None
    except ValueError:
        return {"unparsed": f"{len(data)} bytes that are not JSON"}


def call_record(plugin_type: str, environ: "Mapping[str, str]", stdin: bytes, status: int,
                stdout: bytes, *, started: float, seconds: float, source: str,
                chain: str = "", depth: int = 0) -> "dict[str, Any]":
    """The trace record of one finished call (secrets redacted); ``started`` is wall time."""
    config = _decode(stdin)
    if _may_hold_secrets(stdin):
        config = redact(config)
    out = _decode(stdout)
    error = None
    if status != 0:
        if isinstance(out, dict) and "code" in out:
            error = {"code": out.get("code"), "msg": redact(out.get("msg", "")),
                     "details": redact(out.get("details", ""))}
        else:
            error = {"code": None, "msg": f"exit status {status}",
                     "details": redact_text(stdout[-500:].decode(errors="replace"))}
        out = None
    network = config.get("name") if isinstance(config, dict) else None
    return {
        "ts": round(started, 6), "ms": round(seconds * 1000, 3), "source": source,
        "pid": os.getpid(), "command": environ.get("CNI_COMMAND", ""),
        "container": environ.get("CNI_CONTAINERID", ""), "netns": environ.get("CNI_NETNS", ""),
        "ifname": environ.get("CNI_IFNAME", ""), "args": _cni_args(environ.get("CNI_ARGS", "")),
        "plugin": plugin_type, "network": network if isinstance(network, str) else "",
        "chain": chain, "depth": depth, "config": config, "status": status,
        "result": (redact(out) if _may_hold_secrets(stdout) else out) if status == 0
        else None, "error": error,
    }


def encode_record(record: "Mapping[str, Any]") -> bytes:
    """One JSON line; a record over :data:`MAX_RECORD` keeps its summary, not its bodies."""
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    if len(line) > MAX_RECORD:
        slim = {**record, "config": {"truncated": f"record of {len(line)} bytes"},
                "result": None}
        if slim.get("error"):
            slim["error"] = {**slim["error"], "details": str(slim["error"]["details"])[:2000]}
        line = json.dumps(slim, separators=(",", ":"), default=str) + "\n"
    return line.encode()


def trace_file() -> str | None:
    """The standalone trace file (``PYCNI_TRACE``), None when tracing is off."""
    path = os.environ.get("PYCNI_TRACE", DEFAULT_TRACE_FILE)
    return None if path in ("", "off", "0") else path


def _max_bytes() -> int:
    try:
        return max(MAX_RECORD, int(os.environ.get("PYCNI_TRACE_MAX_BYTES", DEFAULT_MAX_BYTES)))
    except ValueError:
        return DEFAULT_MAX_BYTES


def append_to_file(record: "Mapping[str, Any]", path: str | None = None,
                   max_bytes: int | None = None) -> None:
    """Append ``record`` to the trace file, rotating it first if the line would overflow it.

    Never raises: a call must not fail because its trace could not be written.
    """
    path = path or trace_file()
    if path is None:
        return
    limit = max_bytes or _max_bytes()
    line = encode_record(record)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            # os, not pathlib: pathlib is not loaded on the shim's path.
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)  # noqa: PTH103, PTH120
            fd = os.open(path, flags, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > limit:
                # rename() is atomic: a concurrent writer either appends to the old file
                # (now the backup, by at most one line) or opens the new one.
                os.replace(path, path + ".1")  # noqa: PTH105
                os.close(fd)
                fd = os.open(path, flags, 0o600)
            # One write() with O_APPEND: lines of concurrent callers do not interleave.
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        return


def set_trace_sink(sink: "Callable[[dict[str, Any]], None] | None"
                   ) -> "Callable[[dict[str, Any]], None] | None":
    """Send this process's records to ``sink`` (None: the trace file); the previous sink."""
    global _sink  # one sink per process, set by the agent
    previous, _sink = _sink, sink
    return previous


class trace_chain:  # noqa: N801 - used as a context manager, like contextlib's
    """Within ``with trace_chain(id, source)``, calls traced on this thread carry ``id``.

    For a caller that runs a chain's plugins in-process and knows they belong together
    (the runtime); exec'd plugins in other processes are correlated when read instead.
    """

    def __init__(self, chain: str, source: str = "runtime") -> None:
        self.chain = chain
        self.source = source
        self._saved: tuple[str, str] = ("", "")

    def __enter__(self) -> "trace_chain":
        self._saved = (getattr(_nesting, "chain", ""), getattr(_nesting, "source", ""))
        _nesting.chain, _nesting.source = self.chain, self.source
        return self

    def __exit__(self, *exc: object) -> None:
        _nesting.chain, _nesting.source = self._saved


def traced(run: "Callable[[], tuple[int, bytes]]", plugin_type: str,
           environ: "Mapping[str, str]", stdin: bytes, *, source: str = "",
           chain: str = "") -> "tuple[int, bytes]":
    """``run()`` (one call of ``plugin_type``), recorded to the current sink."""
    if environ.get("CNI_COMMAND") == "VERSION":
        return run()
    sink = _sink
    if sink is None and trace_file() is None:
        return run()
    wall, start = time.time(), time.perf_counter()
    chain = chain or getattr(_nesting, "chain", "")
    source = source or getattr(_nesting, "source", "")
    depth: int = getattr(_nesting, "depth", 0)
    _nesting.depth = depth + 1
    try:
        status, out = run()
    finally:
        _nesting.depth = depth
    seconds = time.perf_counter() - start
    try:
        record = call_record(plugin_type, environ, stdin, status, out, started=wall,
                             seconds=seconds, source=source or ("agent" if sink else "standalone"),
                             chain=chain, depth=depth)
        if sink is None:
            append_to_file(record)
        else:
            sink(record)
    except Exception:  # noqa: S110 - tracing never fails a call
        pass
    return status, out


# -- reading ---------------------------------------------------------------------------------

#: Seconds between two calls of one attachment and command that still makes them one chain.
CHAIN_GAP = 30.0


def read_trace_lines(lines: "Iterable[bytes]", origin: str
                     ) -> "tuple[list[dict[str, Any]], list[str]]":
    """The records in ``lines``, and a note per line that is not one (corrupt, truncated)."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            tail = "" if raw.endswith(b"\n") else " (truncated: no line end)"
            problems.append(f"{origin} line {number} is not a JSON record{tail}")
            continue
        if not is_trace_record(obj):
            problems.append(f"{origin} line {number} is not a trace record")
            continue
        records.append(obj)
    return records, problems


#: Keys whose values, when present, must be text.
_TEXT_KEYS = ("source", "command", "container", "netns", "ifname", "args", "plugin",
              "network", "chain")
#: Latest wall time a record may carry (year 5138): past it ``time.localtime`` overflows.
_MAX_TS = 1e11


def is_trace_record(obj: object) -> bool:
    """``obj`` has the shape of a record (a hand-edited or foreign line may not): the
    readers and ``pycni trace`` rely on these types, so a record that lacks them is
    skipped and named rather than failing the whole listing."""
    if not isinstance(obj, dict):
        return False
    ts, ms = obj.get("ts"), obj.get("ms", 0)
    if (isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts < _MAX_TS
            or isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms < _MAX_TS):
        return False
    depth, status = obj.get("depth", 0), obj.get("status", 0)
    if (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0
            or isinstance(status, bool) or not isinstance(status, int)):
        return False
    if not all(isinstance(obj.get(key, ""), str) for key in _TEXT_KEYS):
        return False
    return all(obj.get(key) is None or isinstance(obj[key], dict) for key in ("result", "error"))


def read_trace_file(path: str) -> "tuple[list[dict[str, Any]], list[str]]":
    """Records of the file and its backup, oldest first, and notes on unreadable lines."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for name in (path + ".1", path):
        try:
            with open(name, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"cannot read {name}: {exc.strerror}")
            continue
        found, bad = read_trace_lines(data.splitlines(keepends=True), name)
        records += found
        problems += bad
    return records, problems


def assign_chains(records: "Iterable[dict[str, Any]]") -> "list[dict[str, Any]]":
    """``records`` sorted by start, each with a ``chain`` id and its ``position`` in it.

    A runtime runs a network's plugins one after the other for one attachment (container,
    network, interface) and one command: calls with that key follow each other within
    :data:`CHAIN_GAP` seconds. A new chain starts at an ADD without ``prevResult`` (the
    first plugin of a list), after a failed ADD (the runtime stops there), or after a gap.
    Delegated calls (``depth`` > 0) join the chain of their caller without a position.
    """
    out = sorted(records, key=lambda r: float(r.get("ts", 0)))
    open_chains: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in out:
        key = (rec.get("container"), rec.get("network"), rec.get("ifname"), rec.get("command"))
        ts = float(rec.get("ts", 0))
        current = open_chains.get(key)
        if rec.get("depth"):
            rec.setdefault("position", None)
            if current is not None and not rec.get("chain"):
                rec["chain"] = current["id"]
            continue
        config = rec.get("config")
        first_add = (rec.get("command") == "ADD" and isinstance(config, dict)
                     and "prevResult" not in config)
        given = rec.get("chain") or ""
        joins = (current is not None
                 and (given == current["id"] if given else
                      not first_add and not current["failed_add"]
                      and ts - current["end"] <= CHAIN_GAP))
        if not joins:
            current = {"id": given or f"{key[0]}/{key[1]}/{key[2]}/{key[3]}@{ts:.3f}",
                       "n": 0, "end": ts, "failed_add": False}
            open_chains[key] = current
        assert current is not None  # noqa: S101 - set just above
        rec["chain"] = current["id"]
        rec["position"] = current["n"]
        current["n"] += 1
        current["end"] = ts + float(rec.get("ms", 0)) / 1000
        current["failed_add"] = rec.get("command") == "ADD" and rec.get("status") != 0
    return out
