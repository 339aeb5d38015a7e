"""The ``routes`` field the IPAM plugins share, validated with the field's name in errors."""

from __future__ import annotations

from ..spec import DecodingFailure, InvalidNetworkConfig, Route

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def parse_routes(value: Any, field: str) -> tuple[Route, ...]:
    """A ``routes`` list (``[{"dst": CIDR, "gw": IP}, ...]``); errors name the bad entry."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidNetworkConfig(f'invalid "{field}": expected a list of routes')
    routes: list[Route] = []
    for i, item in enumerate(value):
        try:
            routes.append(Route.from_json(item))
        except DecodingFailure as exc:
            raise InvalidNetworkConfig(f'invalid "{field}[{i}]": {exc.msg}') from exc
    return tuple(routes)
