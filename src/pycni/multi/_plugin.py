"""The ``multus`` meta plugin: a pod's cluster network plus the networks it asks for.

The runtime calls it once per pod (``CNI_IFNAME=eth0``) with a Multus configuration
(:mod:`pycni.multi._config`). ADD:

1. reads the pod named in CNI_ARGS (``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``, ``K8S_POD_UID``)
   from the API server when a ``kubeconfig`` is configured;
2. plans the attachments: the cluster network on ``CNI_IFNAME`` (or the NAD of
   ``v1.multus-cni.io/default-network``), then ``defaultNetworks``, then the pod's
   ``k8s.v1.cni.cncf.io/networks`` on ``net1``, ``net2``, ... unless named;
3. records the plan (:mod:`pycni.multi._record`), runs each delegate conflist in order
   through the runtime's chain logic, and on any failure deletes what it added, in reverse;
4. moves the default route where a ``default-route`` asked, records the results, writes the
   pod's network-status, and returns the cluster network's result.

DEL works from the record alone; CHECK, STATUS and GC reach every delegate.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..host import run_in_netns
from ..invoke import locate_plugin
from ..runtime import CNIConfig, DefaultExec, RuntimeConf, discover, load_file
from ..skel import CmdArgs, Plugin, parse_cni_args
from ..spec import (
    CNIError,
    GCAttachment,
    InternalError,
    InvalidNetworkConfig,
    NetworkConfigList,
    PluginNotFound,
    Result,
    valid_attachments,
)
from ._config import MultusConfig, delegate_from_json
from ._devices import KUBELET_CHECKPOINT, DeviceAllocator
from ._kube import ClusterSource, KubeSource, NadInfo, PodInfo
from ._record import ADDED, ORPHANED, SWITCHING, Attachment, PodRecord, PodRecords
from ._selection import (
    CAPABILITY_KEYS,
    DEFAULT_NETWORK_ANNOTATION,
    NETWORKS_ANNOTATION,
    RESOURCE_NAME_ANNOTATION,
    NetworkSelection,
    parse_default_network,
    parse_networks,
)
from ._status import network_status

log = logging.getLogger("pycni.multi")

#: How long ADD waits for ``readinessindicatorfile`` to appear (Multus waits too).
READINESS_TIMEOUT = 45.0


class _PreferInProcess(DefaultExec):
    """Delegates that ``pycni install`` wrote run in this process: the same code and state
    without an interpreter start per delegate."""

    def find(self, plugin_type: str, paths: Sequence[str]) -> str:
        """See :class:`pycni.runtime.PluginExec`."""
        return locate_plugin(plugin_type, paths, in_process="prefer")


@dataclass
class _Context:
    """One operation on one pod sandbox: a CNI call, or hot-plug on a live pod's record."""

    conf: MultusConfig
    container_id: str
    netns: str
    ifname: str
    cni_args: list[tuple[str, str]]
    pod_namespace: str
    pod_name: str
    pod_uid: str
    source: ClusterSource | None
    cni: CNIConfig
    records: PodRecords

    @property
    def pod_key(self) -> str:
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_name else "(no pod)"


class Multus(Plugin):
    """The Multus-compatible meta plugin (see the module docstring)."""

    type_name: ClassVar[str] = "multus"
    #: Tests replace this to drive the plugin without an API server.
    source_factory: ClassVar[Any] = KubeSource
    device_checkpoint: ClassVar[str] = KUBELET_CHECKPOINT

    # -- set-up -----------------------------------------------------------------------------

    def _context(self, args: CmdArgs) -> _Context:
        conf = MultusConfig.parse(args.conf.raw)
        pairs = parse_cni_args(args.args)
        values = dict(pairs)
        path = [p for p in conf.bin_dir.split(":") if p] if conf.bin_dir else list(args.path)
        source = self.source_factory(conf.kubeconfig) if conf.kubeconfig else None
        return _Context(
            conf=conf, container_id=args.container_id, netns=args.netns, ifname=args.ifname,
            cni_args=pairs,
            pod_namespace=values.get("K8S_POD_NAMESPACE", ""),
            pod_name=values.get("K8S_POD_NAME", ""),
            pod_uid=values.get("K8S_POD_UID", ""),
            source=source,
            cni=CNIConfig(path, f"{conf.cni_dir}/results", exec_=_PreferInProcess()),
            records=PodRecords(conf.cni_dir))

    @contextmanager
    def _logging(self, conf: MultusConfig) -> Iterator[None]:
        handlers: list[logging.Handler] = []
        if conf.log_file:
            try:
                handlers.append(logging.FileHandler(conf.log_file))
            except OSError as exc:
                raise InvalidNetworkConfig(f'invalid "logFile": cannot open {conf.log_file}: '
                                           f"{exc.strerror}") from exc
        if conf.log_to_stderr:
            handlers.append(logging.StreamHandler(sys.stderr))
        fmt = logging.Formatter("%(asctime)s multus %(levelname)s: %(message)s")
        old_level = log.level
        log.setLevel(conf.log_level)
        for handler in handlers:
            handler.setFormatter(fmt)
            handler.setLevel(conf.log_level)
            log.addHandler(handler)
        try:
            yield
        finally:
            for handler in handlers:
                log.removeHandler(handler)
                handler.close()
            log.setLevel(old_level)

    @staticmethod
    def _wait_ready(conf: MultusConfig) -> None:
        indicator = conf.readiness_indicator_file
        if not indicator:
            return
        deadline = time.monotonic() + READINESS_TIMEOUT
        while not Path(indicator).exists():
            if time.monotonic() > deadline:
                raise CNIError(
                    f"the cluster network is not ready: {indicator} "
                    f'("readinessindicatorfile") does not exist', code=11)
            time.sleep(0.2)

    # -- resolution -------------------------------------------------------------------------

    def _nad_network(self, ctx: _Context, sel: NetworkSelection) -> tuple[NetworkConfigList,
                                                                          NadInfo | None]:
        """The delegate configuration of a NAD (NPWG spec 2.2: ``spec.config``, else a file
        with the NAD's name in ``confDir``)."""
        if ctx.source is None:
            raise InvalidNetworkConfig(
                f'network {sel.key} is a NetworkAttachmentDefinition, but there is no '
                '"kubeconfig" to read it with')
        nad = ctx.source.nad(sel.namespace, sel.name)
        if nad is None:
            raise InvalidNetworkConfig(
                f"pod {ctx.pod_key}: NetworkAttachmentDefinition {sel.key} does not exist")
        where = f"NetworkAttachmentDefinition {sel.key} spec.config"
        if nad.config.strip():
            from ..spec import decode_json_object

            raw = decode_json_object(nad.config.encode(), where)
            return delegate_from_json(raw, where, default_name=sel.name), nad
        found = discover(ctx.conf.conf_dir)
        try:
            return found.find(sel.name).network, nad
        except InvalidNetworkConfig as exc:
            raise InvalidNetworkConfig(
                f"NetworkAttachmentDefinition {sel.key} has no spec.config and "
                f'{ctx.conf.conf_dir} ("confDir") has no network named "{sel.name}"',
                exc.details) from exc

    def _cluster_network(self, ctx: _Context, pod: PodInfo | None
                         ) -> tuple[str, NetworkConfigList]:
        """(the name network-status gives it, its configuration)."""
        conf = ctx.conf
        if pod is not None and pod.annotations.get(DEFAULT_NETWORK_ANNOTATION, "").strip():
            sel = parse_default_network(pod.annotations[DEFAULT_NETWORK_ANNOTATION],
                                        conf.multus_namespace)
            self._check_isolation(ctx, sel)
            return sel.key, self._nad_network(ctx, sel)[0]
        name = conf.cluster_network
        if not name:
            return conf.delegates[0].name, conf.delegates[0]
        if name.startswith("/"):
            return Path(name).stem, load_file(name)
        if ctx.source is not None:
            namespace, _, short = name.rpartition("/")
            sel = NetworkSelection(short, namespace or conf.multus_namespace)
            if ctx.source.nad(sel.namespace, sel.name) is not None:
                return sel.key, self._nad_network(ctx, sel)[0]
        try:
            return name, discover(conf.conf_dir).find(name).network
        except InvalidNetworkConfig as exc:
            raise InvalidNetworkConfig(
                f'invalid "clusterNetwork": no NetworkAttachmentDefinition and no network '
                f'named {name!r} in {conf.conf_dir} ("confDir")', exc.details) from exc

    @staticmethod
    def _check_isolation(ctx: _Context, sel: NetworkSelection) -> None:
        if ctx.pod_name and not ctx.conf.namespace_allowed(ctx.pod_namespace, sel.namespace):
            raise InvalidNetworkConfig(
                f"pod {ctx.pod_key} may not use NetworkAttachmentDefinition {sel.key}: "
                f'"namespaceIsolation" allows its own namespace and '
                f"{', '.join(sorted({*ctx.conf.global_namespaces, ctx.conf.multus_namespace}))}")

    def _plan(self, ctx: _Context) -> tuple[list[Attachment], PodInfo | None]:
        conf = ctx.conf
        pod: PodInfo | None = None
        if ctx.source is not None and ctx.pod_name:
            pod = ctx.source.pod(ctx.pod_namespace, ctx.pod_name)
            if ctx.pod_uid and pod.uid and pod.uid != ctx.pod_uid:
                raise CNIError(f"pod {ctx.pod_key} has UID {pod.uid} in the API server, the "
                               f"runtime asked for {ctx.pod_uid}: it was replaced", code=11)
        system = ctx.pod_namespace in conf.system_namespaces
        cluster_name, cluster = self._cluster_network(ctx, None if system else pod)
        plan = [Attachment(network=cluster_name, interface=ctx.ifname, default=True,
                           config=_config_json(cluster), cni_args=list(ctx.cni_args),
                           capability_args=dict(conf.runtime_config))]
        extra: list[tuple[NetworkSelection | None, NetworkConfigList, NadInfo | None]] = []
        if not conf.cluster_network:
            extra += [(None, net, None) for net in conf.delegates[1:]]
        for name in conf.default_networks:
            namespace, _, short = name.rpartition("/")
            sel = NetworkSelection(short, namespace or conf.multus_namespace)
            extra.append((sel, *self._nad_network(ctx, sel)))
        if pod is not None and not system:
            for asked in parse_networks(pod.annotations.get(NETWORKS_ANNOTATION, ""),
                                        ctx.pod_namespace):
                self._check_isolation(ctx, asked)
                extra.append((asked, *self._nad_network(ctx, asked)))
        devices = DeviceAllocator(pod.uid if pod else ctx.pod_uid, self.device_checkpoint)
        for number, (chosen, net, nad) in enumerate(extra, start=1):
            plan.append(self._attachment(ctx, number, chosen, net=net, nad=nad,
                                         devices=devices))
        seen: dict[str, str] = {}
        for att in plan:
            if att.interface in seen:
                raise InvalidNetworkConfig(
                    f"pod {ctx.pod_key}: networks {seen[att.interface]} and {att.network} "
                    f"both want interface {att.interface!r}")
            seen[att.interface] = att.network
        return plan, pod

    @staticmethod
    def _attachment(ctx: _Context, number: int, sel: NetworkSelection | None, *,
                    net: NetworkConfigList, nad: NadInfo | None,
                    devices: DeviceAllocator) -> Attachment:
        network = sel.key if sel is not None else net.name
        raw = _config_json(net)
        caps = dict(sel.capability_args) if sel is not None else {}
        declared = set(net.capabilities())
        missing = sorted(k for k in caps if k not in declared)
        if missing:
            wire = {v: k for k, v in CAPABILITY_KEYS.items()}
            raise InvalidNetworkConfig(
                f'pod {ctx.pod_key}: network {network} was asked for "{wire[missing[0]]}", '
                f'but none of its plugins ({", ".join(net.types)}) declares the capability '
                f'"{missing[0]}"', f"declared: {sorted(declared) or 'none'}")
        if sel is not None and sel.cni_args:
            for plugin in raw["plugins"]:
                plugin_args = plugin.setdefault("args", {})
                if not isinstance(plugin_args, dict):
                    raise InvalidNetworkConfig(f'network {network}: "args" of plugin '
                                               f'{plugin.get("type")} is not an object')
                plugin_args["cni"] = {**(plugin_args.get("cni") or {}), **sel.cni_args}
        device = ""
        resource = (nad.annotations.get(RESOURCE_NAME_ANNOTATION, "") if nad else "").strip()
        if resource and "deviceID" not in caps:
            device = devices.take(resource, network)
            raw["plugins"][0]["deviceID"] = device
            if "deviceID" in declared:
                caps["deviceID"] = device
        return Attachment(
            network=network,
            interface=(sel.interface if sel is not None else "") or f"net{number}",
            config=raw, cni_args=list(ctx.cni_args), capability_args=caps,
            default_route=list(sel.default_route) if sel is not None else [],
            device_id=device or str(caps.get("deviceID", "")))

    # -- commands ---------------------------------------------------------------------------

    def add(self, args: CmdArgs) -> Result:
        """Attach every network of the pod; see the module docstring."""
        ctx = self._context(args)
        with self._logging(ctx.conf):
            try:
                return self._add(ctx)
            finally:
                if isinstance(ctx.source, KubeSource):
                    ctx.source.close()

    def _add(self, ctx: _Context) -> Result:
        self._wait_ready(ctx.conf)
        plan, pod = self._plan(ctx)
        record = PodRecord(ctx.container_id, ctx.netns, ctx.ifname,
                           {"namespace": ctx.pod_namespace, "name": ctx.pod_name,
                            "uid": pod.uid if pod else ctx.pod_uid}, plan)
        with ctx.records.lock(ctx.container_id, ctx.ifname):
            results = self._attach(ctx, record, plan, pod)
        cluster_result = next((r for att, r in zip(plan, results, strict=True) if att.default),
                              None)
        if cluster_result is None:  # the plan always starts with the cluster network
            raise InternalError("the cluster network was not added")
        return cluster_result.convert(ctx.conf.cni_version) if (
            cluster_result.cni_version != ctx.conf.cni_version) else cluster_result

    def _attach(self, ctx: _Context, record: PodRecord, new: list[Attachment],
                pod: PodInfo | None) -> list[Result]:
        """Add ``new`` (already in ``record``) to the pod: record them as ``adding``, run
        their delegates in order, move the default route, record the results and write
        network-status; their results. On failure the ones this call added are deleted
        again (the record keeps any whose DEL failed) and the error is raised. The caller
        holds the lock."""
        ctx.records.save(record)
        results: list[Result] = []
        try:
            for att in new:
                net = att.network_config()
                log.info("pod %s: adding %s on %s", ctx.pod_key, att.network, att.interface)
                try:
                    result = ctx.cni.add_network_list(net, self._runtime_conf(ctx, att,
                                                                              ctx.netns))
                except CNIError as exc:
                    raise type(exc)(f"pod {ctx.pod_key}: network {att.network} "
                                    f"({att.interface}): {exc.msg}", exc.details,
                                    code=exc.code) from exc
                att.result = result.to_json()
                att.state = ADDED
                results.append(result)
            self._move_default_route(ctx, record.attachments)
            ctx.records.save(record)
            self._write_status(ctx, record, pod)
        except CNIError:
            self._undo(ctx, record, new)
            raise
        return results

    @staticmethod
    def _write_status(ctx: _Context, record: PodRecord, pod: PodInfo | None) -> None:
        if ctx.source is not None and pod is not None:
            ctx.source.set_network_status(
                pod, network_status([a for a in record.attachments if a.state == ADDED]))

    @staticmethod
    def _runtime_conf(ctx: _Context, att: Attachment, netns: str) -> RuntimeConf:
        if att.state == ORPHANED:
            # The pod's interface of that name is another network's now: the DEL releases
            # the address and host-side state only (a DEL without a netns does just that).
            netns = ""
        elif att.state == SWITCHING:
            netns = _staging_path(att)
        return RuntimeConf(ctx.container_id, netns, att.interface, list(att.cni_args),
                           dict(att.capability_args))

    def _undo(self, ctx: _Context, record: PodRecord, added: list[Attachment]) -> None:
        errors = self._detach(ctx, record, added, ctx.netns)
        if errors:
            log.warning("pod %s: undoing the failed ADD also failed (kept in the record "
                        "for DEL): %s", ctx.pod_key, errors[0])

    @staticmethod
    def _move_default_route(ctx: _Context, plan: list[Attachment]) -> None:
        """Point the pod's default route(s) at the attachment whose selection asked for it,
        taking it from every other interface of the pod (the cluster network's)."""
        wanted = [att for att in plan if att.default_route]
        if not wanted:
            return
        import ipaddress

        from ..host import add_route, del_route

        def move() -> None:
            for att in wanted:
                for gateway_text in att.default_route:
                    gateway = ipaddress.ip_address(gateway_text)
                    anywhere = ipaddress.ip_network("0.0.0.0/0" if gateway.version == 4
                                                    else "::/0")
                    for other in plan:
                        if other.interface != att.interface:
                            del_route(anywhere, ifname=other.interface, missing_ok=True)
                    add_route(anywhere, ifname=att.interface, gateway=gateway, exist_ok=True)

        try:
            run_in_netns(ctx.netns, move)
        except CNIError as exc:
            raise type(exc)(f"pod {ctx.pod_key}: cannot set the requested default route: "
                            f"{exc.msg}", exc.details, code=exc.code) from exc

    def delete(self, args: CmdArgs) -> None:
        """Detach every recorded network, in reverse; see :mod:`pycni.multi._record`."""
        ctx = self._context(args)
        with self._logging(ctx.conf):
            try:
                # A namespace that is gone is not passed on: plugins clean up without one.
                netns = args.netns if args.netns and Path(args.netns).exists() else ""
                with ctx.records.lock(args.container_id, args.ifname):
                    record = ctx.records.load(args.container_id, args.ifname)
                    if record is None:
                        self._delete_without_record(ctx, netns)
                        return
                    self._delete_record(ctx, record, netns)
            finally:
                if isinstance(ctx.source, KubeSource):
                    ctx.source.close()

    def _delete_without_record(self, ctx: _Context, netns: str) -> None:
        """No record: nothing was added by a pycni ADD (or the record's directory is new).
        DEL the cluster network from the configuration anyway, as Multus does, without
        asking the API server: DEL of what is not there is success."""
        conf = ctx.conf
        net: NetworkConfigList | None = None
        if not conf.cluster_network:
            net = conf.delegates[0]
        elif conf.cluster_network.startswith("/"):
            net = load_file(conf.cluster_network)
        else:
            try:
                net = discover(conf.conf_dir).find(conf.cluster_network).network
            except InvalidNetworkConfig:
                log.info("pod %s: no record and no file for the cluster network; nothing "
                         "to delete", ctx.pod_key)
        if net is not None:
            ctx.cni.delete_network_list(net, RuntimeConf(
                ctx.container_id, netns, ctx.ifname, list(ctx.cni_args),
                dict(conf.runtime_config)))

    def _delete_record(self, ctx: _Context, record: PodRecord, netns: str) -> None:
        """DEL every attachment of the record; one error naming all that failed."""
        errors = self._detach(ctx, record, list(record.attachments), netns)
        if errors:
            first = errors[0]
            raise type(first)(f"pod {ctx.pod_key}: {len(errors)} of the pod's networks could "
                              f"not be deleted (kept for the next DEL): {first.msg}",
                              "; ".join(str(e) for e in errors), code=first.code)

    def _detach(self, ctx: _Context, record: PodRecord, which: list[Attachment],
                netns: str) -> list[CNIError]:
        """DEL the attachments ``which`` of ``record`` in reverse, through every one even
        when some fail. Each leaves the record when its DEL succeeded; the record is saved
        (or removed when nothing is left). The errors of those that stay. The caller holds
        the record's lock."""
        errors: list[CNIError] = []
        for att in reversed(which):
            try:
                ctx.cni.delete_network_list(att.network_config(),
                                            self._runtime_conf(ctx, att, netns))
            except CNIError as exc:
                if not (att.state != ADDED and isinstance(exc, PluginNotFound)):
                    log.warning("pod %s: DEL of %s (%s) failed: %s", ctx.pod_key,
                                att.network, att.interface, exc)
                    errors.append(exc)
                    continue
                # Its ADD never completed and its plugin does not exist: that plugin
                # never ran, so it holds nothing (the others' DELs ran all the same).
            if att.state == SWITCHING:
                _drop_switch(record, att)
            record.attachments = [a for a in record.attachments if a is not att]
        if record.attachments:
            ctx.records.save(record)
        else:
            _release_proxies(record.proxies)
            ctx.records.remove(record.container_id, record.ifname)
        return list(reversed(errors))

    def check(self, args: CmdArgs) -> None:
        """CHECK every recorded attachment."""
        ctx = self._context(args)
        record = ctx.records.load(args.container_id, args.ifname)
        if record is None:
            raise CNIError(f"no attachments recorded for container {args.container_id}",
                           code=3)
        for att in record.attachments:
            if att.state in (SWITCHING, ORPHANED):
                continue  # not the pod's (yet, any more): the next migrate or DEL ends it
            ctx.cni.check_network_list(att.network_config(),
                                       self._runtime_conf(ctx, att, args.netns))

    def _known_networks(self, ctx: _Context) -> dict[str, NetworkConfigList]:
        """Every delegate configuration this node uses: the configured ones and those in
        the records (NADs of running pods), by network name."""
        nets: dict[str, NetworkConfigList] = {}
        for net in ctx.conf.delegates:
            nets.setdefault(net.name, net)
        if ctx.conf.cluster_network and not ctx.conf.delegates:
            try:
                nets.setdefault(*reversed(self._cluster_network(ctx, None)))  # type: ignore[arg-type]
            except CNIError as exc:
                log.info("the cluster network cannot be resolved: %s", exc)
        for record in ctx.records.all():
            for att in record.attachments:
                try:
                    net = att.network_config()
                except CNIError:
                    continue
                nets.setdefault(net.name, net)
        return nets

    def status(self, args: CmdArgs) -> None:
        """STATUS of every delegate this node uses; the first failure is raised."""
        ctx = self._context(args)
        for net in self._known_networks(ctx).values():
            ctx.cni.status_network_list(net)

    def gc(self, args: CmdArgs) -> None:
        """Delete the pods the runtime no longer lists, then GC every delegate with the
        attachments that remain."""
        ctx = self._context(args)
        valid = valid_attachments(args.conf.raw)
        errors: list[CNIError] = []
        for record in ctx.records.all():
            if (record.container_id, record.ifname) in valid:
                continue
            netns = record.netns if record.netns and Path(record.netns).exists() else ""
            try:
                with ctx.records.lock(record.container_id, record.ifname):
                    fresh = ctx.records.load(record.container_id, record.ifname)
                    if fresh is not None:
                        self._delete_record(ctx, fresh, netns)
            except CNIError as exc:
                errors.append(exc)
        by_network: dict[str, list[GCAttachment]] = {}
        for record in ctx.records.all():
            for att in record.attachments:
                name = att.config.get("name", "")
                by_network.setdefault(str(name), []).append(
                    GCAttachment(record.container_id, att.interface))
        for name, net in self._known_networks(ctx).items():
            try:
                ctx.cni.gc_network_list(net, by_network.get(name, []))
            except CNIError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _release_proxies(proxies: list[dict[str, str]]) -> None:
    """Remove proxy ARP/NDP entries a live switch made (``{"device", "address"}``); one that
    cannot be removed is logged and the others still go."""
    import ipaddress

    from ..host import delete_proxy_neighbour

    for proxy in proxies:
        try:
            delete_proxy_neighbour(str(proxy["device"]),
                                   ipaddress.ip_address(str(proxy["address"])))
        except CNIError as exc:
            log.warning("cannot remove the proxy entry %s on %s: %s", proxy["address"],
                        proxy["device"], exc)


def _staging_path(att: Attachment) -> str:
    """The staging netns of a ``switching`` attachment, "" when it is gone."""
    from ..host import netns_path

    name = str((att.switch or {}).get("staging") or "")
    path = netns_path(name) if name else ""
    return path if path and Path(path).exists() else ""


def _drop_switch(record: PodRecord, att: Attachment) -> None:
    """After the DEL of a ``switching`` attachment: what its delegates did not make (the
    staging netns, the interface moved into the pod under a temporary name, which takes its
    host-side peer with it, and the proxy entries of the switch) goes too; each on its own,
    a failure is logged."""
    from ..host import delete_link, remove_netns, run_in_netns

    intent = att.switch or {}
    what = (f"pod {record.pod.get('name', record.container_id)}: cleaning up after the "
            f"interrupted switch to {att.network}")
    if intent.get("tmp") and record.netns and Path(record.netns).exists():
        try:
            run_in_netns(record.netns, delete_link, str(intent["tmp"]))
        except CNIError as exc:
            log.warning("%s: %s", what, exc)
    _release_proxies(list(intent.get("proxies") or []))
    if intent.get("staging"):
        try:
            remove_netns(str(intent["staging"]))
        except CNIError as exc:
            log.warning("%s: %s", what, exc)


def _config_json(net: NetworkConfigList) -> dict[str, Any]:
    """The conflist as a fresh object (a single config is already upconverted), at the
    version it will run with."""
    import copy
    import json

    raw = copy.deepcopy(net.raw) if "plugins" in net.raw else json.loads(net.source)
    raw["plugins"] = [copy.deepcopy(p) for p in net.plugins]
    raw["cniVersion"] = net.cni_version
    raw.pop("cniVersions", None)
    return dict(raw)
