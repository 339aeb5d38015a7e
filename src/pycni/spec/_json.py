"""The one JSON decoder for everything pycni reads from outside (stdin, files, sockets, env).

Python's ``json`` accepts more than JSON: ``NaN``, ``Infinity`` and ``-Infinity`` literals,
and numbers like ``1e999`` that it turns into an infinite float. Go's encoding/json refuses
all of them, and a non-finite float would only fail later, far from the input, as a crash.
"""

from __future__ import annotations

from .._json import loads
from ._errors import DecodingFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def decode_json(data: bytes | str, what: str) -> Any:
    """Decode one JSON value or raise DecodingFailure (code 6) naming ``what``.

    Refused like any malformed input: ``NaN``/``Infinity``, numbers beyond float range,
    invalid UTF-8 and nesting deep enough to exhaust Python's recursion limit.
    """
    try:
        return loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DecodingFailure(f"failed to decode {what}: {str(exc)[:200]}") from exc


def decode_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """:func:`decode_json` for input that must be one JSON object."""
    obj = decode_json(data, what)
    if not isinstance(obj, dict):
        raise DecodingFailure(f"failed to decode {what}: expected a JSON object, got "
                              f"{type(obj).__name__}")
    return obj
