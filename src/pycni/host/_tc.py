"""Traffic control for the bandwidth plugin: tbf/htb shaping, ifb devices, mirred redirect.

Runs in the calling thread's namespace (use inside ``NetNS.call``). The numbers follow
iproute2's ``tc`` arithmetic, as the reference plugin does: rate and burst arrive in bits,
the kernel wants bytes per second, a bucket size in scheduler ticks (``/proc/net/psched``)
and a queue limit in bytes sized for 25 ms of latency at the configured rate. The bucket
and the queue limit are 32-bit fields: values past them are clamped to the largest one
(the reference's uint32 conversions wrap around instead), and rates past 32 bits go in
``TCA_TBF_RATE64`` / ``TCA_HTB_RATE64``.

The kernel can only shape what a device *sends*. Traffic towards the container leaves
through the host veth, so ingress shaping sits on that veth's root. Traffic from the
container arrives on the host veth, so egress shaping redirects it (ingress qdisc + u32
match-all + mirred) to an ifb device, whose transmit side is then shaped.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Any

from ..spec import KernelError
from .links import _require, index_of, rtnl

#: Queue limit is sized for this much latency at the configured rate (tc's ``latency``).
LATENCY_MS = 25
#: Rate of the HTB class that carries unshaped traffic (100 Gbit/s in bytes, as upstream).
UNCAPPED_RATE = 100_000_000_000 // 8
#: HTB class minors: 1:1 is unshaped, 1:30 shaped (the reference plugin's numbering).
UNSHAPED_MINOR = 0x1
SHAPED_MINOR = 0x30
ROOT_HANDLE = 0x10000
INGRESS_HANDLE = 0xFFFF0000
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
TIME_UNITS_PER_SEC = 1_000_000
#: The largest value of the kernel's 32-bit tc fields (bucket ticks, queue limit, rate).
U32_MAX = 2**32 - 1
#: The largest rate in bytes per second the kernel holds (``TCA_TBF_RATE64``).
RATE64_MAX = 2**64 - 1
#: The largest bucket in bytes a config may ask for (the reference's "4GB" rule).
MAX_BURST_BYTES = U32_MAX - 1
_TCA_TBF_RATE64 = 4


def _tick_in_usec() -> float:
    # /proc/net/psched: t2us us2t clock_res hz, hex; the same formula as tc and libnetlink.
    try:
        with open("/proc/net/psched") as fh:
            t2us, us2t, clock_res, _ = (int(x, 16) for x in fh.read().split())
    except (OSError, ValueError):
        return 1.0
    return t2us / us2t * (clock_res / TIME_UNITS_PER_SEC)


def buffer_ticks(rate_bytes: int, burst_bytes: int) -> int:
    """The tbf/htb bucket size: the time to send ``burst_bytes`` at ``rate_bytes``, in ticks.

    Clamped to the 32-bit field: kubelet's "no limit" burst (2**31-1 bits) at a few Mbit/s
    lasts longer than 2**32 ticks, and the longest bucket is the closest to what it asks.
    """
    usec = min(int(burst_bytes * TIME_UNITS_PER_SEC / rate_bytes), U32_MAX)
    return min(int(usec * _tick_in_usec()), U32_MAX)


def queue_limit(rate_bytes: int, burst_bytes: int) -> int:
    """The tbf queue limit in bytes: LATENCY_MS of traffic at the rate, plus the burst."""
    latency_bytes = min(int(rate_bytes * LATENCY_MS * 1000 / TIME_UNITS_PER_SEC), U32_MAX)
    return min(latency_bytes + min(burst_bytes, U32_MAX), U32_MAX)


def htb_burst_bytes(rate_bytes: int, burst_bytes: int) -> int:
    """The burst to hand pyroute2's htb encoder so its bucket fits the 32-bit field.

    pyroute2 turns the burst into ticks itself, without clamping; a burst whose bucket
    would overflow is replaced by the one of the longest bucket (one tick of margin for
    the rounding of its float arithmetic).
    """
    if int(int(burst_bytes * TIME_UNITS_PER_SEC / rate_bytes) * _tick_in_usec()) <= U32_MAX:
        return burst_bytes
    max_usec = int(U32_MAX / _tick_in_usec()) - 1
    return max(1, max_usec * rate_bytes // TIME_UNITS_PER_SEC)


@dataclass(frozen=True)
class Shaping:
    """One direction's limit: bits per second and bucket size in bits, plus subnet filters."""

    rate_bits: int
    burst_bits: int
    unshaped_subnets: tuple[str, ...] = ()
    shaped_subnets: tuple[str, ...] = ()

    @property
    def rate_bytes(self) -> int:
        """Bytes per second."""
        return self.rate_bits // 8

    @property
    def burst_bytes(self) -> int:
        """Bucket size in bytes."""
        return self.burst_bits // 8

    @property
    def uses_subnets(self) -> bool:
        """Subnet filters need HTB classes; a plain limit uses TBF like the 1.1 reference."""
        return bool(self.unshaped_subnets or self.shaped_subnets)


def _u32_keys(subnet: str, peer_is_source: bool) -> tuple[int, list[str]]:
    """u32 match keys for the peer address in ``subnet`` (offsets into the IP header)."""
    net = ipaddress.ip_network(subnet, strict=False)
    if net.version == 4:
        offset = 12 if peer_is_source else 16
        mask = int(net.netmask)
        return ETH_P_IP, [f"0x{int(net.network_address):08x}/0x{mask:08x}+{offset}"]
    offset = 8 if peer_is_source else 24
    addr = int(net.network_address)
    mask = int(net.netmask)
    keys = []
    for word in range(4):
        shift = 96 - 32 * word
        wmask = (mask >> shift) & 0xFFFFFFFF
        if wmask:
            keys.append(f"0x{(addr >> shift) & 0xFFFFFFFF:08x}/0x{wmask:08x}+{offset + 4 * word}")
    return ETH_P_IPV6, keys or ["0x0/0x0+0"]


@functools.cache
def _tbf_message_class() -> Any:
    # pyroute2's tbf encoder computes the bucket itself (overflowing its 32-bit field for
    # long buckets) and has no TCA_TBF_RATE64; this message carries both as given. The
    # rate table is left out: the kernel computes rates itself since 3.13 (the reference
    # does not send one either).
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    class TbfParms(nla):  # type: ignore[misc]
        fields = (("rate_cell_log", "B"), ("rate_reserved", "B"), ("rate_overhead", "H"),
                  ("rate_cell_align", "h"), ("rate_mpu", "H"), ("rate", "I"),
                  ("peak_cell_log", "B"), ("peak_reserved", "B"), ("peak_overhead", "H"),
                  ("peak_cell_align", "h"), ("peak_mpu", "H"), ("peak", "I"),
                  ("limit", "I"), ("buffer", "I"), ("mtu", "I"))

    class TbfOptions(nla):  # type: ignore[misc]
        nla_map = (("TCA_TBF_UNSPEC", "none"), ("TCA_TBF_PARMS", "parms"),
                   ("TCA_TBF_RTAB", "hex"), ("TCA_TBF_PTAB", "hex"),
                   ("TCA_TBF_RATE64", "uint64"))
        parms = TbfParms

    class TbfMessage(tcmsg):  # type: ignore[misc]
        nla_map = tuple((name, "tbf_options" if name == "TCA_OPTIONS" else kind)
                        for name, kind in tcmsg.nla_map)
        tbf_options = TbfOptions

    return TbfMessage


def _add_tbf(ipr: Any, idx: int, shaping: Shaping) -> None:
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_NEWQDISC

    rate, burst = shaping.rate_bytes, shaping.burst_bytes
    opts: list[list[Any]] = [["TCA_TBF_PARMS", {
        "rate": min(rate, U32_MAX), "limit": queue_limit(rate, burst),
        "buffer": buffer_ticks(rate, burst)}]]
    if rate > U32_MAX:
        opts.append(["TCA_TBF_RATE64", rate])
    msg = _tbf_message_class()()
    msg["index"], msg["handle"], msg["parent"] = idx, ROOT_HANDLE, 0xFFFFFFFF
    msg["attrs"] = [["TCA_KIND", "tbf"], ["TCA_OPTIONS", {"attrs": opts}]]
    # pyroute2 0.9's synchronous nlm_request reads a status key that only its async
    # socket's constructor sets; the default (False) makes it return a tuple.
    ipr.status.setdefault("nlm_generator", False)
    ipr.nlm_request(msg, msg_type=RTM_NEWQDISC,
                    msg_flags=NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)


def _add_htb(ipr: Any, idx: int, shaping: Shaping, peer_is_source: bool) -> None:
    # With shapedSubnets only those are limited (default class unshaped); otherwise
    # everything is limited except unshapedSubnets.
    default = UNSHAPED_MINOR if shaping.shaped_subnets else SHAPED_MINOR
    ipr.tc("add", "htb", idx, ROOT_HANDLE, default=default)
    ipr.tc("add-class", "htb", idx, ROOT_HANDLE | UNSHAPED_MINOR, parent=ROOT_HANDLE,
           rate=UNCAPPED_RATE, ceil=UNCAPPED_RATE, burst=shaping.burst_bytes or 1)
    ipr.tc("add-class", "htb", idx, ROOT_HANDLE | SHAPED_MINOR, parent=ROOT_HANDLE,
           rate=shaping.rate_bytes, ceil=shaping.rate_bytes,
           burst=htb_burst_bytes(shaping.rate_bytes, shaping.burst_bytes))
    subnets, target = ((shaping.shaped_subnets, SHAPED_MINOR) if shaping.shaped_subnets
                       else (shaping.unshaped_subnets, UNSHAPED_MINOR))
    for prio, subnet in enumerate(subnets, start=1):
        proto, keys = _u32_keys(subnet, peer_is_source)
        ipr.tc("add-filter", "u32", idx, parent=ROOT_HANDLE, prio=prio, protocol=proto,
               target=ROOT_HANDLE | target, keys=keys)


def _shape(ipr: Any, idx: int, shaping: Shaping, peer_is_source: bool) -> None:
    if shaping.uses_subnets:
        _add_htb(ipr, idx, shaping, peer_is_source)
    else:
        _add_tbf(ipr, idx, shaping)


def shape_ingress(host_ifname: str, shaping: Shaping) -> None:
    """Limit traffic towards the container: a root qdisc on the host veth."""
    with rtnl() as ipr:
        idx = _require(ipr, host_ifname)
        try:
            _shape(ipr, idx, shaping, peer_is_source=True)
        except Exception as exc:
            raise KernelError(f"failed to add ingress shaping on {host_ifname!r}: {exc}") from exc


def create_ifb(name: str, mtu: int, txqlen: int) -> str:
    """Create and bring up ifb ``name`` with the host veth's MTU and queue length; its MAC."""
    with rtnl() as ipr:
        try:
            ipr.link("add", ifname=name, kind="ifb", mtu=mtu)
            idx = _require(ipr, name)
            # Set separately: pyroute2 drops a zero txqlen from "add", and veths made by
            # bridge/ptp have txqlen 0, which the ifb should mirror.
            ipr.link("set", index=idx, txqlen=txqlen)
            ipr.link("set", index=idx, state="up")
            return str(ipr.link("get", index=idx)[0].get("IFLA_ADDRESS", ""))
        except KernelError:
            raise
        except Exception as exc:
            raise KernelError(f"failed to create ifb device {name!r}: {exc}") from exc


def shape_egress(host_ifname: str, ifb_name: str, shaping: Shaping) -> None:
    """Limit traffic from the container: redirect the host veth's ingress to ``ifb_name``."""
    with rtnl() as ipr:
        idx = _require(ipr, host_ifname)
        ifb = _require(ipr, ifb_name)
        try:
            ipr.tc("add", "ingress", idx, INGRESS_HANDLE)
            ipr.tc("add-filter", "u32", idx, parent=INGRESS_HANDLE, prio=1, protocol=ETH_P_ALL,
                   target=ROOT_HANDLE | 1, keys=["0x0/0x0+0"],
                   action={"kind": "mirred", "direction": "egress", "action": "redirect",
                           "ifindex": ifb})
            _shape(ipr, ifb, shaping, peer_is_source=False)
        except Exception as exc:
            raise KernelError(f"failed to redirect {host_ifname!r} to {ifb_name!r} and shape "
                              f"it: {exc}") from exc


def clear_root_qdisc(ifname: str) -> None:
    """Remove the root and ingress qdiscs from ``ifname`` (the kernel default comes back)."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return
        for kind, handle in (("ingress", INGRESS_HANDLE), (None, ROOT_HANDLE)):
            try:
                if kind:
                    ipr.tc("del", kind, idx, handle)
                else:
                    ipr.tc("del", index=idx, handle=handle, parent=0xFFFFFFFF)
            except Exception:  # noqa: S112 - absent qdiscs are the normal case
                continue


@dataclass(frozen=True)
class QdiscInfo:
    """What a link's root qdisc is, for CHECK: kind, rate (bytes/s), bucket (ticks), limit."""

    kind: str
    rate_bytes: int = 0
    buffer: int = 0
    default_class: int = 0
    limit: int = 0


def root_qdisc(ifname: str) -> QdiscInfo | None:
    """The root qdisc of ``ifname`` (None if the link is gone or has the default one)."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return None
        for msg in ipr.get_qdiscs(index=idx):
            if msg["parent"] != 0xFFFFFFFF:
                continue
            kind = msg.get("TCA_KIND")
            opts = msg.get("TCA_OPTIONS")
            if kind == "tbf" and opts is not None:
                parms = opts.get("TCA_TBF_PARMS")
                rate = _tbf_rate64(opts) or int(parms["rate"])
                return QdiscInfo("tbf", rate, int(parms["buffer"]), limit=int(parms["limit"]))
            if kind == "htb" and opts is not None:
                init = opts.get("TCA_HTB_INIT") or {}
                default = int(init.get("defcls", 0)) if hasattr(init, "get") else 0
                shaped = _htb_class(ipr, idx, ROOT_HANDLE | SHAPED_MINOR)
                return QdiscInfo("htb", shaped[0], shaped[1], default)
            return QdiscInfo(str(kind))
        return None


def _tbf_rate64(opts: Any) -> int:
    # pyroute2's tbf decoder does not know TCA_TBF_RATE64 (type 4) and keeps it as an
    # unnamed attribute: read its u64 payload from the message buffer after the header.
    for attr in opts.get_attrs("UNKNOWN"):
        if attr.get("header", {}).get("type") == _TCA_TBF_RATE64:
            return int(struct.unpack_from("=Q", attr.data, attr.offset + 4)[0])
    return 0


def _htb_class(ipr: Any, idx: int, handle: int) -> tuple[int, int]:
    for msg in ipr.get_classes(index=idx):
        if msg["handle"] != handle:
            continue
        opts = msg.get("TCA_OPTIONS")
        parms = opts.get("TCA_HTB_PARMS")
        return int(opts.get("TCA_HTB_RATE64") or parms["rate"]), int(parms["buffer"])
    return 0, 0


def has_ingress_redirect(ifname: str, target_ifname: str) -> bool:
    """True if ``ifname`` has an ingress qdisc with a filter redirecting to ``target_ifname``."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        target = index_of(ipr, target_ifname)
        if idx is None or target is None:
            return False
        # pyroute2 has no typed accessor for an action list nested in a u32 filter; the
        # mirred parameters render as a dict, so look for their target index there.
        pattern = re.compile(rf"'eaction': 1, 'ifindex': {target}\b")
        return any(pattern.search(str(msg))
                   for msg in ipr.get_filters(index=idx, parent=INGRESS_HANDLE))
