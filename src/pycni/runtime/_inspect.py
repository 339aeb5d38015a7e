"""What a pod's attachments made, read back from the kernel and the IPAM stores.

:func:`inspect_target` finds the attachments of a pod (``NAMESPACE/NAME`` or ``NAME`` from
the K8S_POD_* CNI_ARGS), a netns (path or name under /run/netns) or a container ID (or a
unique prefix) in the result cache, then lists for each one the objects it made, each tied
to the plugin that made it:

* links: the interfaces of the result (both ends of a veth), their bridge and port flags;
* addresses and routes in the pod's namespace, policy rules (sbr), qdiscs (bandwidth);
* netfilter rules naming the container or its addresses (masquerade, portmap, firewall);
* host-local leases holding the container ID.

and the differences from the cached result: what is missing or changed, plus what each
plugin's CHECK (run in-process, pycni types only) reports. With no attachment recorded, the
report lists what is still left behind (for a container after its DEL: nothing).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import host
from ..invoke import REGISTRY, run_in_process
from ..spec import (
    CNIError,
    NetworkConfigList,
    Result,
    UnknownContainer,
    decode_json,
    version_at_least,
)
from ._cache import DEFAULT_CACHE_DIR, CachedAttachment, ResultCache

#: host-local's default dataDir.
DEFAULT_LEASE_DIR = "/var/lib/cni/networks"
#: The rules every namespace starts with (local, main, default).
_DEFAULT_RULES = {(0, "all", 255), (32766, "all", 254), (32767, "all", 253)}


@dataclass
class Item:
    """One kernel or store object an attachment made."""

    kind: str  # link, address, route, rule, qdisc, netfilter, lease
    plugin: str
    where: str  # "pod" (its netns), "host", or a file
    what: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttachmentReport:
    """One attachment: its key, chain, the objects found and the differences."""

    container_id: str
    network: str
    ifname: str
    netns: str
    plugins: list[str]
    objects: list[Item] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


@dataclass
class InspectReport:
    """Everything :func:`inspect_target` found for one target."""

    target: str
    attachments: list[AttachmentReport] = field(default_factory=list)
    leftovers: list[Item] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


def _matches(entry: CachedAttachment, target: str) -> bool:
    args = dict(entry.cni_args)
    pod = args.get("K8S_POD_NAME", "")
    namespace = args.get("K8S_POD_NAMESPACE", "")
    return (target in (entry.container_id, entry.netns, pod, f"{namespace}/{pod}")
            or (entry.netns and Path(entry.netns).name == target and "/" not in target)
            or (len(target) >= 6 and entry.container_id.startswith(target)))


def _netns_of(target: str) -> str | None:
    """``target`` as an existing netns path, if it is one (or a name under /run/netns)."""
    for candidate in (target, host.netns_path(target) if "/" not in target else ""):
        if candidate and Path(candidate).exists() and not Path(candidate).is_dir():
            return candidate
    return None


def _plugin_for(kind: str, chain: list[str], main: str) -> str:
    for wanted in {"qdisc": ("bandwidth",), "rule": ("sbr",)}.get(kind, ()):
        if wanted in chain:
            return wanted
    return main


def _netfilter_owner(rule: host.netfilter.RuleLine, chain: list[str], main: str) -> str:
    text = f"{rule.table} {rule.chain} {rule.rule}".lower()
    if "portmap" in chain and ("hostport" in text or "dnat" in text or "portmap" in text):
        return "portmap"
    if "firewall" in chain and ("firewall" in text or "cni-forward" in text
                                or "cni-admin" in text):
        return "firewall"
    return main  # ipMasq of the main plugin


def _leases(data_dir: str, network: str, container_id: str, ifname: str = ""
            ) -> list[Item]:
    directory = Path(data_dir, network)
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(directory.iterdir()):
            if path.name.startswith(("lock", "last_reserved_ip")):
                continue
            with contextlib.suppress(OSError, UnicodeDecodeError):
                lines = path.read_text().split()
                if lines and lines[0] == container_id and (not ifname or lines[1:2] == [ifname]):
                    found.append(Item("lease", "host-local", str(path), path.name,
                                      {"ifname": lines[1] if len(lines) > 1 else ""}))
    return found


def _link_item(link: host.LinkInfo, plugin: str, where: str,
               names: dict[int, str]) -> Item:
    details: dict[str, Any] = {"kind": link.kind or "device", "mac": link.mac, "mtu": link.mtu,
                               "up": link.up}
    if link.master is not None:
        details["master"] = names.get(link.master, str(link.master))
    if link.port:
        details["port"] = {k: v for k, v in link.port.items()
                           if k in ("hairpin", "isolated", "learning", "flood", "state")}
    if link.link_index is not None and link.kind == "veth":
        details["peer_ifindex"] = link.link_index
    return Item("link", plugin, where, link.name, details)


def _check_plugins(entry: CachedAttachment, net: NetworkConfigList,
                   result: Result) -> list[str]:
    """What each pycni plugin's CHECK says about the attachment (in-process)."""
    if not version_at_least(net.cni_version, "0.4.0"):
        return []
    env = {"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": entry.container_id,
           "CNI_NETNS": entry.netns, "CNI_IFNAME": entry.ifname,
           "CNI_ARGS": ";".join(f"{k}={v}" for k, v in entry.cni_args),
           "CNI_PATH": os.environ.get("CNI_PATH", "/opt/cni/bin")}
    out = []
    for index, ptype in enumerate(net.types):
        if ptype not in REGISTRY:
            continue
        stdin = net.plugin_stdin(index, prev_result=result,
                                 capability_args=entry.capability_args)
        status, stdout = run_in_process(ptype, env, stdin, source="inspect")
        if status:
            try:
                err = decode_json(stdout, "CHECK error")
                msg = f"{err.get('msg', '')}" + (f" ({err['details']})"
                                                  if err.get("details") else "")
            except CNIError:
                msg = stdout.decode(errors="replace")
            out.append(f"CHECK of {ptype} fails: {msg}")
    return out


def _report_one(entry: CachedAttachment, host_state: host.NamespaceState,
                lease_dir: str, *, run_check: bool) -> AttachmentReport:
    try:
        net = NetworkConfigList.parse(entry.config)
        chain = net.types
    except CNIError:
        net, chain = None, []
    main = chain[0] if chain else "?"
    rep = AttachmentReport(entry.container_id, entry.network_name, entry.ifname, entry.netns,
                           chain)
    try:
        result = Result.from_json(entry.result) if entry.result else None
    except CNIError as exc:
        rep.differences.append(f"the cached result is unreadable: {exc}")
        result = None
    try:
        pod = host.namespace_state(entry.netns) if entry.netns else None
    except CNIError:
        pod = None
        rep.differences.append(f"netns {entry.netns} is gone")
    host_names = {link.index: link.name for link in host_state.links}
    pod_links = {link.name: link for link in pod.links} if pod else {}
    pod_names = {link.index: link.name for link in pod.links} if pod else {}
    ifaces = result.interfaces if result else []
    seen_bridges: set[str] = set()
    for iface in ifaces:
        in_pod = bool(iface.sandbox)
        links = pod_links if in_pod else {link.name: link for link in host_state.links}
        link = links.get(iface.name)
        where = "pod" if in_pod else "host"
        if link is None:
            if in_pod and pod is None:
                continue
            rep.differences.append(f"interface {iface.name} ({where}) is in the result but "
                                   "not in the kernel")
            continue
        rep.objects.append(_link_item(link, main, where, pod_names if in_pod else host_names))
        if iface.mac and link.mac and iface.mac.lower() != link.mac and link.kind != "bridge":
            rep.differences.append(f"interface {iface.name} has MAC {link.mac}, the result "
                                   f"says {iface.mac.lower()}")
        if not in_pod and link.master is not None:
            bridge = host_names.get(link.master)
            if bridge and bridge not in seen_bridges and not any(
                    i.name == bridge for i in ifaces):
                seen_bridges.add(bridge)
                found = next(x for x in host_state.links if x.name == bridge)
                rep.objects.append(_link_item(found, main, "host", host_names))
    if pod is not None:
        wanted = {str(ip.address) for ip in (result.ips if result else [])}
        have: set[str] = set()
        for link in pod.links:
            for addr in link.addresses:
                if link.name == "lo" or addr.startswith("fe80:"):
                    continue
                have.add(addr)
                rep.objects.append(Item("address", main, "pod", addr, {"dev": link.name}))
        for missing in sorted(wanted - have):
            rep.differences.append(f"address {missing} is in the result but not in the pod's "
                                   "namespace")
        routes = {(r.dst, r.gateway) for r in pod.routes}
        for route in pod.routes:
            rep.objects.append(Item("route", main if route.table == 254 else
                                    _plugin_for("rule", chain, main), "pod", route.dst,
                                    {"gateway": route.gateway, "dev": route.dev,
                                     "table": route.table}))
        for want in (result.routes if result else []):
            gw = str(want.gw) if want.gw else None
            if not any(dst == str(want.dst) and (gw is None or g == gw) for dst, g in routes):
                rep.differences.append(f"route {want.dst}"
                                       + (f" via {gw}" if gw else "")
                                       + " is in the result but not in the pod's namespace")
        for rule in pod.rules:
            if (rule.priority, rule.src, rule.table) not in _DEFAULT_RULES:
                rep.objects.append(Item("rule", _plugin_for("rule", chain, main), "pod",
                                        f"from {rule.src} lookup {rule.table}",
                                        {"priority": rule.priority}))
        if "sbr" in chain and not any(i.kind == "rule" for i in rep.objects):
            rep.differences.append("sbr is in the chain but the pod has no source rule")
    ours = {i.what for i in rep.objects if i.kind == "link"}
    for q in [*host_state.qdiscs, *(pod.qdiscs if pod else ())]:
        if q.dev in ours or q.dev.startswith("bwp"):
            rep.objects.append(Item("qdisc", _plugin_for("qdisc", chain, main),
                                    "host" if q in host_state.qdiscs else "pod",
                                    f"{q.kind} on {q.dev}", {"parent": q.parent}))
    ips = [str(ip.address.ip) for ip in (result.ips if result else [])]
    for nf in host.netfilter.rules_mentioning([entry.container_id, *ips]):
        rep.objects.append(Item("netfilter", _netfilter_owner(nf, chain, main), "host",
                                nf.rule, {"backend": nf.backend, "table": nf.table,
                                          "chain": nf.chain}))
    rep.objects += _lease_items(net, entry, lease_dir)
    if net is not None and result is not None and run_check:
        rep.differences += _check_plugins(entry, net, result)
    return rep


def _lease_items(net: NetworkConfigList | None, entry: CachedAttachment,
                 default_dir: str) -> list[Item]:
    if net is None:
        return []
    items: list[Item] = []
    for plugin in net.plugins:
        ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else None
        if ipam and ipam.get("type") == "host-local":
            data_dir = str(ipam.get("dataDir") or default_dir)
            items += _leases(data_dir, entry.network_name, entry.container_id, entry.ifname)
        if ipam and ipam.get("type") == "dhcp":
            items.append(Item("lease", "dhcp", "dhcp daemon", "held by the dhcp daemon",
                              {"ifname": entry.ifname}))
    return items


def inspect_target(target: str, *, cache_dir: str = DEFAULT_CACHE_DIR,
                   lease_dir: str = DEFAULT_LEASE_DIR, run_check: bool = True
                   ) -> InspectReport:
    """The report for ``target`` (pod, netns or container ID); kernel reads happen in the
    calling thread's namespace (the node's).

    UnknownContainer when nothing is recorded for it, it is no netns, and nothing in the
    kernel or the lease store mentions it.
    """
    if not target:
        raise UnknownContainer("expected a pod name, netns or container ID, got nothing")
    cache = ResultCache(cache_dir)
    entries = [e for e in cache.attachments() if _matches(e, target)]
    host_state = host.namespace_state()
    report = InspectReport(target)
    for entry in entries:
        report.attachments.append(_report_one(entry, host_state, lease_dir,
                                              run_check=run_check))
    if entries:
        return report
    netns = _netns_of(target)
    if netns is not None:
        state = host.namespace_state(netns)
        for link in state.links:
            if link.name != "lo":
                report.leftovers.append(_link_item(link, "?", "pod", {}))
        return report
    report.leftovers += [Item("netfilter", "?", "host", r.rule, {"chain": r.chain})
                         for r in host.netfilter.rules_mentioning([target])]
    with contextlib.suppress(OSError):
        for network in sorted(Path(lease_dir).iterdir()):
            report.leftovers += _leases(lease_dir, network.name, target)
    if not report.leftovers:
        raise UnknownContainer(
            f"no pod, netns or container ID {target!r}: no attachment in "
            f"{cache.results_dir} matches it, it is no network namespace, and no rule or "
            "lease names it")
    return report


__all__ = ["AttachmentReport", "InspectReport", "Item", "inspect_target"]
