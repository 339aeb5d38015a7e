"""nftables through its JSON interface: libnftables in-process, ``nft -j -f -`` as fallback.

libnftables (``libnftables.so.1``, Debian's ``libnftables1``) takes a JSON batch and runs it
as one netlink transaction, without a process per call. Its netlink socket belongs to the
namespace of the thread that runs the command, so a context is made and freed per call in
the calling thread: callers inside ``NetNS.call`` act on that namespace. When the library
cannot be loaded, the same JSON goes to the ``nft`` executable, which inherits the calling
thread's namespace as any child process does.

A batch is ``[{"add": {...}}, {"delete": {...}}, ...]`` (the objects of the ``"nftables"``
array of libnftables-json(5)); the answer is the output array, without the metainfo object.

Writes that need no answer (:func:`nft_write`, :func:`nft_text`) from concurrent threads in
one namespace are merged into one transaction (:mod:`pycni.host._burst`): each commit
costs a netlink round trip and, when it deletes anything, an RCU grace period in the
kernel. Listings asked for with :func:`nft_list` are shared the same way: with a hundred
pods, each of a hundred calls listing a hundred rules, one by one under the library lock,
took longer than all the writes.
"""

from __future__ import annotations

import ctypes
import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

from ..._record import FrozenRecord, set_fields
from ...spec import KernelError
from .._burst import BurstCounters, Combiner, netns_key

# libnftables output flags (nftables/libnftables.h).
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4

# libnftables keeps some process-wide state (symbol tables, the JSON parser's caches);
# serialising calls costs nothing next to the netlink round trip.
_LOCK = threading.Lock()


class NftError(KernelError):
    """An nftables command failed; ``not_found`` tells ENOENT (a missing table/chain/rule)."""

    def __init__(self, msg: str, details: str = "", *, not_found: bool = False) -> None:
        super().__init__(msg, details)
        self.not_found = not_found


@functools.cache
def _library() -> Any:
    """The loaded libnftables with its prototypes, or None if it is not installed."""
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    ptr = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_new.restype = ptr
    lib.nft_ctx_free.argtypes = [ptr]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ptr, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ptr]
        getattr(lib, name).restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ptr]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_run_cmd_from_buffer.argtypes = [ptr, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


def available() -> bool:
    """True if nftables can be driven here (the library or the ``nft`` executable)."""
    return _library() is not None or shutil.which("nft") is not None


def _run_library(lib: Any, payload: bytes) -> tuple[bool, str, str]:
    with _LOCK:
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise KernelError("libnftables: nft_ctx_new failed")
        try:
            # With the JSON output flag set, libnftables also parses its input as JSON.
            lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON | _OUTPUT_HANDLE)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, payload)
            out = lib.nft_ctx_get_output_buffer(ctx) or b""
            err = lib.nft_ctx_get_error_buffer(ctx) or b""
        finally:
            lib.nft_ctx_free(ctx)
    return rc == 0, out.decode(errors="replace"), err.decode(errors="replace")


def _run_executable(payload: bytes, *, json_input: bool = True) -> tuple[bool, str, str]:
    exe = shutil.which("nft")
    if exe is None:
        raise KernelError("nftables is not available: neither libnftables.so.1 nor nft found")
    # ``nft -j -f -`` silently ignores input that is not JSON (nftables 1.0.6).
    argv = [exe, "-j", "-f", "-"] if json_input else [exe, "-f", "-"]
    try:
        proc = subprocess.run(argv, input=payload, capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"running {exe} failed: {exc}") from exc
    return (proc.returncode == 0, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"))


def _run(payload: bytes, what: str, *, json_input: bool, use_library: bool | None) -> str:
    """Run one batch through the library (or ``nft``); its output, or NftError."""
    lib = _library() if use_library is not False else None
    if use_library and lib is None:
        raise KernelError("libnftables.so.1 is not installed")
    ok, out, err = (_run_library(lib, payload) if lib is not None
                    else _run_executable(payload, json_input=json_input))
    if not ok:
        msg = " ".join(line.strip() for line in err.splitlines() if line.strip())
        raise NftError(f"{what} failed", msg or "nftables gave no reason",
                       not_found="No such file or directory" in err)
    return out


def nft_json(commands: Sequence[dict[str, Any]], *, what: str = "nftables batch",
             use_library: bool | None = None) -> list[dict[str, Any]]:
    """Run ``commands`` as one atomic batch in this thread's netns; return the output objects.

    ``what`` names the objects for the error message. ``use_library`` forces the library
    (True) or the executable (False); by default the library is used when it loads.
    Raises :class:`NftError` (``not_found`` set for ENOENT) when nftables refuses the batch.
    """
    payload = json.dumps({"nftables": list(commands)}).encode()
    return _items(_run(payload, what, json_input=True, use_library=use_library), what)


def _items(out: str, what: str) -> list[dict[str, Any]]:
    """The objects of a JSON answer, without the metainfo object."""
    if not out.strip():
        return []
    try:
        items = json.loads(out)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"{what}: unreadable nftables output", out[:200]) from exc
    return [item for item in items if "metainfo" not in item]


class _Write(FrozenRecord):
    """One caller's write: JSON ``commands`` or an nft(8) ``script``, by ``json_input``."""

    __slots__ = ("commands", "json_input", "script", "what")
    json_input: bool
    commands: Sequence[dict[str, Any]]
    script: str
    what: str

    def __init__(self, json_input: bool, commands: Sequence[dict[str, Any]], script: str,
                 what: str) -> None:
        set_fields(self, json_input, commands, script, what)


def _payload(writes: Sequence[_Write]) -> bytes:
    # One key holds writes of one kind (its second part is "json" or "text").
    if writes[0].json_input:
        return json.dumps({"nftables": [c for w in writes for c in w.commands]}).encode()
    return "\n".join(w.script for w in writes).encode()


def _write_alone(write: _Write) -> None:
    _run(_payload([write]), write.what, json_input=write.json_input, use_library=None)


def _write_batch(writes: Sequence[_Write]) -> list[BaseException | None]:
    _run(_payload(writes), "merged nftables batch", json_input=writes[0].json_input,
         use_library=None)
    return [None] * len(writes)


_COMBINER: Combiner[_Write, None] = Combiner(_write_alone, _write_batch)


def _list_alone(payload: bytes) -> str:
    return _run(payload, "listing nftables objects", json_input=True, use_library=None)


def _list_batch(payloads: Sequence[bytes]) -> list[str | BaseException]:
    # Only identical listings share a key, so one run answers them all, also with its error
    # (a missing table is an answer: listing again one by one would only repeat it).
    answer: str | BaseException
    try:
        answer = _list_alone(payloads[0])
    except NftError as exc:
        answer = exc
    return [answer] * len(payloads)


_READS: Combiner[bytes, str] = Combiner(_list_alone, _list_batch)


def nft_list(commands: Sequence[dict[str, Any]], *, what: str) -> list[dict[str, Any]]:
    """:func:`nft_json` for listings: the same listing asked for by other threads of this
    netns while one runs is made once for all of them (after all of them asked).

    Raises :class:`NftError` (``not_found`` for a missing table or chain), naming ``what``.
    """
    payload = json.dumps({"nftables": list(commands)}).encode()
    try:
        out = _READS.run((netns_key(), payload), payload)
    except NftError as exc:
        raise NftError(f"{what} failed", exc.details, not_found=exc.not_found) from exc
    return _items(out, what)


def nft_write(commands: Sequence[dict[str, Any]], *, what: str = "nftables batch") -> None:
    """Run ``commands`` as :func:`nft_json` does, for a batch whose output is not needed.

    Such writes from other threads in this netns that arrive while one runs are merged into
    one transaction; if that is refused, each is redone alone, so each caller gets its own
    :class:`NftError`.
    """
    _COMBINER.run((netns_key(), "json"), _Write(True, list(commands), "", what))


def nft_text(script: str, *, what: str = "nftables script") -> None:
    """Run ``script`` (nft(8) syntax, one command per line) as one atomic batch in this netns.

    For rule fragments that only exist as nft(8) text, such as the portmap plugin's
    ``conditionsV4``. libnftables parses input that is not JSON with the nft(8) grammar, so
    the library runner serves as is. Raises :class:`NftError` as :func:`nft_json` does.
    Merged with concurrent scripts as :func:`nft_write` is (``script`` ends in a newline).
    """
    _COMBINER.run((netns_key(), "text"), _Write(False, [], script, what))


def nft_counters() -> BurstCounters:
    """How this process's nftables writes were merged (see :class:`BurstCounters`)."""
    return _COMBINER.counters()


__all__ = ["NftError", "available", "nft_counters", "nft_json", "nft_list", "nft_text",
           "nft_write"]
