"""Plugin config reads beyond spec's typed fields and GC's valid attachments (both
re-exported here for the plugins): MTU, the previous result. Each failure names the key
(code 7)."""

from __future__ import annotations

from ..skel import CmdArgs
from ..spec import (
    InvalidNetworkConfig,
    Result,
    check_ifname,
    ifname_field,
    int_field,
    opt_bool,
    str_default,
    str_field,
    str_list,
    valid_attachments,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The largest MTU any Linux device accepts (IP_MAX_MTU); netlink carries it in 32 bits.
MTU_MAX = 65535
UINT32_MAX = 2**32 - 1


def mtu_field(raw: dict[str, Any], key: str = "mtu", *, what: str = "") -> int | None:
    """An MTU (0 means "leave the default"), at most :data:`MTU_MAX`."""
    return int_field(raw, key, maximum=MTU_MAX, what=what)


def require_prev_result(args: CmdArgs, message: str) -> Result:
    """The prevResult a chained plugin needs; InvalidNetworkConfig(``message``) without it."""
    prev = args.conf.prev_result
    if prev is None:
        raise InvalidNetworkConfig(message)
    return prev


__all__ = [
    "MTU_MAX",
    "UINT32_MAX",
    "check_ifname",
    "ifname_field",
    "int_field",
    "mtu_field",
    "opt_bool",
    "require_prev_result",
    "str_default",
    "str_field",
    "str_list",
    "valid_attachments",
]
