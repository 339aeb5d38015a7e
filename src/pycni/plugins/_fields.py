"""Typed reads of plugin config keys shared by every plugin; each failure names the key (code 7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..skel import CmdArgs
from ..spec import (
    LEGACY_ATTACHMENTS_KEY,
    VALID_ATTACHMENTS_KEY,
    InvalidNetworkConfig,
    Result,
    bool_field,
)

#: Linux interface names: at most IFNAMSIZ - 1 bytes.
IFNAME_MAX = 15
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
    """``name`` if the kernel would take it as an interface name (dev_valid_name): 1-15
    bytes, not ``.``/``..``, no ``/``, ``:``, whitespace or NUL; else code 7 naming
    ``field``."""
    size = len(name.encode(errors="surrogateescape"))
    bad = sorted({c for c in name if c in "/:\x00" or c.isspace()})
    if not name or size > IFNAME_MAX or name in (".", "..") or bad:
        reason = (f"{size} bytes, at most {IFNAME_MAX}" if size > IFNAME_MAX
                  else f"contains {bad!r}" if bad else "not an interface name")
        raise InvalidNetworkConfig(f'invalid "{field}" {name!r}: {reason} (interface names are '
                                   f"1-{IFNAME_MAX} bytes without '/', ':', whitespace or NUL)")
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


def valid_attachments(raw: Mapping[str, Any]) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments`` as (container ID, ifname) pairs.

    The key is required (the pre-1.1 ``cni.dev/attachments`` is read when it is the only one):
    reading a missing list as empty would release everything the plugin holds.
    """
    key = VALID_ATTACHMENTS_KEY if VALID_ATTACHMENTS_KEY in raw else LEGACY_ATTACHMENTS_KEY
    items = raw.get(key)
    if not isinstance(items, list):
        raise InvalidNetworkConfig(f'invalid "{VALID_ATTACHMENTS_KEY}": GC needs the list of '
                                   f"attachments still in use, got {items!r}")
    valid: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        cid = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise InvalidNetworkConfig(f'invalid "{VALID_ATTACHMENTS_KEY}[{i}]": expected '
                                       f'{{"containerID": ..., "ifname": ...}}, got {item!r}')
        valid.add((cid.strip(), ifname))
    return valid
