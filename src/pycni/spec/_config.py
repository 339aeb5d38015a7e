"""Network configuration as a plugin receives it (one plugin's object on stdin).

The conflist (what runtimes read from disk) lives in ``_conflist.py``; this module is the
per-plugin view: the common keys every plugin reads, and the raw object so a plugin's own
config class can read its keys. Unknown keys are kept in ``raw`` unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._errors import DecodingFailure, InvalidNetworkConfig
from ._result import DNS, Result
from ._version import parse_version

#: The spec's network name rule (also used for plugin ``type`` lookups' sanity).
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def decode_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Decode ``data`` as one JSON object or raise DecodingFailure naming ``what``."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodingFailure(f"failed to decode {what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodingFailure(f"failed to decode {what}: expected a JSON object, got "
                              f"{type(obj).__name__}")
    return obj


def bool_field(raw: dict[str, Any], key: str, default: bool = False) -> bool:
    """A bool that may also be written ``"true"``/``"false"`` (as libcni accepts)."""
    value = raw.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidNetworkConfig(f'invalid "{key}": expected true or false, got {value!r}')


@dataclass(frozen=True)
class NetworkConfig:
    """One plugin's configuration object, as the runtime passes it on stdin."""

    raw: dict[str, Any]
    cni_version: str
    name: str
    type: str
    capabilities: dict[str, bool] = field(default_factory=dict)
    ipam: dict[str, Any] | None = None
    dns: DNS = field(default_factory=DNS)
    runtime_config: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    prev_result: Result | None = None

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any]) -> NetworkConfig:
        """Parse and validate the common keys; DecodingFailure / InvalidNetworkConfig."""
        raw = data if isinstance(data, dict) else decode_json_object(data, "network config")
        version = raw.get("cniVersion", "") or "0.1.0"  # libcni reads a missing one as 0.1.0
        if not isinstance(version, str):
            raise InvalidNetworkConfig(f'invalid "cniVersion": expected a string, got {version!r}')
        parse_version(version)
        name = raw.get("name", "")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidNetworkConfig(
                f'invalid network "name" {name!r}: must match {NAME_RE.pattern}'
            )
        ptype = raw.get("type", "")
        if not isinstance(ptype, str) or not ptype:
            raise InvalidNetworkConfig('missing plugin "type" in network config')
        caps = raw.get("capabilities") or {}
        if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
            raise InvalidNetworkConfig('invalid "capabilities": expected an object of booleans')
        ipam = raw.get("ipam")
        if ipam is not None and not isinstance(ipam, dict):
            raise InvalidNetworkConfig('invalid "ipam": expected an object')
        rc = raw.get("runtimeConfig") or {}
        if not isinstance(rc, dict):
            raise InvalidNetworkConfig('invalid "runtimeConfig": expected an object')
        args = raw.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidNetworkConfig('invalid "args": expected an object')
        try:
            dns = DNS.from_json(raw.get("dns"))
        except DecodingFailure as exc:
            raise InvalidNetworkConfig(exc.msg, exc.details) from exc
        prev = raw.get("prevResult")
        prev_result = Result.from_json(prev, version) if prev else None
        return cls(
            raw=raw,
            cni_version=version,
            name=name,
            type=ptype,
            capabilities=dict(caps),
            ipam=ipam,
            dns=dns,
            runtime_config=dict(rc),
            args=dict(args),
            prev_result=prev_result,
        )

    def cni_args(self) -> dict[str, Any]:
        """``args.cni`` (the CONVENTIONS.md place for per-attachment values like ``ips``)."""
        cni = self.args.get("cni") or {}
        return cni if isinstance(cni, dict) else {}
