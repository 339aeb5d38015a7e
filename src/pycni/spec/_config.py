"""Network configuration as a plugin receives it (one plugin's object on stdin).

The conflist (what runtimes read from disk) lives in ``_conflist.py``; this module is the
per-plugin view: the common keys every plugin reads, and the raw object so a plugin's own
config class can read its keys. Unknown keys are kept in ``raw`` unchanged.
"""

from __future__ import annotations

from .._record import FrozenRecord, set_fields
from ._errors import DecodingFailure, InvalidNetworkConfig
from ._json import decode_json_object
from ._result import DNS, Result
from ._version import SUPPORTED_VERSIONS, require_supported

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any

    #: The spec's network name rule as a pattern (compiled on first use; :func:`is_valid_name`
    #: is the same check).
    NAME_RE: re.Pattern[str]

#: The spec's network name rule (also the container ID rule). ``\Z``, not ``$``: Python's
#: ``$`` also matches before a trailing newline, Go's does not.
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z"
_NAME_FIRST = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")


def is_valid_name(text: str) -> bool:
    """Whether ``text`` follows the spec's name rule (:data:`NAME_PATTERN`): an ASCII letter
    or digit, then ASCII letters, digits, ``_``, ``.`` or ``-``; nothing else, not even a
    final newline. Hand-written: a plugin process compiles no pattern for it."""
    return bool(text) and text[0] in _NAME_FIRST and _NAME_CHARS.issuperset(text)


def __getattr__(name: str) -> Any:
    # NAME_RE is compiled when something asks for it (skel.CONTAINER_ID_RE, users), not at
    # import.
    if name == "NAME_RE":
        import re

        pattern = re.compile(NAME_PATTERN)
        globals()["NAME_RE"] = pattern
        return pattern
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: How NAME_RE reads in an error message.
NAME_RULE = "a letter or digit, then letters, digits, '_', '.' or '-'"


def _kind(value: Any) -> str:
    """A JSON type name for error messages."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _cni_version(raw: dict[str, Any]) -> str:
    version = raw.get("cniVersion")
    if version is None or version == "":
        return "0.1.0"  # libcni reads a missing (or empty) cniVersion as 0.1.0
    if not isinstance(version, str):
        raise InvalidNetworkConfig(
            f'invalid "cniVersion": expected a string, got {_kind(version)} {version!r}'
        )
    # As libcni's skel: a version we do not speak, well-formed or not, is code 1.
    return require_supported(version)


def _object(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional object-valued key: absent or null is ``{}``, anything else but an object
    is an InvalidNetworkConfig."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidNetworkConfig(f'invalid "{key}": expected an object, got {_kind(value)}')
    return dict(value)


def _prev_result(prev: Any, version: str) -> Result | None:
    """``prevResult`` in our model; an absent, null or empty one is None.

    The spec says a prevResult is in the config's version; one that declares another
    version pycni reads (a runtime that forgot to convert) is read as what it says.
    """
    if prev is None or prev == {}:
        return None
    if not isinstance(prev, dict):
        raise InvalidNetworkConfig(f'invalid "prevResult": expected an object, got {_kind(prev)}')
    declared = prev.get("cniVersion")
    if declared not in (None, "") and declared not in SUPPORTED_VERSIONS:
        # libcni refuses every prevResult whose version is not the config's; reading one
        # of a version nobody knows as the config's would silently drop what it says.
        raise InvalidNetworkConfig(f'invalid "prevResult": cniVersion {declared!r} is not one '
                                   f"of {list(SUPPORTED_VERSIONS)}")
    try:
        return Result.from_json(prev, declared or version)
    except DecodingFailure as exc:
        raise InvalidNetworkConfig(f'invalid "prevResult": {exc.msg}', exc.details) from exc


class NetworkConfig(FrozenRecord):
    """One plugin's configuration object, as the runtime passes it on stdin."""

    __slots__ = (
        "args",
        "capabilities",
        "cni_version",
        "dns",
        "ipam",
        "name",
        "prev_result",
        "raw",
        "runtime_config",
        "type",
    )
    raw: dict[str, Any]
    cni_version: str
    name: str
    type: str
    capabilities: dict[str, bool]
    ipam: dict[str, Any] | None
    dns: DNS
    runtime_config: dict[str, Any]
    args: dict[str, Any]
    prev_result: Result | None

    def __init__(self, raw: dict[str, Any], cni_version: str, name: str, type: str,  # noqa: A002, PLR0917
                 capabilities: dict[str, bool] | None = None,
                 ipam: dict[str, Any] | None = None, dns: DNS | None = None,
                 runtime_config: dict[str, Any] | None = None,
                 args: dict[str, Any] | None = None, prev_result: Result | None = None
                 ) -> None:
        set_fields(self, raw, cni_version, name, type, {} if capabilities is None else capabilities,
                   ipam, DNS() if dns is None else dns,
                   {} if runtime_config is None else runtime_config, {} if args is None else args,
                   prev_result)

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any]) -> NetworkConfig:
        """Parse and validate the common keys.

        Errors: DecodingFailure (not a JSON object), IncompatibleCNIVersion (a cniVersion
        pycni does not speak), InvalidNetworkConfig (a common key is missing or of the wrong
        type, or prevResult is not a valid result); the message names the key.
        """
        raw = data if isinstance(data, dict) else decode_json_object(data, "network config")
        version = _cni_version(raw)
        name = raw.get("name")
        if name is None or name == "":
            raise InvalidNetworkConfig('missing network "name"')
        if not isinstance(name, str) or not is_valid_name(name):
            raise InvalidNetworkConfig(f'invalid network "name" {name!r}: must be {NAME_RULE}')
        ptype = raw.get("type")
        if ptype is None or ptype == "":
            raise InvalidNetworkConfig('missing plugin "type" in network config')
        if not isinstance(ptype, str):
            raise InvalidNetworkConfig(f'invalid "type": expected a string, got {ptype!r}')
        caps = _object(raw, "capabilities")
        if not all(isinstance(v, bool) for v in caps.values()):
            raise InvalidNetworkConfig('invalid "capabilities": expected an object of booleans')
        ipam = raw.get("ipam")
        if ipam is not None and not isinstance(ipam, dict):
            raise InvalidNetworkConfig(f'invalid "ipam": expected an object, got {_kind(ipam)}')
        try:
            dns = DNS.from_json(raw.get("dns"))
        except DecodingFailure as exc:
            raise InvalidNetworkConfig(exc.msg, exc.details) from exc
        return cls(
            raw=raw,
            cni_version=version,
            name=name,
            type=ptype,
            capabilities=caps,
            ipam=ipam,
            dns=dns,
            runtime_config=_object(raw, "runtimeConfig"),
            args=_object(raw, "args"),
            prev_result=_prev_result(raw.get("prevResult"), version),
        )

    def cni_args(self) -> dict[str, Any]:
        """``args.cni`` (the CONVENTIONS.md place for per-attachment values like ``ips``)."""
        cni = self.args.get("cni") or {}
        return cni if isinstance(cni, dict) else {}
