"""Delegating from one plugin to another (a main plugin calling its IPAM plugin).

The work is :func:`pycni.invoke.delegate`: the delegate runs in-process when pycni has the
type and the executable in CNI_PATH is one ``pycni install`` wrote (or there is none),
otherwise it is exec'd. These functions give it the call's CNI_* environment.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import invoke as _invoke
from ..spec import Result
from ._args import CmdArgs


def delegate(
    command: str,
    plugin_type: str,
    stdin: bytes,
    args: CmdArgs,
    env_override: Mapping[str, str] | None = None,
) -> bytes:
    """Run ``plugin_type`` for ``command``; return its stdout or raise its CNIError.

    The delegate gets this call's CNI_* variables (and ``env_override``), with
    CNI_COMMAND set to ``command``.
    """
    env = {**args.env(command), **(env_override or {})}
    return _invoke.delegate(command, plugin_type, stdin, env)


def delegate_add(plugin_type: str, stdin: bytes, args: CmdArgs) -> Result:
    """ADD through ``plugin_type`` (usually ``ipam.type``); the result as our model.

    A delegate that prints something other than a result is a DecodingFailure naming it.
    """
    return _invoke.delegate_add(plugin_type, stdin, args.env("ADD"))


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
