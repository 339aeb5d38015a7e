"""Typed reads of plugin config keys shared by every plugin; each failure names the key (code 7)."""

from __future__ import annotations

from typing import Any

from ..skel import CmdArgs
from ..spec import InvalidNetworkConfig, Result, bool_field, valid_attachments


def int_field(raw: dict[str, Any], key: str, *, minimum: int = 0, what: str = "") -> int | None:
    """An integer >= ``minimum`` or None when absent; ``what`` prefixes the key in errors."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected an integer >= {minimum}, '
                                   f"got {value!r}")
    return value


def str_field(raw: dict[str, Any], key: str, *, what: str = "") -> str | None:
    """A string, or None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a string, got {value!r}')
    return value


def str_list(raw: dict[str, Any], key: str, *, what: str = "") -> list[str]:
    """A list of strings (absent: empty)."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidNetworkConfig(f'invalid "{what}{key}": expected a list of strings')
    return list(value)


def opt_bool(raw: dict[str, Any], key: str) -> bool | None:
    """A bool (also ``"true"``/``"false"``), or None when absent."""
    return None if raw.get(key) is None else bool_field(raw, key)


def require_prev_result(args: CmdArgs, message: str) -> Result:
    """The prevResult a chained plugin needs; InvalidNetworkConfig(``message``) without it."""
    prev = args.conf.prev_result
    if prev is None:
        raise InvalidNetworkConfig(message)
    return prev


# GC's attachment list is wire format, read in spec/ (the DHCP daemon reads it too); the
# plugins keep importing it from here.
__all__ = ["int_field", "opt_bool", "require_prev_result", "str_field", "str_list",
           "valid_attachments"]
