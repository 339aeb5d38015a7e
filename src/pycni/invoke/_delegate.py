"""Delegating from one plugin to another (a main plugin calling its IPAM plugin).

The delegate is found in CNI_PATH like libcni's ``invoke.DelegateAdd`` does. When the
executable found is one that ``pycni install`` wrote, or none is found but pycni has the type,
the plugin runs in-process: the same code and the same on-disk state, without paying a
Python start-up per call.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..spec import DecodingFailure, Result, decode_json
from ._locate import locate_plugin, run_located


def delegate(command: str, plugin_type: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
    """Run ``plugin_type`` for ``command`` with the CNI_* variables ``env`` (its search path
    is ``env["CNI_PATH"]``); its stdout, or the CNIError it reported."""
    env = {**env, "CNI_COMMAND": command}
    paths = [p for p in env.get("CNI_PATH", "").split(":") if p]
    return run_located(locate_plugin(plugin_type, paths, in_process="prefer"), env, stdin)


def delegate_add(plugin_type: str, stdin: bytes, env: Mapping[str, str]) -> Result:
    """ADD through ``plugin_type`` (usually ``ipam.type``); the result as our model.

    A delegate that prints something other than a result is a DecodingFailure naming it.
    """
    out = delegate("ADD", plugin_type, stdin, env)
    obj = decode_json(out, f'the result of plugin "{plugin_type}"')
    try:
        return Result.from_json(obj)
    except DecodingFailure as exc:
        raise DecodingFailure(f'plugin "{plugin_type}" printed an invalid result: {exc.msg}',
                              exc.details) from exc
