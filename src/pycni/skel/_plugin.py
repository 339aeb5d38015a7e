"""The plugin side of CNI: a Plugin base class and ``run_plugin`` to drive it.

``run_plugin`` takes its environment, stdin and stdout as arguments, so a plugin runs the
same way as an executable (``Plugin.main``) and in-process (the node agent, and a pycni
plugin delegating to pycni IPAM). It never lets a traceback reach stdout: every failure is an
error JSON with a code, and the exit status is 1.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar, NoReturn

from ..spec import (
    COMMAND_MIN_VERSION,
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    CNIError,
    IncompatibleCNIVersion,
    InternalError,
    NetworkConfig,
    Result,
    parse_version,
    require_supported,
)
from ._args import CmdArgs, env_for, validate_container_id, validate_ifname

log = logging.getLogger("pycni.skel")


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

        code = run_plugin(cls(), environ=os.environ, stdin=sys.stdin.buffer,
                          stdout=sys.stdout.buffer)
        sys.stdout.flush()
        raise SystemExit(code)


def invoke(plugin: Plugin, environ: Mapping[str, str], stdin: bytes) -> Result | dict[str, Any] | None:
    """Run one command against ``plugin`` in-process; CNIError on failure.

    Returns the ADD result, the VERSION object, or None for commands without output.
    """
    command = environ.get("CNI_COMMAND", "")
    env = env_for(command, environ)
    if command == "VERSION":
        return plugin.version_info()
    conf = NetworkConfig.parse(stdin)
    require_supported(conf.cni_version, plugin.supported_versions)
    minimum = COMMAND_MIN_VERSION[command]
    if parse_version(conf.cni_version) < parse_version(minimum):
        raise IncompatibleCNIVersion(
            f"config version does not allow {command}",
            f"{command} needs cniVersion >= {minimum}, config has {conf.cni_version}",
        )
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        validate_container_id(container_id)
        validate_ifname(ifname)
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
    """The config's cniVersion if it can be read, for the error JSON; else the current one."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return CURRENT_VERSION
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else CURRENT_VERSION


def run_plugin_bytes(plugin: Plugin, environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
    """Run one command; return (exit status, stdout bytes) exactly as the executable would."""
    try:
        out = invoke(plugin, environ, stdin)
    except CNIError as exc:
        return 1, _dump(exc.to_json(_conf_version(stdin)))
    except Exception as exc:  # noqa: BLE001 - the protocol demands JSON, never a traceback
        log.error("plugin %s crashed:\n%s", plugin.type_name, traceback.format_exc())
        err = InternalError(f"{plugin.type_name or 'plugin'}: unexpected {type(exc).__name__}: {exc}",
                            "this is a pycni bug; the traceback is on stderr")
        return 1, _dump(err.to_json(_conf_version(stdin)))
    if out is None:
        return 0, b""
    if isinstance(out, Result):
        try:
            return 0, _dump(out.to_json())
        except CNIError as exc:
            return 1, _dump(exc.to_json(_conf_version(stdin)))
    return 0, _dump(out)


def run_plugin(
    plugin: Plugin,
    *,
    environ: Mapping[str, str],
    stdin: BinaryIO | bytes,
    stdout: BinaryIO,
) -> int:
    """Drive ``plugin`` with injected I/O; returns the exit status (0 or 1)."""
    data = stdin if isinstance(stdin, bytes) else stdin.read()
    status, out = run_plugin_bytes(plugin, environ, data)
    if out:
        stdout.write(out)
    return status


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=1).encode() + b"\n"
