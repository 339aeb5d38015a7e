"""The plugin side of CNI: a Plugin base class and ``run_plugin`` to drive it.

``run_plugin`` takes its environment, stdin and stdout as arguments, so a plugin runs the
same way as an executable (``Plugin.main``) and in-process (the node agent, and a pycni
plugin delegating to pycni IPAM). It never lets a traceback reach stdout: every failure is an
error JSON with a code, and the exit status is 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from ..spec import (
    COMMAND_MIN_VERSION,
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    CNIError,
    IncompatibleCNIVersion,
    InternalError,
    IOFailure,
    NetworkConfig,
    Result,
    decode_json_object,
    parse_version,
    require_supported,
)
from ._args import CmdArgs, env_for, validate_container_id, validate_ifname

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from typing import Any, BinaryIO, ClassVar, NoReturn


class Plugin:
    """Base class of every pycni plugin.

    Subclasses set ``type_name`` (the CNI ``type``) and implement ``add`` and ``delete``;
    ``check``, ``status`` and ``gc`` default to "nothing to check / available / nothing
    held". ``delete`` must be idempotent: a missing netns, link or lease is success.
    """

    type_name: ClassVar[str] = ""
    supported_versions: ClassVar[tuple[str, ...]] = SUPPORTED_VERSIONS

    def add(self, args: CmdArgs) -> Result:
        """Attach the container; return the result (prevResult passed through for meta plugins)."""
        raise NotImplementedError

    def delete(self, args: CmdArgs) -> None:
        """Detach the container; "already gone" is success."""
        raise NotImplementedError

    def check(self, args: CmdArgs) -> None:  # noqa: ARG002 - the default checks nothing
        """Raise a CNIError if the attachment is not as ADD left it."""
        return

    def status(self, args: CmdArgs) -> None:  # noqa: ARG002 - the default is "available"
        """Raise PluginNotAvailable / LimitedConnectivity when ADD cannot work now."""
        return

    def gc(self, args: CmdArgs) -> None:  # noqa: ARG002 - the default holds nothing
        """Release what is held for attachments not in ``cni.dev/valid-attachments``."""
        return

    def version_info(self) -> dict[str, Any]:
        """The VERSION answer."""
        return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(self.supported_versions)}

    @classmethod
    def main(cls) -> NoReturn:
        """Entry point of the plugin executable."""
        import os

        quiet_library_logs()
        code = run_plugin(cls(), environ=os.environ, stdin=sys.stdin.buffer,
                          stdout=sys.stdout.buffer)
        sys.stdout.flush()
        raise SystemExit(code)


def quiet_library_logs() -> None:
    """In a plugin process (the executable, a shim's standalone call): pyroute2 logs one
    line per record to stderr, never a traceback's text; set up when ``logging`` is first
    imported, so a call that logs nothing does not load it."""
    if "logging" in sys.modules:
        _quiet_library_logs()
    elif not any(isinstance(finder, _QuietOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietOnImport())


def _last_line(record: logging.LogRecord) -> str:
    """One line per record: the last line of the message, no traceback or stack."""
    lines = [line for line in record.getMessage().splitlines() if line.strip()]
    return f"{record.name}: {record.levelname.lower()}: {lines[-1] if lines else ''}"


def _quiet_library_logs() -> None:
    """Give pyroute2's logger a one-line handler in a plugin process.

    pyroute2 logs some failures (a value that does not fit its netlink field) as the text
    of a traceback and of the stack; without a handler, Python's last-resort handler copies
    that to stderr. The failure itself reaches the user as the plugin's CNI error.
    """
    import logging

    class LastLine(logging.Formatter):
        format = staticmethod(_last_line)

    lib = logging.getLogger("pyroute2")
    if not lib.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LastLine())
        handler.setLevel(logging.WARNING)
        lib.addHandler(handler)
        lib.propagate = False


class _QuietOnImport:
    """A ``sys.meta_path`` entry: when the plugin process first imports ``logging`` (pyroute2
    does, as does anything that logs), pyroute2's logger gets its one-line handler right
    after :func:`_quiet_library_logs`.

    Most calls never load pyroute2 (host has its own rtnetlink codec) nor anything else
    that logs, so they do not pay for ``logging`` (~3 ms of start-up).
    """

    done = False

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: object = None) -> ModuleSpec | None:  # noqa: ARG002 - the protocol
        """``logging``'s own spec, its loader wrapped; None for every other module."""
        if self.done or name != "logging":
            return None
        self.done = True
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenQuiet(spec.loader)  # type: ignore[assignment]
        return spec


class _ThenQuiet:
    """The loader of ``logging``, then :func:`_quiet_library_logs`."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> Any:
        """The wrapped loader's."""
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        """Run ``logging``, then set pyroute2's logger up."""
        self.loader.exec_module(module)
        _quiet_library_logs()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # get_source and the rest, for tracebacks


def invoke(
    plugin: Plugin, environ: Mapping[str, str], stdin: bytes
) -> Result | dict[str, Any] | None:
    """Run one command against ``plugin`` in-process; CNIError on failure.

    Returns the ADD result, the VERSION object, or None for commands without output.
    The checks run in libcni's order, so the same bad call fails with the same code:
    the environment, then the container ID and interface name, then the config (name,
    cniVersion), then whether the config's version allows the command.
    """
    command = environ.get("CNI_COMMAND", "")
    env = env_for(command, environ)
    if command == "VERSION":
        return plugin.version_info()
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        validate_container_id(container_id)
        validate_ifname(ifname)
    conf = NetworkConfig.parse(stdin)
    minimum = COMMAND_MIN_VERSION[command]
    if parse_version(conf.cni_version) < parse_version(minimum):
        raise IncompatibleCNIVersion(
            f"config version does not allow {command}",
            f"{command} needs cniVersion >= {minimum}, config has {conf.cni_version}",
        )
    require_supported(conf.cni_version, plugin.supported_versions)
    args = CmdArgs(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=env.get("CNI_ARGS", ""),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        stdin=stdin,
        conf=conf,
    )
    if command == "ADD":
        result = plugin.add(args)
        if not isinstance(result, Result):
            raise TypeError(f"add() returned {type(result).__name__}, not a Result")
        result.cni_version = conf.cni_version
        return result
    if command == "DEL":
        plugin.delete(args)
    elif command == "CHECK":
        plugin.check(args)
    elif command == "STATUS":
        plugin.status(args)
    else:
        plugin.gc(args)
    return None


def _conf_version(stdin: bytes) -> str:
    """The config's cniVersion if it is one we speak, for the error JSON; else the current one."""
    try:
        version = decode_json_object(stdin, "network config").get("cniVersion")
    except CNIError:
        return CURRENT_VERSION
    return version if version in SUPPORTED_VERSIONS else CURRENT_VERSION


def error_output(err: CNIError, stdin: bytes = b"") -> bytes:
    """``err`` as a plugin prints it on stdout: its JSON in the cniVersion of the config in
    ``stdin`` when that is one we speak, else in the current version."""
    return _dump(err.to_json(_conf_version(stdin)))


def _crash_report(plugin: Plugin, exc: BaseException) -> InternalError:
    """The error JSON for an exception nobody translated; the traceback goes to the log."""
    import logging
    import traceback

    name = plugin.type_name or type(plugin).__name__
    logging.getLogger("pycni.skel").error(
        "plugin %s crashed:\n%s", name,
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    text = str(exc) or repr(exc)
    return InternalError(f"{name}: unexpected {type(exc).__name__}: {text}",
                         "this is a pycni bug; the traceback is on stderr")


def run_plugin_bytes(plugin: Plugin, environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
    """Run one command; return (exit status, stdout bytes) exactly as the executable would.

    Never raises for anything a plugin does: a CNIError becomes its error JSON, any other
    exception (SystemExit included: it would skip the error JSON) an InternalError (999)
    naming the exception; the exit status is then 1 and stdout is always JSON.
    """
    # One netlink socket per namespace for the whole call instead of one per kernel request.
    from ..host import reuse_sockets

    try:
        with reuse_sockets():
            out = invoke(plugin, environ, stdin)
        if out is None:
            return 0, b""
        return 0, _dump(out.to_json() if isinstance(out, Result) else out)
    except CNIError as exc:
        err: CNIError = exc
    except (Exception, SystemExit) as exc:  # the protocol wants JSON, never a traceback
        err = _crash_report(plugin, exc)
    return 1, error_output(err, stdin)


def run_plugin(
    plugin: Plugin,
    *,
    environ: Mapping[str, str],
    stdin: BinaryIO | bytes,
    stdout: BinaryIO,
) -> int:
    """Drive ``plugin`` with injected I/O; returns the exit status (0 or 1).

    VERSION does not read stdin (as libcni's skel): a plugin probed from a terminal must
    not wait for end-of-file.
    """
    if isinstance(stdin, bytes):
        data = stdin
    elif environ.get("CNI_COMMAND") == "VERSION":
        data = b""
    else:
        try:
            data = stdin.read()
        except OSError as exc:
            err = IOFailure(f"error reading from stdin: {exc}")
            stdout.write(error_output(err))
            return 1
    status, out = run_plugin_bytes(plugin, environ, data)
    if out:
        stdout.write(out)
    return status


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=1).encode() + b"\n"
