"""Strict JSON parsing: what Go's encoding/json would accept, nothing more.

Python's ``json`` also takes ``NaN``, ``Infinity`` and ``-Infinity`` literals, and numbers
like ``1e999`` that it turns into an infinite float; a non-finite float would only fail
later, far from the input. This sits below every package (the store reads records with it,
spec wraps it into its DecodingFailure), so it raises plain ValueError.
"""

from __future__ import annotations

import json
import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | str) -> Any:
    """One JSON value from ``data``; ValueError for anything Go's decoder refuses (also
    invalid UTF-8, and nesting deep enough to exhaust Python's recursion limit)."""
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:  # json recurses per nesting level: "[[[[..." exhausts it
        raise ValueError("nested too deeply") from exc
