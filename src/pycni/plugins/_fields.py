"""Typed reads of plugin config keys shared by every plugin; each failure names the key (code 7)."""

from __future__ import annotations

from ..skel import CmdArgs
from ..spec import IFNAME_MAX, InvalidNetworkConfig, Result, bool_field, ifname_problem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: The largest MTU any Linux device accepts (IP_MAX_MTU); netlink carries it in 32 bits.
MTU_MAX = 65535
UINT32_MAX = 2**32 - 1


def int_field(raw: dict[str, Any], key: str, *, minimum: int = 0, maximum: int | None = None,
              what: str = "") -> int | None:
    """An integer in ``minimum``..``maximum`` or None when absent; ``what`` prefixes the key
    in errors."""
    value = raw.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        expected = (f"an integer >= {minimum}" if maximum is None
                    else f"an integer between {minimum} and {maximum}")
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected {expected}, got {shown}')
    return value


def mtu_field(raw: dict[str, Any], key: str = "mtu", *, what: str = "") -> int | None:
    """An MTU (0 means "leave the default"), at most :data:`MTU_MAX`."""
    return int_field(raw, key, maximum=MTU_MAX, what=what)


def str_field(raw: dict[str, Any], key: str, *, what: str = "") -> str | None:
    """A string, or None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a string, got {value!r}')
    return value


def check_ifname(name: str, field: str) -> str:
    """``name`` if it can be an interface name (:func:`pycni.spec.ifname_problem`); else
    code 7 naming ``field``."""
    problem = ifname_problem(name)
    if problem is not None:
        raise InvalidNetworkConfig(f'invalid "{field}" {name!r}: {problem} (interface names are '
                                   f"1-{IFNAME_MAX} bytes without '/', ':', whitespace or "
                                   "control characters)")
    return name


def ifname_field(raw: dict[str, Any], key: str, *, what: str = "") -> str | None:
    """An interface name (see :func:`check_ifname`); None when absent or empty."""
    value = str_field(raw, key, what=what)
    return check_ifname(value, f"{what}{key}") if value else None


def str_list(raw: dict[str, Any], key: str, *, what: str = "") -> list[str]:
    """A list of strings (absent: empty)."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a list of strings')
    return list(value)


def opt_bool(raw: dict[str, Any], key: str) -> bool | None:
    """A JSON boolean, or None when absent."""
    return None if raw.get(key) is None else bool_field(raw, key)


def require_prev_result(args: CmdArgs, message: str) -> Result:
    """The prevResult a chained plugin needs; InvalidNetworkConfig(``message``) without it."""
    prev = args.conf.prev_result
    if prev is None:
        raise InvalidNetworkConfig(message)
    return prev


# GC's attachment list is wire format, read in spec/ (the DHCP daemon reads it too); the
# plugins keep importing it from here.
def valid_attachments(raw: Mapping[str, Any]) -> set[tuple[str, str]]:
    """:func:`pycni.spec.valid_attachments`, loading the conflist module only for GC."""
    from ..spec import valid_attachments as read

    return read(raw)


__all__ = [
    "IFNAME_MAX",
    "MTU_MAX",
    "UINT32_MAX",
    "check_ifname",
    "ifname_field",
    "int_field",
    "mtu_field",
    "opt_bool",
    "require_prev_result",
    "str_field",
    "str_list",
    "valid_attachments",
]
