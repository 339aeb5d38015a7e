"""Network configuration lists: what a runtime reads from disk and how it feeds each plugin.

A conflist names a network and chains plugins::

    {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pods",
     "disableCheck": false, "disableGC": false,
     "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": {...}},
                 {"type": "portmap", "capabilities": {"portMappings": true}}]}

Rules followed here (SPEC.md 1.1, "Network configuration lists" and "Deriving execution
configuration from plugin configuration"):

* ``cniVersions`` lists the versions the file is valid for; the runtime picks the highest one
  it supports (``cniVersion`` takes part in the choice too).
* ``disableCheck``, ``disableGC`` and ``loadOnlyInlinedPlugins`` are booleans, also accepted as
  the strings ``"true"``/``"false"`` as libcni does.
* Every plugin object needs a ``type``; unknown keys pass through to the plugin unchanged.
* A single-plugin file (``.conf``) is "upconverted" into a one-plugin list.
* A plugin's stdin is its object with the list's ``name`` and ``cniVersion`` injected,
  ``prevResult`` (converted to the list's version) when there is one, ``runtimeConfig``
  derived from the runtime's capability arguments restricted to the capabilities the plugin
  declares, and ``capabilities`` removed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._config import NAME_RULE, is_valid_name
from ._errors import DecodingFailure, IncompatibleCNIVersion, InvalidNetworkConfig
from ._fields import (
    LEGACY_ATTACHMENTS_KEY,
    VALID_ATTACHMENTS_KEY,
    bool_field,
    str_field,
    str_list,
)
from ._json import decode_json_object
from ._result import Result
from ._version import SUPPORTED_VERSIONS, highest_supported, parse_version


def _check_plugin(index: int, plugin: Any) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise InvalidNetworkConfig(f"invalid plugins[{index}]: expected an object, got "
                                   f"{type(plugin).__name__}")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise InvalidNetworkConfig(f"plugins[{index}] has no \"type\"")
    # The type names an executable in CNI_PATH; a path in it would escape the search path.
    if "/" in ptype or ptype in (".", "..") or "\x00" in ptype:
        raise InvalidNetworkConfig(f"invalid plugins[{index}].type {ptype!r}: must be a bare "
                                   "executable name")
    caps = plugin.get("capabilities")
    if caps is not None and (not isinstance(caps, dict)
                             or not all(isinstance(v, bool) for v in caps.values())):
        raise InvalidNetworkConfig(f"invalid plugins[{index}].capabilities: expected an object "
                                   "of booleans")
    return plugin


def _choose_version(raw: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The list's cniVersion and the candidates it allows (for negotiation with plugins)."""
    version = str_field(raw, "cniVersion")
    candidates = str_list(raw, "cniVersions")
    if version:
        candidates.append(version)
    for v in candidates:
        try:
            parse_version(v)
        except DecodingFailure as exc:
            raise InvalidNetworkConfig(exc.msg) from exc
    if not candidates:
        # libcni reads a missing version as 0.1.0 (types.NetConf's zero value handling).
        return "0.1.0", ("0.1.0",)
    usable = tuple(sorted({v for v in candidates if v in SUPPORTED_VERSIONS}, key=parse_version))
    chosen = highest_supported(list(usable))
    if chosen is None:
        raise IncompatibleCNIVersion(
            "incompatible CNI versions",
            f"config allows {sorted(set(candidates))}, pycni supports {list(SUPPORTED_VERSIONS)}",
        )
    return chosen, usable


def derive_runtime_config(plugin: Mapping[str, Any],
                          capability_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """``runtimeConfig`` for one plugin: the capability args it declares ``true``, only."""
    caps = plugin.get("capabilities") or {}
    if not capability_args or not isinstance(caps, dict):
        return {}
    return {name: copy.deepcopy(capability_args[name])
            for name, enabled in caps.items() if enabled is True and name in capability_args}


@dataclass(frozen=True)
class GCAttachment:
    """One attachment a runtime still uses: ``{"containerID", "ifname"}`` on the wire."""

    container_id: str
    ifname: str

    def to_json(self) -> dict[str, str]:
        """The spec's GC item."""
        return {"containerID": self.container_id, "ifname": self.ifname}


@dataclass(frozen=True)
class NetworkConfigList:
    """A parsed conflist. ``raw`` keeps the file's object; ``source`` its exact bytes."""

    raw: dict[str, Any]
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False
    #: Versions the file allows that pycni supports, oldest first (``cniVersions`` plus
    #: ``cniVersion``); ``cni_version`` is the highest of them unless negotiated down.
    cni_versions: tuple[str, ...] = ()
    source: bytes = field(default=b"", repr=False)

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any],
              extra_plugins: Iterable[dict[str, Any]] = ()) -> NetworkConfigList:
        """Parse and validate a conflist; ``extra_plugins`` come from ``<dir>/<name>/*.conf``.

        DecodingFailure for bad JSON, InvalidNetworkConfig naming the field otherwise, and
        IncompatibleCNIVersion when no allowed version is one pycni speaks.
        """
        if isinstance(data, dict):
            raw, source = data, json.dumps(data).encode()
        else:
            raw = decode_json_object(data, "network configuration list")
            source = data.encode() if isinstance(data, str) else bytes(data)
        name = raw.get("name")
        if not isinstance(name, str) or not is_valid_name(name):
            raise InvalidNetworkConfig(f'invalid network "name" {name!r}: must be {NAME_RULE}')
        version, candidates = _choose_version(raw)
        inlined_only = bool_field(raw, "loadOnlyInlinedPlugins", strings=True)
        plugins_raw = raw.get("plugins")
        if plugins_raw is None:
            if inlined_only:
                raise InvalidNetworkConfig('"loadOnlyInlinedPlugins" is true but there is no '
                                           '"plugins" list')
            plugins_raw = []
        if not isinstance(plugins_raw, list):
            raise InvalidNetworkConfig(f'invalid "plugins": expected a list, got '
                                       f"{type(plugins_raw).__name__}")
        extra = [] if inlined_only else list(extra_plugins)
        plugins = [_check_plugin(i, p) for i, p in enumerate([*plugins_raw, *extra])]
        if not plugins:
            raise InvalidNetworkConfig(f'network "{name}" has no plugins')
        return cls(
            raw=raw,
            name=name,
            cni_version=version,
            plugins=tuple(plugins),
            disable_check=bool_field(raw, "disableCheck", strings=True),
            disable_gc=bool_field(raw, "disableGC", strings=True),
            load_only_inlined_plugins=inlined_only,
            cni_versions=candidates,
            source=source,
        )

    @classmethod
    def from_conf(cls, data: bytes | str | dict[str, Any]) -> NetworkConfigList:
        """Upconvert a single-plugin config (a ``.conf`` file) into a one-plugin list.

        As libcni does, the list's bytes are the synthesised list, not the file.
        """
        conf = data if isinstance(data, dict) else decode_json_object(data, "network configuration")
        _check_plugin(0, conf)
        listed: dict[str, Any] = {"name": conf.get("name"), "cniVersion": conf.get("cniVersion"),
                                  "plugins": [conf]}
        if listed["cniVersion"] is None:
            del listed["cniVersion"]
        return cls.parse(json.dumps(listed, separators=(",", ":")).encode())

    def with_version(self, version: str) -> NetworkConfigList:
        """The same list speaking ``version`` (one of ``cni_versions``)."""
        if version not in self.cni_versions:
            raise IncompatibleCNIVersion(f'network "{self.name}" does not allow version '
                                         f'"{version}"', f"allowed: {list(self.cni_versions)}")
        return NetworkConfigList(self.raw, self.name, version, self.plugins, self.disable_check,
                                 self.disable_gc, self.load_only_inlined_plugins,
                                 self.cni_versions, self.source)

    @property
    def types(self) -> list[str]:
        """The plugin types, in chain order."""
        return [str(p["type"]) for p in self.plugins]

    def capabilities(self) -> list[str]:
        """Every capability some plugin declares true, sorted."""
        return sorted({name for p in self.plugins
                       for name, on in (p.get("capabilities") or {}).items() if on is True})

    def plugin_config(
        self,
        index: int,
        *,
        prev_result: Result | None = None,
        capability_args: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The object plugin ``index`` gets on stdin (see the module docstring)."""
        plugin = self.plugins[index]
        conf = {k: copy.deepcopy(v) for k, v in plugin.items() if k != "capabilities"}
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result.to_json(self.cni_version)
        runtime_config = derive_runtime_config(plugin, capability_args)
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        if extra:
            conf.update(extra)
        return conf

    def plugin_stdin(self, index: int, **kwargs: Any) -> bytes:
        """:meth:`plugin_config` as the bytes to write to the plugin."""
        return json.dumps(self.plugin_config(index, **kwargs)).encode()

    def gc_extra(self, valid: Iterable[GCAttachment]) -> dict[str, Any]:
        """The GC stdin additions: the valid attachments under both key spellings."""
        items = [a.to_json() for a in valid]
        return {VALID_ATTACHMENTS_KEY: items, LEGACY_ATTACHMENTS_KEY: copy.deepcopy(items)}
