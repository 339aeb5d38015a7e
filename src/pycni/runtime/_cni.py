"""The runtime side of the protocol: running a conflist's plugins for one attachment.

:class:`CNIConfig` mirrors libcni's type of the same name::

    cni = CNIConfig(["/opt/cni/bin"], cache_dir="/var/lib/cni")
    rt = RuntimeConf(container_id="c1", netns="/run/netns/c1", ifname="eth0")
    result = cni.add_network_list(net, rt)      # plugins in order, chaining prevResult
    cni.check_network_list(net, rt)             # >= 0.4.0, unless disableCheck
    cni.delete_network_list(net, rt)            # plugins in reverse, prevResult from cache
    cni.gc_network_list(net, [GCAttachment("c2", "eth0")])   # DEL stale cache entries, GC
    cni.status_network_list(net)                # >= 1.1.0

Plugins are executables found in the search path (``CNI_PATH``) and run with the CNI_*
environment over the inherited one, as libcni's invoke package does. A pycni plugin type
that is not installed in the path runs in-process instead (``in_process_fallback``), so
``pycni run`` works before ``pycni install``.

Exec'd plugins inherit the network namespace of the *calling thread*: to act as a node
whose host side is a test namespace, call these methods inside ``pycni.host.run_in_netns``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..invoke import DEFAULT_TIMEOUT, locate_plugin, run_located, trace_chain
from ..skel import validate_container_id, validate_ifname
from ..spec import (
    CURRENT_VERSION,
    CNIError,
    DecodingFailure,
    GCAttachment,
    IncompatibleCNIVersion,
    InvalidNetworkConfig,
    NetworkConfigList,
    PluginExecFailed,
    Result,
    decode_json,
    is_valid_name,
    parse_version,
    version_at_least,
)
from ._cache import DEFAULT_CACHE_DIR, CachedAttachment, ResultCache

log = logging.getLogger("pycni.runtime")


class PluginExec(Protocol):
    """How the runtime finds and runs plugins (swap it out in tests)."""

    def find(self, plugin_type: str, paths: Sequence[str]) -> str:
        """The executable for ``plugin_type``; PluginNotFound if none."""
        ...

    def run(self, path: str, env: Mapping[str, str], stdin: bytes, timeout: float) -> bytes:
        """Run it; its stdout, or the CNIError it reported."""
        ...


class DefaultExec:
    """Executables from the search path; pycni types missing from it run in-process
    (:func:`pycni.invoke.locate_plugin`)."""

    def __init__(self, *, in_process_fallback: bool = True) -> None:
        self.in_process_fallback = in_process_fallback

    def find(self, plugin_type: str, paths: Sequence[str]) -> str:
        """See :class:`PluginExec`."""
        return locate_plugin(plugin_type, paths,
                             in_process="fallback" if self.in_process_fallback else "never")

    def run(self, path: str, env: Mapping[str, str], stdin: bytes, timeout: float) -> bytes:
        """See :class:`PluginExec`."""
        return run_located(path, env, stdin, timeout=timeout)


@dataclass
class RuntimeConf:
    """One attachment's arguments (libcni's RuntimeConf)."""

    container_id: str = ""
    netns: str = ""
    ifname: str = "eth0"
    #: CNI_ARGS as (key, value) pairs, in order.
    args: list[tuple[str, str]] = field(default_factory=list)
    #: Capability arguments (``portMappings``, ``bandwidth``, ...), filtered per plugin.
    capability_args: dict[str, Any] = field(default_factory=dict)

    def cni_args(self) -> str:
        """CNI_ARGS as the environment carries it."""
        return ";".join(f"{k}={v}" for k, v in self.args)


@dataclass(frozen=True)
class PluginInfo:
    """A plugin's VERSION answer."""

    cni_version: str
    supported_versions: tuple[str, ...]

    def supports(self, version: str) -> bool:
        """True if the plugin says it speaks ``version``."""
        return version in self.supported_versions


def _describe(plugin: Mapping[str, Any]) -> str:
    return f'type="{plugin.get("type")}"'


def _rewrap(exc: CNIError, prefix: str) -> CNIError:
    """The same error (class and code) with ``prefix`` saying which plugin and command."""
    new = type(exc)(f"{prefix}: {exc.msg}", exc.details, code=exc.code)
    new.__cause__ = exc
    return new


class CNIConfig:
    """Runs network configuration lists against plugins, with libcni's result cache."""

    def __init__(
        self,
        path: Sequence[str],
        cache_dir: str = DEFAULT_CACHE_DIR,
        *,
        exec_: PluginExec | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.path = [p for p in path if p]
        self.cache = ResultCache(cache_dir)
        self.exec = exec_ or DefaultExec()
        self.timeout = timeout

    # -- plumbing -------------------------------------------------------------------------

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        # Every variable is set, empty or not, so nothing leaks in from our own environment
        # (libcni's Args.AsEnv does the same).
        rt = rt or RuntimeConf(ifname="")
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id,
            "CNI_NETNS": rt.netns,
            "CNI_ARGS": rt.cni_args(),
            "CNI_IFNAME": rt.ifname,
            "CNI_PATH": ":".join(self.path),
        }

    def _invoke(self, command: str, plugin_type: str, stdin: bytes,
                rt: RuntimeConf | None) -> bytes:
        exe = self.exec.find(plugin_type, self.path)
        log.debug("%s %s (%s)", command, plugin_type, exe)
        return self.exec.run(exe, self._env(command, rt), stdin, self.timeout)

    @staticmethod
    def _chain(command: str, net: NetworkConfigList, rt: RuntimeConf | None) -> trace_chain:
        """Traces of the plugins this chain runs in-process carry one chain id."""
        cid = rt.container_id if rt else ""
        ifname = rt.ifname if rt else ""
        return trace_chain(f"{cid}/{net.name}/{ifname}/{command}@{time.time():.3f}"
                           f"#{os.getpid()}")

    def _run_chain(self, command: str, net: NetworkConfigList, rt: RuntimeConf | None,
                   order: Iterable[int], **config: Any) -> None:
        with self._chain(command, net, rt):
            self._run_plugins(command, net, rt, order, **config)

    def _run_plugins(self, command: str, net: NetworkConfigList, rt: RuntimeConf | None,
                     order: Iterable[int], **config: Any) -> None:
        for index in order:
            plugin = net.plugins[index]
            try:
                self._invoke(command, str(plugin["type"]), net.plugin_stdin(index, **config), rt)
            except CNIError as exc:
                raise _rewrap(exc, f"plugin {_describe(plugin)} failed ({command.lower()})"
                              ) from exc

    @staticmethod
    def _validate_attachment(net: NetworkConfigList, rt: RuntimeConf) -> None:
        validate_container_id(rt.container_id)
        if not is_valid_name(net.name):
            raise InvalidNetworkConfig(f"invalid network name {net.name!r}")
        validate_ifname(rt.ifname)

    # -- ADD / CHECK / DEL ----------------------------------------------------------------

    def add_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD every plugin in order, each getting the previous one's result; cache it.

        A failure stops the chain and is raised; the caller should DEL (as kubelet does).
        """
        self._validate_attachment(net, rt)
        result: Result | None = None
        with self._chain("ADD", net, rt):
            for index, plugin in enumerate(net.plugins):
                stdin = net.plugin_stdin(index, prev_result=result,
                                         capability_args=rt.capability_args)
                try:
                    out = self._invoke("ADD", str(plugin["type"]), stdin, rt)
                    result = _parse_result(out, net.cni_version)
                except CNIError as exc:
                    raise _rewrap(exc, f"plugin {_describe(plugin)} failed (add)") from exc
        if result is None:  # parse() guarantees at least one plugin
            raise InvalidNetworkConfig(f'network "{net.name}" has no plugins')
        self.cache.write(CachedAttachment(
            container_id=rt.container_id,
            ifname=rt.ifname,
            network_name=net.name,
            config=net.source,
            netns=rt.netns,
            cni_args=list(rt.args),
            capability_args=dict(rt.capability_args),
            result=result.to_json(net.cni_version),
        ))
        return result

    def check_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK every plugin with the cached result as prevResult (spec >= 0.4.0)."""
        if not version_at_least(net.cni_version, "0.4.0"):
            raise IncompatibleCNIVersion(
                f'configuration version "{net.cni_version}" does not support the CHECK command')
        if net.disable_check:
            log.debug("network %s has disableCheck; not checking", net.name)
            return
        self._validate_attachment(net, rt)
        cached = self.cache.result(net.name, rt.container_id, rt.ifname, net.cni_version)
        self._run_chain("CHECK", net, rt, range(len(net.plugins)), prev_result=cached,
                        capability_args=rt.capability_args)

    def delete_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order; then drop the cache entry.

        Every plugin gets its DEL even when one fails; the first failure is raised (the
        others in its details) and the cache entry is kept.

        From 0.4.0 on each plugin gets the cached result as prevResult; a missing or corrupt
        cache entry is logged and the DEL goes ahead without it.
        """
        self._validate_attachment(net, rt)
        cached = None
        if version_at_least(net.cni_version, "0.4.0"):
            cached = self.cache.result(net.name, rt.container_id, rt.ifname, net.cni_version)
        # Unlike libcni, one failing plugin does not stop the others: each still releases
        # what it holds (leases, rules), and the cache entry stays for the retry.
        errors: list[CNIError] = []
        with self._chain("DEL", net, rt):
            for index in reversed(range(len(net.plugins))):
                try:
                    self._run_plugins("DEL", net, rt, [index], prev_result=cached,
                                      capability_args=rt.capability_args)
                except CNIError as exc:
                    errors.append(exc)
        if errors:
            raise _joined(errors)
        self.cache.delete(net.name, rt.container_id, rt.ifname)

    def cached_result(self, net: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        """The result the last ADD cached for this attachment, as the list's version."""
        return self.cache.result(net.name, rt.container_id, rt.ifname, net.cni_version)

    def cached_attachments(self, container_id: str = "") -> list[CachedAttachment]:
        """Cache entries (optionally one container's), like libcni's GetCachedAttachments."""
        return self.cache.attachments(container_id)

    # -- GC / STATUS ----------------------------------------------------------------------

    def gc_network_list(self, net: NetworkConfigList,
                        valid_attachments: Iterable[GCAttachment] | None = None) -> None:
        """Garbage-collect ``net``: DEL cached attachments not in ``valid_attachments``, then
        (spec >= 1.1.0) send GC to every plugin with the valid list.

        ``None`` means "no attachment is valid", as cnitool's ``gc`` does. Nothing happens
        when the list sets ``disableGC``. Every failure is collected; the first is raised
        with the rest in its details.
        """
        if net.disable_gc:
            log.info("network %s has disableGC; not collecting", net.name)
            return
        valid = list(dict.fromkeys(valid_attachments or ()))
        keep = set(valid)
        errors: list[CNIError] = []
        for entry in self.cache.attachments(network=net.name):
            if GCAttachment(entry.container_id, entry.ifname) in keep:
                continue
            stale = RuntimeConf(container_id=entry.container_id, netns=entry.netns,
                                ifname=entry.ifname, args=list(entry.cni_args),
                                capability_args=dict(entry.capability_args))
            log.info("GC: deleting stale attachment %s/%s on %s", entry.container_id,
                     entry.ifname, net.name)
            try:
                self.delete_network_list(net, stale)
            except CNIError as exc:
                errors.append(_rewrap(exc, f"failed to delete stale attachment "
                                           f"{entry.container_id} {entry.ifname}"))
        if version_at_least(net.cni_version, "1.1.0"):
            extra = net.gc_extra(valid)
            for index, plugin in enumerate(net.plugins):
                try:
                    self._invoke("GC", str(plugin["type"]),
                                 net.plugin_stdin(index, extra=extra), None)
                except CNIError as exc:
                    errors.append(_rewrap(exc, f"failed to GC plugin {_describe(plugin)}"))
        if errors:
            raise _joined(errors)

    def status_network_list(self, net: NetworkConfigList) -> None:
        """STATUS every plugin (spec >= 1.1.0; older lists are "available" as libcni says).

        Raises the first plugin's error (PluginNotAvailable 50, LimitedConnectivity 51, ...).
        """
        if not version_at_least(net.cni_version, "1.1.0"):
            return
        self._run_chain("STATUS", net, None, range(len(net.plugins)))

    # -- VERSION --------------------------------------------------------------------------

    def get_version_info(self, plugin_type: str) -> PluginInfo:
        """Ask ``plugin_type`` which spec versions it speaks (CNI_COMMAND=VERSION)."""
        exe = self.exec.find(plugin_type, self.path)
        # Plugins built on an old skel want these set even for VERSION (libcni sets them).
        env = {**self._env("VERSION", None), "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy",
               "CNI_PATH": ":".join(self.path) or "dummy"}
        stdin = json.dumps({"cniVersion": CURRENT_VERSION}).encode()
        try:
            out = self.exec.run(exe, env, stdin, self.timeout)
        except CNIError as exc:
            if "unknown CNI_COMMAND" in exc.msg:  # a 0.1.0 plugin has no VERSION
                return PluginInfo("0.1.0", ("0.1.0",))
            raise _rewrap(exc, f'plugin type="{plugin_type}" failed (version)') from exc
        return _parse_version_info(plugin_type, out)

    def validate_network_list(self, net: NetworkConfigList) -> list[str]:
        """Check every plugin exists and speaks the list's version; return its capabilities.

        All problems are collected; the first is raised with the others in its details.
        """
        errors: list[CNIError] = []
        for ptype in dict.fromkeys(net.types):
            try:
                info = self.get_version_info(ptype)
            except CNIError as exc:
                errors.append(exc)
                continue
            if not info.supports(net.cni_version):
                errors.append(IncompatibleCNIVersion(
                    f'plugin {ptype} does not support config version "{net.cni_version}"',
                    f"it supports {list(info.supported_versions)}"))
        if errors:
            raise _joined(errors)
        return net.capabilities()

    def negotiate(self, net: NetworkConfigList) -> NetworkConfigList:
        """The list at the highest version it allows that every plugin speaks.

        Only lists with ``cniVersions`` offer a choice; others come back unchanged. This lets
        one file serve plugins of different ages (Go's reference plugins stop at 1.0.0).
        """
        if len(net.cni_versions) < 2:
            return net
        common = set(net.cni_versions)
        for ptype in dict.fromkeys(net.types):
            common &= set(self.get_version_info(ptype).supported_versions)
        if not common:
            raise IncompatibleCNIVersion(
                f'no version of network "{net.name}" is spoken by all its plugins',
                f"network allows {list(net.cni_versions)}")
        return net.with_version(max(common, key=parse_version))


def _joined(errors: list[CNIError]) -> CNIError:
    """The first error, with the others appended to its details."""
    first = errors[0]
    if len(errors) > 1:
        rest = "; ".join(str(e) for e in errors[1:])
        first.details = f"{first.details}; {rest}" if first.details else rest
    return first


def _parse_result(out: bytes, version: str) -> Result:
    try:
        obj: Any = decode_json(out, "plugin result")
    except DecodingFailure as exc:
        raise PluginExecFailed("plugin printed something that is not a JSON result",
                               out[:200].decode(errors="replace")) from exc
    result = Result.from_json(obj)
    return result if result.cni_version == version else result.convert(version)


def _parse_version_info(plugin_type: str, out: bytes) -> PluginInfo:
    try:
        obj: Any = decode_json(out, f"plugin {plugin_type} VERSION answer")
    except DecodingFailure as exc:
        raise PluginExecFailed(f"plugin {plugin_type} gave an unreadable VERSION answer",
                               out[:200].decode(errors="replace")) from exc
    if not isinstance(obj, dict):
        raise DecodingFailure(f"plugin {plugin_type} VERSION answer is not an object")
    supported = obj.get("supportedVersions")
    version = obj.get("cniVersion")
    if supported is None and isinstance(version, str):
        supported = [version]
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise DecodingFailure(f"plugin {plugin_type} VERSION answer has no supportedVersions",
                              repr(obj)[:200])
    return PluginInfo(str(version or ""), tuple(supported))
