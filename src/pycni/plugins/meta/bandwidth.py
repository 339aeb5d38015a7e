"""bandwidth: limit a container's ingress and egress rate with tc on the host side.

Example config (a chained plugin, after bridge or ptp)::

    {"type": "bandwidth", "capabilities": {"bandwidth": true},
     "ingressRate": 8000000, "ingressBurst": 800000,
     "egressRate": 8000000, "egressBurst": 800000}

Rates are bits per second and bursts bits, at the top level or in
``runtimeConfig.bandwidth`` (capability ``bandwidth``, CONVENTIONS.md); top-level keys win.
Ingress (towards the container) is a tbf on the host veth; egress goes through an ifb
device named from the network name and container id like the reference (``bwp`` + hash),
fed by an ingress qdisc with a mirred redirect on the host veth and shaped with a tbf.
``shapedSubnets`` / ``unshapedSubnets`` switch to htb classes with u32 filters on the peer
address. DEL removes the ifb; GC removes ifbs of this network whose container is gone.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from ...host import (
    MAX_BURST_BYTES,
    RATE64_MAX,
    Shaping,
    Undo,
    buffer_ticks,
    clear_root_qdisc,
    create_ifb,
    delete_link,
    has_ingress_redirect,
    htb_burst_bytes,
    link_by_index,
    link_info,
    list_links,
    queue_limit,
    require_link,
    root_qdisc,
    set_alias,
    shape_egress,
    shape_ingress,
)
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import IFNAME_MAX, Interface, InvalidNetworkConfig, KernelError, Result
from ...store import fit_name
from .._fields import int_field, require_prev_result, str_list, valid_attachments

IFB_PREFIX = "bwp"
#: ifalias of our ifb devices: the prefix, then ``<network>/<containerID>``; GC reads it.
ALIAS_PREFIX = "pycni-bandwidth:"
#: The kernel keeps an ifalias of at most IFALIASZ - 1 bytes and refuses a longer one.
ALIAS_MAX = 255
#: Rates in bits per second: one byte per second up to what TCA_TBF_RATE64 holds.
_MIN_RATE_BITS = 8
_MAX_RATE_BITS = 8 * RATE64_MAX + 7
#: Bursts in bits: the reference refuses 4 GiB and more (burst/8 >= 2**32-1).
_MAX_BURST_BITS = 8 * MAX_BURST_BYTES + 7

_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst", "unshapedSubnets",
         "shapedSubnets")


@dataclass(frozen=True)
class BandwidthConfig:
    """The limits in effect for one call."""

    ingress: Shaping | None
    egress: Shaping | None
    unshaped_subnets: tuple[str, ...] = ()
    shaped_subnets: tuple[str, ...] = ()

    @property
    def is_zero(self) -> bool:
        """Nothing to shape: ADD passes the result through untouched."""
        return self.ingress is None and self.egress is None

    @classmethod
    def load(cls, args: CmdArgs) -> BandwidthConfig:
        """Read the top-level entry, else ``runtimeConfig.bandwidth``; validate it."""
        raw = args.conf.raw
        entry: Any = raw if any(k in raw for k in _KEYS) else args.conf.runtime_config.get(
            "bandwidth")
        what = "" if entry is raw else "runtimeConfig.bandwidth."
        if entry is None:
            return cls(None, None)
        if not isinstance(entry, dict):
            raise InvalidNetworkConfig('invalid "runtimeConfig.bandwidth": expected an object')
        unshaped = tuple(str_list(entry, "unshapedSubnets", what=what))
        shaped = tuple(str_list(entry, "shapedSubnets", what=what))
        directions = []
        for name in ("ingress", "egress"):
            rate = int_field(entry, f"{name}Rate", what=what) or 0
            burst = int_field(entry, f"{name}Burst", what=what) or 0
            if burst == 0 and rate != 0:
                raise InvalidNetworkConfig(f"if {name}Rate is set, {name}Burst must also be set")
            if rate == 0 and burst != 0:
                raise InvalidNetworkConfig(f"if {name}Burst is set, {name}Rate must also be set")
            if burst > _MAX_BURST_BITS:
                raise InvalidNetworkConfig(
                    f'invalid "{what}{name}Burst": expected at most {_MAX_BURST_BITS} bits '
                    f"(a tc bucket cannot be more than 4GB), got {burst}")
            if rate and not _MIN_RATE_BITS <= rate <= _MAX_RATE_BITS:
                raise InvalidNetworkConfig(
                    f'invalid "{what}{name}Rate": expected bits per second between '
                    f"{_MIN_RATE_BITS} and {_MAX_RATE_BITS} (what tc can hold), got {rate}")
            directions.append(Shaping(rate, burst, unshaped, shaped) if rate else None)
        return cls(directions[0], directions[1], unshaped, shaped)

    def validate_subnets(self) -> None:
        """The reference's rules: not both lists, and every entry a CIDR."""
        if self.unshaped_subnets and self.shaped_subnets:
            raise InvalidNetworkConfig("unshapedSubnets and shapedSubnets cannot be both "
                                       "specified, one of them should be discarded")
        for subnet in (*self.unshaped_subnets, *self.shaped_subnets):
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError as exc:
                raise InvalidNetworkConfig(f"bad subnet {subnet!r} provided: {exc}") from exc
            if "/" not in subnet:
                raise InvalidNetworkConfig(f"bad subnet {subnet!r} provided: no prefix length")


def ifb_name(network: str, container_id: str) -> str:
    """The reference's ifb name: ``bwp`` + sha512(network + container id), 15 bytes."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return (IFB_PREFIX + digest)[:IFNAME_MAX]


def ifb_alias(network: str, container_id: str) -> str:
    """The ifalias GC recognises our ifb by; hashed past the kernel's limit (long IDs)."""
    return fit_name(f"{ALIAS_PREFIX}{network}/{container_id}", limit=ALIAS_MAX)


def host_interface(args: CmdArgs, result: Result) -> str:
    """The host end of the container interface's veth, which prevResult must list."""
    if not result.interfaces:
        raise InvalidNetworkConfig("no interfaces provided in prevResult")
    with enter_netns(args.netns) as ns:
        cont = ns.call(link_info, args.ifname)
    peer = cont.link_index if cont is not None else None
    if not peer:
        raise KernelError(f"container interface {args.ifname!r} has no veth peer")
    found = link_by_index(peer)
    if found is None:
        raise KernelError(f"veth peer with index {peer} is not in the host namespace")
    name = found.name
    if not any(i.name == name and not i.sandbox for i in result.interfaces):
        raise InvalidNetworkConfig(f"no veth peer of container interface {args.ifname!r} "
                                   f"found in prevResult (host side is {name!r})")
    return name


class Bandwidth(Plugin):
    """The ``bandwidth`` plugin."""

    type_name = "bandwidth"
    supported_versions: ClassVar[tuple[str, ...]] = tuple(
        v for v in Plugin.supported_versions if v not in ("0.1.0", "0.2.0"))

    def add(self, args: CmdArgs) -> Result:
        conf = BandwidthConfig.load(args)
        if conf.is_zero:
            return args.conf.prev_result or Result()
        conf.validate_subnets()
        prev = require_prev_result(args, "must be called as chained plugin")
        host = host_interface(args, prev)
        ifb = ifb_name(args.conf.name, args.container_id)
        with Undo() as undo:
            undo.push(f"remove the qdiscs of {host}", clear_root_qdisc, host)
            if conf.ingress is not None:
                shape_ingress(host, conf.ingress)
            if conf.egress is not None:
                veth = require_link(host)
                undo.push(f"delete ifb {ifb}", delete_link, ifb)
                mac = create_ifb(ifb, veth.mtu, veth.txqlen)
                set_alias(ifb, ifb_alias(args.conf.name, args.container_id))
                prev.interfaces.append(Interface(name=ifb, mac=mac))
                shape_egress(host, ifb, conf.egress)
        return prev

    def delete(self, args: CmdArgs) -> None:
        # The ifb is named from the network and container alone; the limits, which only
        # ADD needs to be consistent, are not read (a DEL that fails on them never ends).
        delete_link(ifb_name(args.conf.name, args.container_id))

    def check(self, args: CmdArgs) -> None:
        conf = BandwidthConfig.load(args)
        prev = require_prev_result(args, "must be called as a chained plugin")
        conf.validate_subnets()
        host = host_interface(args, prev)
        checks = []
        if conf.ingress is not None:
            checks.append((host, conf.ingress))
        if conf.egress is not None:
            ifb = ifb_name(args.conf.name, args.container_id)
            if not has_ingress_redirect(host, ifb):
                raise KernelError(f"{host!r} does not redirect its ingress to ifb {ifb!r}")
            checks.append((ifb, conf.egress))
        for ifname, shaping in checks:
            found = root_qdisc(ifname)
            want_kind = "htb" if shaping.uses_subnets else "tbf"
            if found is None or found.kind != want_kind:
                raise KernelError(f"{ifname!r} has root qdisc {found.kind if found else None!r},"
                                  f" expected {want_kind}")
            rate, burst = shaping.rate_bytes, shaping.burst_bytes
            if shaping.uses_subnets:
                burst = htb_burst_bytes(rate, burst)
            buffer = buffer_ticks(rate, burst)
            if (found.rate_bytes, found.buffer) != (rate, buffer):
                raise KernelError(f"{ifname!r} shapes to {found.rate_bytes} B/s bucket "
                                  f"{found.buffer}, config wants {rate} B/s bucket {buffer}")
            limit = queue_limit(rate, burst)
            if found.kind == "tbf" and found.limit != limit:
                raise KernelError(f"{ifname!r} queues {found.limit} bytes, config wants "
                                  f"{limit}")

    def gc(self, args: CmdArgs) -> None:
        # Compared by ifb name, not alias: the alias of a long container ID is hashed. The
        # network's prefix survives the hashing (fit_name keeps the first 128 bytes).
        valid = {ifb_name(args.conf.name, cid) for cid, _ in valid_attachments(args.conf.raw)}
        prefix = f"{ALIAS_PREFIX}{args.conf.name}/"
        for link in list_links():
            if link.alias.startswith(prefix) and link.name not in valid:
                delete_link(link.name)


main = Bandwidth.main
