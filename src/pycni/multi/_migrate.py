"""Live switch of a running pod's default network, keeping its address (``pycni migrate``).

Kubernetes treats a pod's IP as fixed, so the pod keeps it. For one pod, under its record's
lock (:meth:`PodRecords.lock`)::

    1. the new network's delegates run ADD in a private staging netns, with the same
       CNI_IFNAME (eth0) and the pod's address requested (``args.cni.ips``, and the ``ips``
       capability where declared): its IPAM holds the address while the old IPAM still does,
       under the same (container ID, ifname) key a later DEL uses. An IPAM that cannot or
       does not give that address fails the switch here.
    2. the host routes the new delegate made to the address (ptp's /32) are held back, so the
       host keeps reaching the pod the old way; the new interface moves into the pod's netns
       under a temporary name (down, bare: the kernel drops its per-interface sysctls on the
       way, so those the delegates set, tuning's, are set again).
    3. the switch: the new interface gets the addresses (no DAD, no prefix route where the
       delegate had none) and every route is swapped onto it with ``ip route replace``; the
       held-back host routes return; where the pod leaves a segment that stays (a bridge),
       the host answers for the address there by proxy ARP/NDP and tells the segment with a
       gratuitous ARP; the old interface goes down.
    4. the old attachment is deleted (its IPAM releases), the new interface is renamed to the
       old name (live on Linux >= 6.2) and announced with a gratuitous ARP.
    5. the record (the new attachment is ``default``), the delegates' result cache, the
       runtime's cached result of the pod (libcni's, for its CHECK and DEL) and
       network-status are updated.

Before step 1 the new attachment enters the record as ``switching`` (with its staging netns;
before step 2 also what undoing steps 2-3 needs): a crash up to step 4 is undone by the next
``pycni migrate`` of the pod, and cleaned up by its DEL or GC (:mod:`pycni.multi._record`).
An old network whose DEL fails in step 4 stays ``orphaned``: its DEL is retried without the
pod's netns, where its interface name is the new network's now.

Up to the switch every step has an undo; a failure runs them newest first and leaves the pod
exactly as it was (its interface, addresses, routes and old lease; the new store holds
nothing; a new network whose DEL fails there stays ``switching`` for the next try).
``renumber`` takes whatever address the new network gives (the pod's IP changes: Services
and the kubelet keep the old one until the pod is recreated).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host import (
    RouteInfo,
    Undo,
    add_addresses,
    add_proxy_neighbour,
    add_route,
    bridge_ports,
    create_netns,
    del_route,
    delete_link,
    delete_proxy_neighbour,
    enter,
    host_routes_to,
    iface_sysctls,
    link_info,
    move_link,
    remove_addresses,
    remove_netns,
    rename_link,
    run_in_netns,
    send_gratuitous_arp,
    send_unsolicited_na,
    set_iface_sysctls,
    set_link_down,
    snapshot_iface,
    take_over_routes,
)
from ..runtime import ResultCache, RuntimeConf, discover
from ..spec import (
    CNIError,
    InvalidNetworkConfig,
    IPAddress,
    IPInterface,
    KernelError,
    NetworkConfigList,
    Result,
)
from ._attach import _context, _load, _pod
from ._config import MultusConfig
from ._kube import ClusterSource
from ._plugin import Multus, _config_json, _Context
from ._record import ADDED, ORPHANED, SWITCHING, Attachment, PodRecord
from ._selection import NetworkSelection

log = logging.getLogger("pycni.multi")

#: libcni's default cache directory (containerd and CRI-O keep the pod's result there).
RUNTIME_CACHE_DIR = "/var/lib/cni"
STAGING_PREFIX = "pycni-mig-"


class MigrationFailed(KernelError):  # noqa: N818 - the CNIError tree's naming
    """The switch of one pod failed; the pod was left as it was (code 100, as the node-side
    operation failed: the spec's codes below 100 describe a plugin call's input)."""


@dataclass
class SwitchReport:
    """What happened to one pod."""

    pod: str
    container_id: str
    from_network: str
    to_network: str
    status: str  # "switched", "already", "failed"
    addresses: list[str] = field(default_factory=list)
    error: str = ""
    proxies: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """For ``pycni migrate --json``."""
        return {"pod": self.pod, "containerID": self.container_id,
                "from": self.from_network, "to": self.to_network, "status": self.status,
                "addresses": self.addresses, "error": self.error, "proxies": self.proxies}


def resolve_network(conf: MultusConfig, plugin: Multus, ctx: _Context, name: str
                    ) -> tuple[str, NetworkConfigList]:
    """(the name network-status gives it, its conflist): a NAD ``ns/name`` or a network
    in ``confDir``."""
    if "/" in name:
        namespace, _, short = name.partition("/")
        return f"{namespace}/{short}", plugin._nad_network(ctx, NetworkSelection(short,
                                                                                 namespace))[0]
    try:
        return name, discover(conf.conf_dir).find(name).network
    except InvalidNetworkConfig as exc:
        raise InvalidNetworkConfig(f"--to {name}: no network of that name in {conf.conf_dir} "
                                   '("confDir"); a NetworkAttachmentDefinition is named '
                                   "namespace/name", exc.details) from exc


def _sandbox_addresses(result: Result, ifname: str) -> list[IPInterface]:
    index = next((i for i, iface in enumerate(result.interfaces)
                  if iface.name == ifname and iface.sandbox), None)
    return [ip.address for ip in result.ips
            if ip.interface is None or index is None or ip.interface == index]


def _request_addresses(raw: dict[str, Any], addresses: list[IPInterface],
                       declared: set[str], caps: dict[str, Any]) -> None:
    """Ask the new network's IPAM for ``addresses``: ``args.cni.ips`` on every plugin with
    an ``ipam`` section (host-local and static read it), the ``ips`` capability if declared."""
    wanted = [str(a) for a in addresses]
    for plugin in raw["plugins"]:
        if isinstance(plugin.get("ipam"), dict):
            args = plugin.setdefault("args", {})
            cni = args.setdefault("cni", {})
            cni["ips"] = wanted
    if "ips" in declared:
        caps["ips"] = wanted


def _route_json(route: RouteInfo) -> dict[str, Any]:
    return {"dst": str(route.dst), "gateway": str(route.gateway) if route.gateway else None,
            "scope": route.scope, "table": route.table, "priority": route.priority,
            "prefsrc": str(route.prefsrc) if route.prefsrc else None,
            "protocol": route.protocol, "onlink": route.onlink}


def _route_from_json(obj: dict[str, Any]) -> RouteInfo:
    gateway, prefsrc = obj.get("gateway"), obj.get("prefsrc")
    return RouteInfo(dst=ipaddress.ip_network(str(obj["dst"])),
                     gateway=ipaddress.ip_address(str(gateway)) if gateway else None,
                     oif=None, scope=int(obj["scope"]), table=int(obj["table"]),
                     priority=int(obj["priority"]),
                     prefsrc=ipaddress.ip_address(str(prefsrc)) if prefsrc else None,
                     protocol=int(obj["protocol"]), onlink=bool(obj["onlink"]))


def _restore_iface(ifname: str, addresses: list[IPInterface], bare: list[IPInterface],
                   routes: list[RouteInfo]) -> None:
    """Give ``ifname`` (if it is there) back its addresses (up) and routes."""
    if link_info(ifname) is not None:
        add_addresses(ifname, addresses, no_prefix_route=bare)
        take_over_routes(ifname, routes)


def _add_host_route(dev: str, route: RouteInfo) -> None:
    """Put ``route`` (one of the host's routes to the pod) back on ``dev``."""
    add_route(route.dst, ifname=dev, gateway=route.gateway, scope=route.scope,
              src=route.prefsrc, exist_ok=True)


def _announce(ifname: str, ips: Sequence[IPAddress]) -> None:
    """Tell ``ifname``'s segment that ``ips`` are at its MAC now: a gratuitous ARP for IPv4,
    an unsolicited neighbour advertisement (Override) for IPv6."""
    send_gratuitous_arp(ifname, ips)
    send_unsolicited_na(ifname, ips)


def _free_name(netns: str, base: str) -> str:
    def pick() -> str:
        for n in range(100):
            name = f"{base}{n}"
            if link_info(name) is None:
                return name
        raise CNIError(f"no free temporary interface name {base}N in {netns}", code=11)
    return run_in_netns(netns, pick)


def _with_sandbox(result: Result, old: str, new: str) -> dict[str, Any]:
    raw = result.to_json()
    for iface in raw.get("interfaces") or []:
        if iface.get("sandbox") == old:
            iface["sandbox"] = new
    return raw


class Migration:
    """Switches pods of one node to another default network (see the module docstring)."""

    def __init__(self, conf: MultusConfig, *, source: ClusterSource | None = None,
                 cni_path: Sequence[str] | None = None,
                 runtime_cache_dir: str = RUNTIME_CACHE_DIR, renumber: bool = False,
                 plugin: Multus | None = None) -> None:
        self.conf = conf
        self.source = source
        self.cni_path = cni_path
        self.runtime_cache_dir = runtime_cache_dir
        self.renumber = renumber
        self.plugin = plugin or Multus()
        #: Tests make a step fail: called with each step's name as it completes.
        self.after_step: Callable[[str], None] | None = None

    def _step(self, name: str) -> None:
        if self.after_step is not None:
            self.after_step(name)

    def switch(self, record: PodRecord, network: str) -> SwitchReport:
        """Move ``record``'s pod to ``network``; a failure is reported (the pod unchanged)."""
        ctx = _context(self.conf, record, self.source, self.cni_path)
        report = SwitchReport(ctx.pod_key, record.container_id, "", network, "failed")
        try:
            key, net = resolve_network(self.conf, self.plugin, ctx, network)
            report.to_network = key
            with ctx.records.lock(ctx.container_id, ctx.ifname):
                fresh = _load(ctx)
                self._switch(ctx, fresh, key, net, report)
        except CNIError as exc:
            report.status = "failed"
            report.error = exc.msg + (f" ({exc.details})" if exc.details else "")
            log.warning("pod %s: migration to %s failed: %s", ctx.pod_key, network,
                        report.error)
        return report

    def _finish_interrupted(self, ctx: _Context, record: PodRecord) -> None:
        """Undo a switch a crash interrupted (``switching``: the pod gets back its old
        interface's addresses and routes, the new network's delegates get DEL in the staging
        netns) and retry the DEL of old networks that failed after a switch (``orphaned``)."""
        for att in [a for a in record.attachments if a.state == SWITCHING]:
            intent = att.switch or {}
            log.warning("pod %s: undoing the interrupted switch to %s", ctx.pod_key,
                        att.network)
            if intent.get("tmp") and record.netns and Path(record.netns).exists():
                routes = [_route_from_json(r) for r in intent.get("routes") or []]
                addrs = [ipaddress.ip_interface(a) for a in intent.get("addresses") or []]
                bare = [ipaddress.ip_interface(a) for a in intent.get("noPrefixRoute") or []]
                run_in_netns(record.netns, _restore_iface, att.interface, addrs, bare, routes)
                for dev, route in intent.get("hostRoutes") or []:
                    if link_info(dev) is not None:
                        _add_host_route(dev, _route_from_json(route))
            # DEL in the staging netns (see Multus._runtime_conf), then the temporary
            # interface, the staging netns and the switch's proxy entries go.
            errors = self.plugin._detach(ctx, record, [att], record.netns)
            if errors:
                raise MigrationFailed(f"pod {ctx.pod_key}: the interrupted switch to "
                                      f"{att.network} cannot be undone: {errors[0].msg}")
        orphans = [a for a in record.attachments if a.state == ORPHANED]
        if orphans:
            errors = self.plugin._detach(ctx, record, orphans, record.netns)
            for err in errors:
                log.warning("pod %s: DEL of an old network still fails: %s", ctx.pod_key,
                            err)

    def _switch(self, ctx: _Context, record: PodRecord, key: str, net: NetworkConfigList,
                report: SwitchReport) -> None:
        self._finish_interrupted(ctx, record)
        old = next((a for a in record.attachments if a.default), None)
        if old is None or old.state != ADDED or not old.result:
            raise MigrationFailed(f"pod {ctx.pod_key} has no added default network to move")
        report.from_network = old.network
        if old.network == key:
            report.status = "already"
            return
        if not record.netns or not Path(record.netns).exists():
            raise MigrationFailed(f"pod {ctx.pod_key}: its netns {record.netns!r} is gone")
        old_result = Result.from_json(old.result)
        addresses = _sandbox_addresses(old_result, old.interface)
        if not addresses and not self.renumber:
            raise MigrationFailed(f"pod {ctx.pod_key}: the default network {old.network} "
                                  "gave the pod no address to keep")
        raw = _config_json(net)
        declared = set(net.capabilities())
        caps = {k: v for k, v in old.capability_args.items() if k in declared}
        if not self.renumber:
            _request_addresses(raw, addresses, declared, caps)
        cni_args = list(old.cni_args)
        if not any(k == "IgnoreUnknown" for k, _ in cni_args):
            cni_args.insert(0, ("IgnoreUnknown", "1"))
        staging_name = f"{STAGING_PREFIX}{record.container_id[:12]}"
        # The intent is recorded before the staging netns and the first delegate: a crash
        # from here on leaves the next migrate, the pod's DEL or GC something to undo.
        intent: dict[str, Any] = {"staging": staging_name}
        new = Attachment(network=key, interface=old.interface, config=raw,
                         capability_args=caps, cni_args=cni_args, state=SWITCHING,
                         default_route=list(old.default_route), switch=intent)
        new_net = new.network_config()
        podns, ifname = record.netns, old.interface
        record.attachments.append(new)
        ctx.records.save(record)
        undo = Undo()
        with undo:
            # Runs last: the DEL in the staging netns; only when it succeeded does the
            # switch leave the record (the staging netns goes with it), else the next
            # migrate or the pod's DEL retries it from the record.
            undo.push(f"DEL {key} in the staging netns", self._undo_switch, ctx, record, new)
            remove_netns(staging_name)  # left by a switch older than its intent's record
            staging = create_netns(staging_name)
            before = {(dev, r.dst) for a in addresses for dev, r in host_routes_to(a.ip)}
            rt = RuntimeConf(record.container_id, staging, ifname, cni_args, caps)
            log.info("pod %s: adding %s beside %s", ctx.pod_key, key, old.network)
            try:
                result = ctx.cni.add_network_list(new_net, rt)
            except CNIError as exc:
                raise type(exc)(f"pod {ctx.pod_key}: network {key} cannot take "
                                f"{', '.join(map(str, addresses))}: {exc.msg}",
                                exc.details, code=exc.code) from exc
            got = _sandbox_addresses(result, ifname)
            if not self.renumber and {a.ip for a in got} != {a.ip for a in addresses}:
                raise MigrationFailed(
                    f"pod {ctx.pod_key}: network {key} gave "
                    f"{', '.join(map(str, got)) or 'no address'}, not the pod's "
                    f"{', '.join(map(str, addresses))}")
            self._step("added")
            snap = run_in_netns(staging, snapshot_iface, ifname)
            sysctls = run_in_netns(staging, iface_sysctls, ifname)
            # Hold back the host routes the new delegate made to the pod's address (ptp's
            # /32): until the pod answers on the new link, the host must use the old one.
            held = [(dev, r) for a in got for dev, r in host_routes_to(a.ip)
                    if (dev, r.dst) not in before]
            for dev, route in held:
                del_route(route.dst, ifname=dev, gateway=route.gateway, missing_ok=True)
            tmp = _free_name(podns, "mig")
            old_snap = run_in_netns(podns, snapshot_iface, ifname)
            # The old network's host routes to the address (ptp's /32) would keep sending
            # the pod's traffic to the interface it is leaving: the switch takes them.
            new_host = {i.name for i in result.interfaces if not i.sandbox}
            old_host = {i.name for i in old_result.interfaces if not i.sandbox} - new_host
            old_routes = [(dev, route) for a in got for dev, route in host_routes_to(a.ip)
                          if dev in old_host]
            # Segments the pod leaves that stay (a bridge and its other pods): the node
            # answers for the address there.
            proxy_plan = [{"device": dev, "address": str(a.ip)} for dev in sorted(old_host)
                          if bridge_ports(dev) for a in got
                          if any(a.ip in b.network for b in old_snap.addresses)]
            # What undoing the rest needs after a crash (see _finish_interrupted).
            intent.update({
                "tmp": tmp, "addresses": [str(a) for a in old_snap.addresses],
                "noPrefixRoute": [str(a) for a in old_snap.no_prefix_route],
                "routes": [_route_json(r) for r in old_snap.routes + old_snap.kernel_routes],
                "hostRoutes": [[dev, _route_json(r)] for dev, r in old_routes],
                "proxies": proxy_plan})
            ctx.records.save(record)
            run_in_netns(staging, move_link, ifname, podns, tmp)
            undo.push(f"move {tmp} back to the staging netns", run_in_netns, podns,
                      move_link, tmp, staging, ifname)
            # Per-interface sysctls the new network's plugins set (tuning) stay behind in
            # the staging netns: set them again before the interface carries anything.
            refused = run_in_netns(podns, set_iface_sysctls, tmp, sysctls)
            if refused:
                log.warning("pod %s: the pod's namespace refused the sysctls %s of %s",
                            ctx.pod_key, ", ".join(refused), key)
            self._step("moved")
            self._switch_over(undo, podns, ifname, tmp, snap, old_snap, held,
                                        old_routes, proxy_plan, got)
            self._step("switched")
        # Committed: from here on, the pod is on the new network.
        remove_netns(staging_name)
        new.result = _with_sandbox(result, staging, podns)
        new.state = ADDED
        new.switch = None
        new.default = True
        record.attachments.remove(new)
        record.attachments.insert(record.attachments.index(old), new)
        old.default = False
        moved = {str(a.ip) for a in got}
        for back in [p for p in record.proxies if p["address"] in moved]:
            # Back on (or off) the segment it was proxied on: the node stops answering.
            delete_proxy_neighbour(back["device"], ipaddress.ip_address(back["address"]))
        record.proxies = [p for p in record.proxies if p["address"] not in moved] + proxy_plan
        ctx.records.save(record)
        errors = self.plugin._detach(ctx, record, [old], podns)
        if errors:
            # The old attachment stays in the record, orphaned: its link goes now (it is
            # down and carries nothing; the new interface takes its name next), and its
            # DEL is retried without a netns (the next migrate, the pod's DEL), so that it
            # releases its address and host-side state and never touches the new interface.
            log.warning("pod %s: DEL of the old network %s failed (kept in the record): %s",
                        ctx.pod_key, old.network, errors[0])
            run_in_netns(podns, delete_link, ifname)
            old.state = ORPHANED
            ctx.records.save(record)
        try:
            run_in_netns(podns, rename_link, tmp, ifname)
        except CNIError as exc:
            raise MigrationFailed(f"pod {ctx.pod_key}: switched to {key}, but its interface "
                                  f"{tmp} could not be renamed {ifname}: {exc.msg}") from exc
        run_in_netns(podns, _announce, ifname, [a.ip for a in got])
        self._update_caches(ctx, record, new_net, new)
        self.plugin._write_status(ctx, record, _pod(ctx))
        self.prune_proxies()
        report.status = "switched"
        report.addresses = [str(a) for a in got]
        report.proxies = proxy_plan

    def _undo_switch(self, ctx: _Context, record: PodRecord, new: Attachment) -> None:
        """DEL the ``switching`` attachment ``new`` (in its staging netns, see
        Multus._runtime_conf); it leaves the record, with its staging netns, temporary
        interface and proxy entries, only when that DEL succeeded."""
        errors = self.plugin._detach(ctx, record, [new], record.netns)
        if errors:
            raise MigrationFailed(f"{errors[0].msg} (kept in the record: the next migrate "
                                  "or the pod's DEL retries it)", errors[0].details)

    def _switch_over(self, undo: Undo, podns: str, ifname: str, tmp: str, snap: Any,  # noqa: PLR0917
                     old_snap: Any, held: list[tuple[str, Any]],
                     old_routes: list[tuple[str, RouteInfo]], proxy_plan: list[dict[str, str]],
                     got: list[IPInterface]) -> None:
        """Step 3 of the module docstring; the undo steps pushed on ``undo``."""
        with enter(podns) as pod:
            pod.call(add_addresses, tmp, snap.addresses, no_prefix_route=snap.no_prefix_route)
            undo.push(f"take the addresses off {tmp}", run_in_netns, podns, remove_addresses,
                      tmp, snap.addresses)
            # Also undoes the set_link_down below: up with its addresses again (down, it
            # lost its IPv6 ones: keep_addr_on_down is 0), then its routes.
            undo.push(f"give {ifname} back its addresses and routes", run_in_netns, podns,
                      _restore_iface, ifname, old_snap.addresses, old_snap.no_prefix_route,
                      old_snap.routes + old_snap.kernel_routes)
            pod.call(take_over_routes, tmp, snap.routes)
            # The pod's new MAC, told to the segment it joins (its peers, a bridge's FDB).
            pod.call(_announce, tmp, [a.ip for a in got])
            for dev, route in old_routes:
                del_route(route.dst, ifname=dev, gateway=route.gateway, missing_ok=True)
                undo.push(f"give back the route to {route.dst} via {dev}", _add_host_route,
                          dev, route)
            for dev, route in held:
                _add_host_route(dev, route)
                undo.push(f"hold back the route to {route.dst} via {dev}", del_route,
                          route.dst, ifname=dev, gateway=route.gateway, missing_ok=True)
            for entry in proxy_plan:
                dev, ip = entry["device"], ipaddress.ip_address(entry["address"])
                add_proxy_neighbour(dev, ip)
                undo.push(f"remove the proxy entry {ip} on {dev}", delete_proxy_neighbour,
                          dev, ip)
            for dev in sorted({e["device"] for e in proxy_plan}):
                _announce(dev, [ipaddress.ip_address(e["address"])
                                          for e in proxy_plan if e["device"] == dev])
            self._step("proxied")
            # The old interface would still answer ARP for the address on the old segment.
            pod.call(set_link_down, ifname)

    def _update_caches(self, ctx: _Context, record: PodRecord, net: NetworkConfigList,
                       new: Attachment) -> None:
        """The delegates' cache entry says the pod's netns; the runtime's cached result of
        the pod (libcni's ``<cacheDir>/results``) carries the new interface."""
        if new.result is None:
            return
        delegates = ResultCache(f"{self.conf.cni_dir}/results")
        entry = delegates.read(net.name, record.container_id, new.interface)
        if entry is not None:
            entry.netns = record.netns
            entry.result = new.result
            delegates.write(entry)
        runtime = ResultCache(self.runtime_cache_dir)
        for cached in runtime.attachments(container_id=record.container_id):
            if cached.ifname != record.ifname or not cached.result:
                continue
            version = str(cached.result.get("cniVersion") or "1.0.0")
            try:
                cached.result = Result.from_json(new.result).convert(version).to_json()
            except CNIError as exc:
                log.warning("pod %s: cannot convert the new result for %s: %s", ctx.pod_key,
                            cached.network_name, exc)
                continue
            runtime.write(cached)

    def prune_proxies(self) -> None:
        """Drop the proxy entries of segments no pod is on any more (no bridge ports), and
        of pods whose record is gone."""
        records = _context(self.conf, PodRecord("x", "", "eth0"), None,
                           self.cni_path).records
        for record in records.all():
            if not record.proxies:
                continue
            with records.lock(record.container_id, record.ifname):
                fresh = records.load(record.container_id, record.ifname)
                if fresh is None:
                    continue
                keep = []
                for proxy in fresh.proxies:
                    if bridge_ports(proxy["device"]):
                        keep.append(proxy)
                    else:
                        delete_proxy_neighbour(proxy["device"],
                                               ipaddress.ip_address(proxy["address"]))
                if keep != fresh.proxies:
                    fresh.proxies = keep
                    records.save(fresh)


def select_records(conf: MultusConfig, *, pod: str = "", namespace: str = "",
                   node: str = "", source: ClusterSource | None = None) -> list[PodRecord]:
    """The pods recorded on this node that ``--pod NS/NAME``, ``--namespace NS`` or
    ``--node NODE`` names (with a source, pods the API server places on another node are
    left out)."""
    records = _context(conf, PodRecord("x", "", "eth0"), None, None).records.all()
    if pod:
        namespace_part, _, name = pod.partition("/")
        if not name:
            raise InvalidNetworkConfig(f"--pod: expected namespace/name, got {pod!r}")
        return [r for r in records if r.pod.get("namespace") == namespace_part
                and r.pod.get("name") == name]
    if namespace:
        return [r for r in records if r.pod.get("namespace") == namespace]
    if node and source is not None:
        out = []
        for r in records:
            try:
                info = source.pod(r.pod.get("namespace", ""), r.pod.get("name", ""))
            except CNIError:
                continue
            if not info.node or info.node == node:
                out.append(r)
        return out
    return records



def set_cluster_network(path: str, network: str) -> None:
    """Make ``network`` the cluster network of new pods: rewrite the multus config at
    ``path`` atomically (``clusterNetwork``; an inline ``delegates`` list of one goes)."""
    import json

    from ..spec import decode_json_object
    from ..store import atomic_write

    try:
        raw = decode_json_object(Path(path).read_bytes(), f"multus config {path}")
    except OSError as exc:
        raise InvalidNetworkConfig(f"cannot read the multus config {path}: "
                                   f"{exc.strerror}") from exc
    delegates = raw.get("delegates") or []
    if isinstance(delegates, list) and len(delegates) > 1 and not raw.get("clusterNetwork"):
        raise InvalidNetworkConfig(
            f'{path}: "delegates" lists {len(delegates)} networks; with "clusterNetwork" set '
            "only the first would be replaced and the others dropped: edit it by hand")
    if isinstance(delegates, list) and len(delegates) <= 1:
        raw.pop("delegates", None)
    raw["clusterNetwork"] = network
    MultusConfig.parse(raw)  # what is written must load
    atomic_write(path, (json.dumps(raw, indent=2) + "\n").encode(), mode=0o644)


def migrate(conf_path: str, network: str, *, pod: str = "", namespace: str = "",
            node: str = "", renumber: bool = False, kubeconfig: str = "",
            runtime_cache_dir: str = RUNTIME_CACHE_DIR,
            source: ClusterSource | None = None) -> list[SwitchReport]:
    """``pycni migrate``: switch the selected pods of this node to ``network`` one by one;
    with ``node``, new pods get it too (the multus config's ``clusterNetwork``)."""
    from ..spec import decode_json_object

    try:
        raw = decode_json_object(Path(conf_path).read_bytes(), f"multus config {conf_path}")
    except OSError as exc:
        raise InvalidNetworkConfig(f"cannot read the multus config {conf_path}: "
                                   f"{exc.strerror}") from exc
    if kubeconfig:
        raw["kubeconfig"] = kubeconfig
    conf = MultusConfig.parse(raw)
    from ._kube import KubeSource

    owned = source is None and bool(conf.kubeconfig)
    if owned:
        source = KubeSource(conf.kubeconfig)
    try:
        migration = Migration(conf, source=source, runtime_cache_dir=runtime_cache_dir,
                              renumber=renumber)
        reports = [migration.switch(record, network) for record in
                   select_records(conf, pod=pod, namespace=namespace, node=node,
                                  source=source)]
        if node and all(r.status != "failed" for r in reports):
            set_cluster_network(conf_path, network)
        return reports
    finally:
        if owned and isinstance(source, KubeSource):
            source.close()
