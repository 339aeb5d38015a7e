"""CNI spec versions: the ones we speak, ordering, and which commands each allows."""

from __future__ import annotations

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
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 6 for p in parts):
        raise DecodingFailure(f'invalid version "{version}": expected MAJOR.MINOR.PATCH')
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    """True when ``version`` >= ``minimum`` (both MAJOR.MINOR.PATCH)."""
    return parse_version(version) >= parse_version(minimum)


def require_supported(version: str, supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> str:
    """Return ``version`` if it is in ``supported``, else raise IncompatibleCNIVersion."""
    if version not in supported:
        raise IncompatibleCNIVersion(
            "incompatible CNI versions",
            f'config is "{version}", plugin supports {list(supported)}',
        )
    return version


def highest_supported(candidates: list[str], supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> (
    str | None
):
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
