"""firewall: let a container's traffic through the host's forward filter, and isolate it.

Example config (chained after bridge)::

    {"type": "firewall", "backend": "iptables", "ingressPolicy": "same-bridge",
     "iptablesAdminChainName": "CNI-ADMIN"}

``backend`` is ``iptables`` (the default, as the reference picks when firewalld is not
running; ``nftables`` when the iptables tools are missing) or ``nftables`` (ours);
``firewalld`` is not supported. ``ingressPolicy``:

* ``open`` (default): no restriction;
* ``same-bridge``: the reference's CNI-ISOLATION-STAGE-1/2 chains: traffic from one
  same-bridge network's bridge into another's is dropped; within a bridge it flows;
* ``isolated`` (ours): the container accepts only packets of connections it is part of
  already; new connections towards it from other containers (same bridge or routed) are
  dropped. It can still open connections itself, and the host itself can still reach it.

ADD records the attachment in ``<dataDir>/<network>/`` (``dataDir`` defaults to
``/var/lib/cni/firewall``) so GC can remove the rules of attachments that are no longer valid;
DEL and GC remove that directory once its last record is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ...host import netfilter_backend
from ...host.netfilter.firewall import (
    BACKENDS,
    POLICIES,
    POLICY_OPEN,
    POLICY_SAME_BRIDGE,
    Attachment,
    FirewallBackend,
)
from ...skel import CmdArgs, Plugin
from ...spec import InvalidNetworkConfig, IOFailure, PluginNotAvailable, Result
from ...store import RecordStore
from .._fields import require_prev_result, str_default, str_field, valid_attachments

DEFAULT_DATA_DIR = "/var/lib/cni/firewall"


def _backend(args: CmdArgs) -> FirewallBackend:
    raw = args.conf.raw
    name = netfilter_backend(str_field(raw, "backend"))
    if name == "firewalld":
        raise InvalidNetworkConfig('backend "firewalld" is not supported by pycni',
                                   'use "iptables" or "nftables"')
    if name not in BACKENDS:
        raise InvalidNetworkConfig(f'unknown firewall backend "{name}"',
                                   f"expected one of {sorted(BACKENDS)}")
    if raw.get("firewalldZone"):
        raise InvalidNetworkConfig('"firewalldZone" only applies to the firewalld backend, '
                                   "which pycni does not support")
    if raw.get("iptablesAdminChainName") and name != "iptables":
        raise InvalidNetworkConfig('"iptablesAdminChainName" only applies to the iptables '
                                   f'backend, not "{name}"')
    return BACKENDS[name]()


def _attachment(args: CmdArgs, result: Result) -> Attachment:
    raw = args.conf.raw
    policy = str_default(raw, "ingressPolicy", POLICY_OPEN)
    if policy not in POLICIES:
        raise InvalidNetworkConfig(f"unknown ingress policy: {policy!r}",
                                   f"expected one of {list(POLICIES)}")
    admin = str_default(raw, "iptablesAdminChainName", "")
    if len(admin) > 28 or any(c.isspace() for c in admin):
        raise InvalidNetworkConfig(f'invalid "iptablesAdminChainName" {admin!r}: at most 28 '
                                   "characters, no spaces")
    bridge = ""
    if policy == POLICY_SAME_BRIDGE:
        if not result.interfaces or not result.interfaces[0].name:
            raise InvalidNetworkConfig(f'interface needs to be set for ingress policy "{policy}"'
                                       ', make sure to chain "firewall" plugin with "bridge"')
        bridge = result.interfaces[0].name
    return Attachment(network=args.conf.name, container_id=args.container_id,
                      ifname=args.ifname, ips=tuple(i.address for i in result.ips),
                      ingress_policy=policy, bridge=bridge, admin_chain=admin)


def _store(args: CmdArgs) -> RecordStore:
    data_dir = str_default(args.conf.raw, "dataDir", DEFAULT_DATA_DIR)
    return RecordStore(str(Path(data_dir) / args.conf.name))


def _teardown_backend(args: CmdArgs) -> FirewallBackend | None:
    """DEL's and GC's backend: the one named, whatever other options say; None for a name
    that is no backend (ADD refused it, so it wrote no rules)."""
    configured = args.conf.raw.get("backend")
    name = netfilter_backend(configured if isinstance(configured, str) else None)
    return BACKENDS[name]() if name in BACKENDS else None


def _teardown_store(args: CmdArgs) -> RecordStore:
    data_dir = args.conf.raw.get("dataDir")
    return RecordStore(str(Path(data_dir if isinstance(data_dir, str) and data_dir
                                else DEFAULT_DATA_DIR) / args.conf.name))


def _load(path: Path) -> Attachment | None:
    record = RecordStore.load(path)
    try:
        return Attachment.from_json(record) if record else None
    except (KeyError, TypeError, ValueError):
        return None


class Firewall(Plugin):
    """The ``firewall`` plugin."""

    type_name = "firewall"
    supported_versions: ClassVar[tuple[str, ...]] = tuple(
        v for v in Plugin.supported_versions if v not in ("0.1.0", "0.2.0", "0.3.0", "0.3.1"))

    def add(self, args: CmdArgs) -> Result:
        backend = _backend(args)
        prev = require_prev_result(args, "missing prevResult from earlier plugin")
        att = _attachment(args, prev)
        backend.add(att)
        try:
            _store(args).save(args.container_id, args.ifname, att.to_json())
        except OSError as exc:
            backend.delete(att)
            raise IOFailure(f"failed to write {exc.filename}: {exc.strerror}") from exc
        return prev

    def delete(self, args: CmdArgs) -> None:
        # ADD's rules about options (firewalld, options of the other backend, the ingress
        # policy) do not apply: the backend named and the attachment are all DEL needs.
        backend = _teardown_backend(args)
        store = _teardown_store(args)
        path = store.path(args.container_id, args.ifname)
        prev = args.conf.prev_result
        # prevResult names the addresses; without it, the record ADD left does.
        att = None
        if prev is not None:
            try:
                att = _attachment(args, prev)
            except InvalidNetworkConfig:
                att = None
        att = att or _load(path)
        if att is not None and backend is not None:
            backend.delete(att)
        RecordStore.remove(path)
        store.prune()

    def check(self, args: CmdArgs) -> None:
        backend = _backend(args)
        prev = require_prev_result(args, "missing prevResult from earlier plugin")
        backend.check(_attachment(args, prev))

    def status(self, args: CmdArgs) -> None:
        reason = _backend(args).unavailable()
        if reason:
            raise PluginNotAvailable(reason)

    def gc(self, args: CmdArgs) -> None:
        backend = _teardown_backend(args)
        valid = valid_attachments(args.conf.raw)
        store = _teardown_store(args)
        for path in store.records():
            att = _load(path)
            if att is not None and (att.container_id, att.ifname) in valid:
                continue
            if att is not None and backend is not None:
                backend.delete(att)
            RecordStore.remove(path)
        store.prune()


main = Firewall.main
