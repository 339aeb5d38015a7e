"""Typed reads of config keys, shared by libcni, the plugins, IPAM, multus and the cluster
config: each failure is code 7 naming the key as the user wrote it (``what`` is the path
to the key's object, such as ``"ipam."`` or ``"runtimeConfig."``).

GC's list of valid attachments is read here too, for the plugins and the DHCP daemon (a
plugin process never loads the conflist module).

A JSON null reads as an absent key, as Go's encoding/json leaves a field at its default
when it decodes null into it (libcni's own string-or-boolean keys excepted).
"""

from __future__ import annotations

from ._errors import InvalidNetworkConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


#: The kernel's IFNAMSIZ minus its NUL: the longest interface name, in bytes.
IFNAME_MAX = 15


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be an interface name, or None if it can.

    The kernel's rule (``dev_valid_name``): 1-15 bytes, not ``.`` or ``..``, no ``/``, ``:``
    or whitespace. Control characters are refused too, though the kernel takes them: such a
    name cannot be typed or printed back to the user.
    """
    if not name:
        return "empty"
    size = len(name.encode(errors="surrogateescape"))
    if size > IFNAME_MAX:
        return f"{size} bytes, at most {IFNAME_MAX}"
    if name in (".", ".."):
        return "not an interface name"
    bad = sorted({c for c in name if c in "/:" or c.isspace() or not c.isprintable()})
    return f"contains {bad!r}" if bad else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bool_field(raw: dict[str, Any], key: str, default: bool = False, *,
               strings: bool = False, what: str = "") -> bool:
    """A JSON boolean (absent or null: ``default``); with ``strings``, also
    ``"true"``/``"false"``.

    Only libcni's own conflist keys (``disableCheck``, ``disableGC``,
    ``loadOnlyInlinedPlugins``) take strings, and they refuse null as libcni does; the
    reference plugins decode their keys with encoding/json into bool fields, which refuses
    a string.
    """
    value = raw.get(key)
    if value is None and (key not in raw or not strings):
        return default
    if isinstance(value, bool):
        return value
    if strings and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidNetworkConfig(f'invalid "{what}{key}": expected true or false, got '
                               f"{_shown(value)}")


def opt_bool(raw: dict[str, Any], key: str, *, what: str = "") -> bool | None:
    """A JSON boolean, or None when absent."""
    return None if raw.get(key) is None else bool_field(raw, key, what=what)


def int_field(raw: dict[str, Any], key: str, *, minimum: int = 0, maximum: int | None = None,
              what: str = "") -> int | None:
    """An integer in ``minimum``..``maximum``, or None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        expected = (f"an integer >= {minimum}" if maximum is None
                    else f"an integer between {minimum} and {maximum}")
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected {expected}, got '
                                   f"{_shown(value)}")
    return value


def str_field(raw: dict[str, Any], key: str, *, what: str = "") -> str | None:
    """A string, or None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a string, got '
                                   f"{_shown(value)}")
    return value


def str_default(raw: dict[str, Any], key: str, default: str, *, what: str = "") -> str:
    """A string; absent or empty: ``default``."""
    return str_field(raw, key, what=what) or default


def str_list(raw: dict[str, Any], key: str, *, what: str = "") -> list[str]:
    """A list of strings (absent: empty)."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a list of strings')
    return list(value)


def check_ifname(name: str, field: str) -> str:
    """``name`` if it can be an interface name (:func:`ifname_problem`); else code 7 naming
    ``field``."""
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


#: The GC stdin keys for the attachments the runtime still knows (SPEC.md 1.1 "GC"). libcni
#: sends the same list under both names because the spec's first text said the second one.
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"


def valid_attachments(raw: Mapping[str, Any]) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments`` as (container ID, ifname) pairs.

    The one reader of the key for the plugins and the DHCP daemon. The key is required (the
    pre-1.1 ``cni.dev/attachments`` is read when it is the only one): reading a missing list
    as empty would release everything the plugin holds.
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
