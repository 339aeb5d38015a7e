"""The plugin side of CNI: invocation arguments, the Plugin base class, run_plugin, delegation."""

from ..spec import IFNAME_MAX
from ._args import (
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
from ._plugin import (
    Plugin,
    error_output,
    invoke,
    quiet_library_logs,
    run_plugin,
    run_plugin_bytes,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..spec import NAME_RE as CONTAINER_ID_RE


def __getattr__(name: str) -> object:
    # CONTAINER_ID_RE, the container ID rule, is the spec's name rule (spec.NAME_RE),
    # compiled on first use: a plugin process checks IDs without it.
    if name == "CONTAINER_ID_RE":
        from ..spec import NAME_RE

        return NAME_RE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    "quiet_library_logs",
    "run_plugin",
    "run_plugin_bytes",
    "validate_container_id",
    "validate_ifname",
]
