"""CNI spec versions: the ones we speak, ordering, and which commands each allows."""

from __future__ import annotations

import json

from ._errors import DecodingFailure, IncompatibleCNIVersion

#: Every spec version pycni reads and writes, oldest first.
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0",
)
CURRENT_VERSION = "1.1.0"


def parse_version(version: str) -> tuple[int, int, int]:
    """``"0.3.1"`` -> ``(0, 3, 1)``; anything else is a DecodingFailure naming the value."""
    parts = version.split(".") if isinstance(version, str) else []  # callers pass raw JSON
    # isascii: str.isdigit also accepts other scripts' digits ("\uff11"), which int() reads.
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) < 6 for p in parts):
        raise DecodingFailure(f"invalid version {version!r}: expected MAJOR.MINOR.PATCH")
    return int(parts[0]), int(parts[1]), int(parts[2])


def is_well_formed(version: object) -> bool:
    """True when ``version`` is a ``MAJOR.MINOR.PATCH`` string (supported or not)."""
    if not isinstance(version, str):
        return False
    try:
        parse_version(version)
    except DecodingFailure:
        return False
    return True


def version_at_least(version: str, minimum: str) -> bool:
    """True when ``version`` >= ``minimum`` (both MAJOR.MINOR.PATCH)."""
    return parse_version(version) >= parse_version(minimum)


def require_supported(version: str, supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> str:
    """Return ``version`` if it is in ``supported``, else raise IncompatibleCNIVersion."""
    if version not in supported:
        raise IncompatibleCNIVersion(
            "incompatible CNI versions",
            f"config is {json.dumps(version)}, plugin supports {json.dumps(list(supported))}",
        )
    return version


def highest_supported(
    candidates: list[str], supported: tuple[str, ...] = SUPPORTED_VERSIONS
) -> str | None:
    """The highest of ``candidates`` that we support (the ``cniVersions`` rule), or None."""
    ok = [v for v in candidates if v in supported]
    return max(ok, key=parse_version) if ok else None


#: Commands and the first spec version that has them.
COMMAND_MIN_VERSION: dict[str, str] = {
    "ADD": "0.1.0",
    "DEL": "0.1.0",
    "VERSION": "0.1.0",
    "CHECK": "0.4.0",
    "STATUS": "1.1.0",
    "GC": "1.1.0",
}
