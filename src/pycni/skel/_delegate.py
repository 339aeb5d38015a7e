"""Delegating from one plugin to another (a main plugin calling its IPAM plugin).

The delegate is found in CNI_PATH like libcni's ``invoke.DelegateAdd`` does. When the
executable found is one that ``pycni install`` wrote, or none is found but pycni has the type,
the plugin runs in-process: the same code and the same on-disk state, without paying a
Python start-up per call.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..spec import CNIError, DecodingFailure, PluginNotFound, Result, decode_json
from ._args import CmdArgs

#: The first line of every executable ``pycni install`` writes carries this marker.
PYCNI_MARKER = b"# pycni-plugin:"


def _is_pycni_executable(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return PYCNI_MARKER in head


def delegate(
    command: str,
    plugin_type: str,
    stdin: bytes,
    args: CmdArgs,
    env_override: Mapping[str, str] | None = None,
) -> bytes:
    """Run ``plugin_type`` for ``command``; return its stdout or raise its CNIError."""
    from ..plugins import load_plugin
    from ..runtime._exec import exec_plugin, find_plugin
    from ._plugin import run_plugin_bytes

    env = args.env(command)
    if env_override:
        env.update(env_override)
    try:
        path: str | None = find_plugin(plugin_type, args.path)
    except PluginNotFound:
        path = None
    cls = load_plugin(plugin_type)
    if cls is not None and (path is None or _is_pycni_executable(path)):
        status, out = run_plugin_bytes(cls(), env, stdin)
        if status != 0:
            raise CNIError.from_json(decode_json(out, f'error from plugin "{plugin_type}"'))
        return out
    if path is None:
        raise PluginNotFound(f'failed to find plugin "{plugin_type}" in path {list(args.path)}')
    return exec_plugin(path, env, stdin)


def delegate_add(plugin_type: str, stdin: bytes, args: CmdArgs) -> Result:
    """ADD through ``plugin_type`` (usually ``ipam.type``); the result as our model.

    A delegate that prints something other than a result is a DecodingFailure naming it.
    """
    out = delegate("ADD", plugin_type, stdin, args)
    obj = decode_json(out, f'the result of plugin "{plugin_type}"')
    try:
        return Result.from_json(obj)
    except DecodingFailure as exc:
        raise DecodingFailure(f'plugin "{plugin_type}" printed an invalid result: {exc.msg}',
                              exc.details) from exc


def delegate_del(plugin_type: str, stdin: bytes, args: CmdArgs) -> None:
    """DEL through ``plugin_type``."""
    delegate("DEL", plugin_type, stdin, args)


def delegate_check(plugin_type: str, stdin: bytes, args: CmdArgs) -> None:
    """CHECK through ``plugin_type``."""
    delegate("CHECK", plugin_type, stdin, args)


def delegate_status(plugin_type: str, stdin: bytes, args: CmdArgs) -> None:
    """STATUS through ``plugin_type``: the spec wants a plugin to ask its IPAM too."""
    delegate("STATUS", plugin_type, stdin, args)


def delegate_gc(plugin_type: str, stdin: bytes, args: CmdArgs) -> None:
    """GC through ``plugin_type`` (stdin carries ``cni.dev/valid-attachments``)."""
    delegate("GC", plugin_type, stdin, args)
