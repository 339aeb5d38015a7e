"""The plugin side of CNI: invocation arguments, the Plugin base class, run_plugin, delegation."""

from ..spec import IFNAME_MAX
from ._args import (
    CONTAINER_ID_RE,
    CmdArgs,
    parse_cni_args,
    validate_container_id,
    validate_ifname,
)
from ._delegate import (
    delegate,
    delegate_add,
    delegate_check,
    delegate_del,
    delegate_gc,
    delegate_status,
)
from ._plugin import Plugin, error_output, invoke, run_plugin, run_plugin_bytes

__all__ = [
    "CONTAINER_ID_RE",
    "IFNAME_MAX",
    "CmdArgs",
    "Plugin",
    "delegate",
    "delegate_add",
    "delegate_check",
    "delegate_del",
    "delegate_gc",
    "delegate_status",
    "error_output",
    "invoke",
    "parse_cni_args",
    "run_plugin",
    "run_plugin_bytes",
    "validate_container_id",
    "validate_ifname",
]
