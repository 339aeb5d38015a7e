"""The result cache, in libcni's own format and place, so pycni and Go runtimes share it.

One file per attachment, ``<cacheDir>/results/<network>-<containerID>-<ifname>``, holding
the JSON libcni's ``cachedInfo`` marshals to::

    {"kind":"cniCacheV1","containerId":"c1","config":"<base64 of the conflist bytes>",
     "ifName":"eth0","networkName":"pods","netns":"/run/netns/x",
     "cniArgs":[["K","V"]],"capabilityArgs":{...},"result":{...}}

Field order is the Go struct's; ``netns``, ``cniArgs``, ``capabilityArgs`` and ``result``
are left out when empty (``omitempty``); maps come out with sorted keys and ``<``, ``>``,
``&`` escaped, as Go's encoder writes them. Files are written atomically (a temporary file
in the same directory, fsync, rename) with mode 0600 in a 0700 directory.

Reading is forgiving: a missing, empty or corrupt file is logged and treated as "no cached
result", so a DEL still runs (without ``prevResult``) instead of wedging the container. A
file holding a bare result (libcni's pre-``cniCacheV1`` format) is still understood.

A file name longer than ``NAME_MAX`` (a container ID of hundreds of bytes; the spec sets no
limit) is hashed by :func:`pycni.store.fit_name`; libcni cannot store such an entry at all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..skel import validate_container_id, validate_ifname
from ..spec import (
    CNIError,
    DecodingFailure,
    InvalidNetworkConfig,
    IOFailure,
    Result,
    decode_json,
    is_valid_name,
)
from ..store import atomic_write, fit_name, is_hashed

log = logging.getLogger("pycni.runtime")

DEFAULT_CACHE_DIR = "/var/lib/cni"
CACHE_KIND = "cniCacheV1"


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted_deep(v) for v in value]
    return value


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escapes, raw UTF-8)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # These characters can only occur inside JSON strings, so a plain replace is exact.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


@dataclass
class CachedAttachment:
    """One cache entry: an attachment ADD succeeded for, and what it returned."""

    container_id: str
    ifname: str
    network_name: str
    config: bytes
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The object libcni writes (field order and omissions included)."""
        out: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network_name,
        }
        if self.netns:
            out["netns"] = self.netns
        if self.cni_args:
            out["cniArgs"] = [[k, v] for k, v in self.cni_args]
        if self.capability_args:
            out["capabilityArgs"] = _sorted_deep(self.capability_args)
        if self.result:
            out["result"] = _sorted_deep(self.result)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> CachedAttachment:
        """Read a ``cniCacheV1`` object; ValueError says what is wrong with it."""
        if not isinstance(obj, dict) or obj.get("kind") != CACHE_KIND:
            kind = obj.get("kind") if isinstance(obj, dict) else None
            raise ValueError(f"not a {CACHE_KIND} entry (kind {kind!r})")
        strings = {k: obj.get(k) for k in ("containerId", "ifName", "networkName")}
        if not all(isinstance(v, str) and v for v in strings.values()):
            raise ValueError("containerId, ifName and networkName must be non-empty strings")
        netns = obj.get("netns") or ""
        if not isinstance(netns, str):
            raise ValueError("netns must be a string")  # noqa: TRY004 - one error type for "corrupt"
        try:
            config = base64.b64decode(obj.get("config") or "", validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"config is not base64: {exc}") from exc
        raw_args = obj.get("cniArgs") or []
        if not isinstance(raw_args, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
            for p in raw_args
        ):
            raise ValueError("cniArgs must be a list of [key, value] string pairs")
        caps = obj.get("capabilityArgs") or {}
        result = obj.get("result")
        if not isinstance(caps, dict) or (result is not None and not isinstance(result, dict)):
            raise ValueError("capabilityArgs and result must be objects")
        return cls(
            container_id=strings["containerId"],  # type: ignore[arg-type]
            ifname=strings["ifName"],  # type: ignore[arg-type]
            network_name=strings["networkName"],  # type: ignore[arg-type]
            config=config,
            netns=netns,
            cni_args=[(k, v) for k, v in raw_args],
            capability_args=caps,
            result=result,
        )

    def cached_result(self, version: str) -> Result | None:
        """The cached result converted to ``version``; None (logged) if unusable."""
        if not self.result:
            return None
        try:
            return Result.from_json(self.result).convert(version)
        except CNIError as exc:
            log.warning("cached result of %s/%s/%s is unusable, continuing without it: %s",
                        self.network_name, self.container_id, self.ifname, exc)
            return None


class ResultCache:
    """The results cache under ``cache_dir`` (libcni's ``CacheDir``)."""

    def __init__(self, cache_dir: str = DEFAULT_CACHE_DIR) -> None:
        self.cache_dir = cache_dir

    @property
    def results_dir(self) -> str:
        """``<cache_dir>/results``."""
        return str(Path(self.cache_dir, "results"))

    def path(self, network: str, container_id: str, ifname: str) -> str:
        """The entry's file; the parts are validated so none can leave the directory."""
        if not is_valid_name(network):
            raise InvalidNetworkConfig(f"invalid network name {network!r} for the result cache")
        validate_container_id(container_id)
        validate_ifname(ifname)
        return str(Path(self.results_dir, fit_name(f"{network}-{container_id}-{ifname}")))

    def write(self, entry: CachedAttachment) -> str:
        """Store ``entry`` atomically; returns the file written. IOFailure on error."""
        target = self.path(entry.network_name, entry.container_id, entry.ifname)
        data = go_json(entry.to_json())
        try:
            atomic_write(target, data, mode=0o600, dir_mode=0o700)
        except OSError as exc:
            raise IOFailure(f'failed to write cached result for network "{entry.network_name}"',
                            f"{target}: {exc.strerror or exc}") from exc
        return target

    def _load(self, path: str) -> CachedAttachment | None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read cache file %s, ignoring it: %s", path, exc.strerror)
            return None
        try:
            return CachedAttachment.from_json(decode_json(data, f"cache file {path}"))
        except (ValueError, DecodingFailure) as exc:
            log.warning("cache file %s is corrupt, ignoring it: %s", path, exc)
            return None

    def read(self, network: str, container_id: str, ifname: str) -> CachedAttachment | None:
        """The entry, or None when missing or unreadable (logged)."""
        return self._load(self.path(network, container_id, ifname))

    def result(self, network: str, container_id: str, ifname: str, version: str
               ) -> Result | None:
        """The cached result as ``version``, or None; understands libcni's legacy files."""
        path = self.path(network, container_id, ifname)
        entry = self._load(path)
        if entry is not None:
            return entry.cached_result(version)
        legacy = _legacy_result(path)
        if legacy is None:
            return None
        try:
            return Result.from_json(legacy).convert(version)
        except CNIError as exc:
            log.warning("legacy cache file %s is unusable, ignoring it: %s", path, exc)
            return None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        """Remove the entry; a missing one is fine."""
        _unlink(self.path(network, container_id, ifname))

    def attachments(self, container_id: str = "", network: str = "") -> list[CachedAttachment]:
        """Every readable entry (optionally one container's or one network's), by file name."""
        try:
            names = sorted(p.name for p in Path(self.results_dir).iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise IOFailure(f"cannot list {self.results_dir}: {exc.strerror}") from exc
        found = []
        for name in names:
            if name.startswith("."):
                continue
            if container_id and f"-{container_id}-" not in name and not is_hashed(name):
                continue
            entry = self._load(str(Path(self.results_dir, name)))
            if entry is None:
                continue
            if container_id and entry.container_id != container_id:
                continue
            if network and entry.network_name != network:
                continue
            found.append(entry)
        return found


def _legacy_result(path: str) -> dict[str, Any] | None:
    try:
        obj = decode_json(Path(path).read_bytes(), f"cache file {path}")
    except (OSError, DecodingFailure):
        return None
    if isinstance(obj, dict) and "kind" not in obj and "cniVersion" in obj:
        return obj
    return None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()

