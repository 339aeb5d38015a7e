"""What the veth-based main plugins (bridge, ptp) share: IPAM delegation, rollback, masq.

The reference plugins release the IPAM lease on a failed ADD but leave the veth and the
masquerade rules behind, so a retry fails with "already exists". :func:`run_with_rollback`
hands ADD a :class:`~pycni.host.Undo` to record an undo step for everything it creates, and
runs them (newest first) when ADD fails.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable

from ... import host
from ...host import NetNSNotFound
from ...host import enter as enter_netns
from ...skel import CmdArgs, delegate, delegate_add, delegate_check, delegate_del
from ...spec import (
    CNIError,
    ErrorCode,
    InvalidNetworkConfig,
    IPInterface,
    KernelError,
    PluginNotAvailable,
    PluginNotFound,
    Result,
    bool_field,
    str_default,
    str_field,
)
from .._fields import valid_attachments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_HEX = frozenset("0123456789abcdefABCDEF")
#: Where the separators of ``aa:bb:cc:dd:ee:ff`` are.
_MAC_SEPARATORS = range(2, 17, 3)


def _is_mac(value: str) -> bool:
    """``re.fullmatch(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}", value)`` without compiling
    it: six pairs of ASCII hex digits, each separator ``:`` or ``-`` on its own. Nothing
    else, not even a final newline (Go's net.ParseMAC refuses it too)."""
    return (len(value) == 17
            and all(value[i] in (":", "-") for i in _MAC_SEPARATORS)
            and _HEX.issuperset(value[i] for i in range(17) if i % 3 != 2))


def parse_mac(value: Any, where: str) -> str:
    """A MAC address in canonical lower-case colon form; InvalidNetworkConfig otherwise."""
    if not isinstance(value, str) or not _is_mac(value):
        raise InvalidNetworkConfig(f"invalid MAC address {value!r} in {where}")
    return value.lower().replace("-", ":")


def ipam_type(args: CmdArgs, *, strict: bool = True) -> str:
    """``ipam.type``, or "" when the config has no IPAM (an L2-only attachment).

    Not ``strict`` (DEL, GC): a value that is not a string counts as no IPAM, since ADD
    refused it and so holds no lease.
    """
    try:
        return str_default(args.conf.ipam or {}, "type", "", what="ipam.")
    except InvalidNetworkConfig:
        if strict:
            raise
        return ""


def teardown_flag(args: CmdArgs, key: str) -> bool:
    """A boolean key DEL reads to decide what to remove; one ADD would refuse counts as set.

    Removing what is not there is cheap and succeeds; a DEL that fails on a value it
    could do without is retried forever by the runtime and blocks the pod's removal.
    """
    try:
        return bool_field(args.conf.raw, key)
    except InvalidNetworkConfig:
        return True


def teardown_masq_backend(args: CmdArgs) -> str | None:
    """``ipMasqBackend`` for DEL: an unknown one means the default (teardown cleans both)."""
    try:
        return masq_backend(args)
    except InvalidNetworkConfig:
        return None


def ipam_add(args: CmdArgs, plugin_type: str) -> Result:
    """Run IPAM ADD; a result without addresses is an error."""
    result = delegate_add(plugin_type, args.stdin, args)
    if not result.ips:
        raise CNIError(f"IPAM plugin {plugin_type!r} returned no IP configuration",
                       code=ErrorCode.INTERNAL)
    return result


def ipam_del(args: CmdArgs, plugin_type: str) -> None:
    """Run IPAM DEL (releases this attachment's lease; idempotent in every IPAM plugin).

    An IPAM plugin that cannot be found is reported on stderr and DEL goes on: a runtime
    retries a failing DEL forever, which blocks the pod's removal, and no retry can find
    the plugin either. The lease stays until the IPAM plugin's GC or an operator frees it.
    """
    try:
        delegate_del(plugin_type, args.stdin, args)
    except PluginNotFound as exc:
        print(f"pycni: {args.conf.type}: could not release the IPAM lease of container "
              f"{args.container_id!r} interface {args.ifname!r}: {exc.msg}", file=sys.stderr)


def ipam_check(args: CmdArgs, plugin_type: str) -> None:
    """Run IPAM CHECK."""
    delegate_check(plugin_type, args.stdin, args)


def ipam_status(args: CmdArgs, plugin_type: str) -> None:
    """STATUS of the IPAM plugin; anything but "available" makes us unavailable too."""
    try:
        delegate("STATUS", plugin_type, args.stdin, args)
    except CNIError as exc:
        if exc.code in (ErrorCode.PLUGIN_NOT_AVAILABLE, ErrorCode.LIMITED_CONNECTIVITY):
            raise
        raise PluginNotAvailable(f"IPAM plugin {plugin_type!r} is not available",
                                 str(exc)) from exc


def gc_attachments(args: CmdArgs, plugin_type: str, *, masquerade: bool) -> None:
    """GC: the IPAM plugin's GC, then masquerade rules of attachments no longer valid."""
    from ...host.netfilter import masq  # only calls that masquerade load netfilter

    valid = valid_attachments(args.conf.raw)
    if plugin_type:
        delegate("GC", plugin_type, args.stdin, args)
    if masquerade:
        masq.gc_ip_masq(args.conf.name, valid)


def prev_result(args: CmdArgs) -> Result:
    """CHECK's prevResult, which is required."""
    if args.conf.prev_result is None:
        raise InvalidNetworkConfig(f"{args.conf.type}: CHECK requires a prevResult")
    return args.conf.prev_result


def apply_dns(args: CmdArgs, result: Result) -> None:
    """The config's ``dns`` wins over what IPAM returned, when it sets anything."""
    if not args.conf.dns.is_empty():
        result.dns = args.conf.dns


def masq_backend(args: CmdArgs) -> str | None:
    """``ipMasqBackend`` (validated), or None for the default."""
    value = str_field(args.conf.raw, "ipMasqBackend")
    if value:
        from ...host.netfilter import masq  # only calls that name a backend load netfilter

        masq.resolve_backend(value)
    return value or None


def setup_masq(args: CmdArgs, backend: str | None, ips: list[IPInterface],
               rollback: host.Undo) -> None:
    """Masquerade ``ips`` for this attachment; undone by ``rollback`` if ADD fails later."""
    from ...host.netfilter import masq  # only calls that masquerade load netfilter

    chosen = masq.resolve_backend(backend)
    rollback.push(f"remove masquerade rules of {args.container_id}",
                  masq.teardown_ip_masq, chosen, args.conf.name, args.container_id,
                  args.ifname)
    masq.setup_ip_masq(chosen, args.conf.name, args.container_id, args.ifname, ips)


def teardown_masq(args: CmdArgs, backend: str | None, ips: list[IPInterface] | None) -> None:
    """Remove this attachment's masquerade rules; works without knowing its addresses."""
    from ...host.netfilter import masq  # only calls that masquerade load netfilter

    masq.teardown_ip_masq(masq.resolve_backend(backend), args.conf.name, args.container_id,
                          args.ifname, ips)


def run_with_rollback(args: CmdArgs, add: Callable[[host.Undo], Result]) -> Result:
    """Run ``add(rollback)``; if it raises, undo what it recorded before re-raising.

    The result is also written in the config's ``cniVersion`` here, where a failure can still
    be undone: a result without an address has no 0.1.0/0.2.0 form (IncompatibleCNIVersion),
    and the runtime would never learn of the interface ADD made.
    """
    with host.Undo() as rollback:
        result = add(rollback)
        result.to_json(args.conf.cni_version)
    return result


def ipam_into(args: CmdArgs, plugin_type: str, result: Result, rollback: host.Undo, *,
              interface: int = 0) -> None:
    """IPAM ADD: the addresses, routes and DNS go into ``result``, every address on
    ``result.interfaces[interface]`` (the container's).

    The lease is released by ``rollback`` if ADD fails later.
    """
    ipam = ipam_add(args, plugin_type)
    rollback.push(f"release the {plugin_type} lease", ipam_del, args, plugin_type)
    result.ips, result.routes, result.dns = ipam.ips, ipam.routes, ipam.dns
    for ipc in result.ips:
        ipc.interface = interface


def create_container_veth(args: CmdArgs, ns: host.NetNS, rollback: host.Undo, *, mtu: int,
                          mac: str = "") -> host.Veth:
    """The veth pair: ``CNI_IFNAME`` in the container (``ns``), a random name on this side."""
    with host.current_netns_fd() as host_fd:
        veth = ns.call(host.create_veth, args.ifname, host_fd, mtu=mtu, mac=mac)
    # The undo opens the netns anew: ``ns`` is gone by the time a rollback runs. Deleting
    # the container end removes the host end with it.
    rollback.push(f"delete {args.ifname} in {args.netns}", host.run_in_netns, args.netns,
                  host.delete_link, args.ifname)
    return veth


def delete_container_link(args: CmdArgs, *, addresses: bool = False) -> list[IPInterface] | None:
    """DEL: remove ``CNI_IFNAME`` from the container; its addresses (looked up only with
    ``addresses``, else empty), or None if it is gone.

    A veth whose peer is on this side is deleted from here (the kernel removes both ends),
    batched with the concurrent DELs of an agent; any other link inside the container.
    """
    if not args.netns:
        return None
    try:
        with host.current_netns_fd() as host_fd, enter_netns(args.netns) as ns:
            found = ns.call(host.read_for_delete, args.ifname, host_fd, addresses=addresses)
    except NetNSNotFound:
        return None
    if found.peer_index:
        host.delete_veth_peer(found.peer_index, found.index, args.ifname)
    if found.addresses is None:
        return None
    return [ipaddress.ip_interface(a) for a in found.addresses]


def delete_link_and_lease(args: CmdArgs, *, addresses: bool = False) -> list[IPInterface] | None:
    """DEL of a plugin with one container link: remove it, then release the IPAM lease.

    Only ``ipam.type`` is read, leniently: the plugin's own keys are ADD's business and
    cannot block a teardown. Returns the link's addresses when asked for ``addresses`` (only
    a caller with rules to find by address pays for the dump; else empty), or None if it
    was gone.
    """
    ipam = ipam_type(args, strict=False)
    addrs = delete_container_link(args, addresses=addresses)
    if ipam:
        ipam_del(args, ipam)
    return addrs


def check_container(args: CmdArgs, ns: host.NetNS, result: Result,
                    kind: str | None = "veth") -> host.LinkInfo:
    """CHECK inside the container: the link (of ``kind``; None: any) of prevResult, its MAC,
    addresses and routes."""
    cont_if = next((i for i in result.interfaces
                    if i.name == args.ifname and i.sandbox == args.netns), None)
    if cont_if is None:
        raise KernelError(f"CHECK: prevResult has no interface {args.ifname!r} in sandbox "
                          f"{args.netns!r}")
    cont = ns.call(host.link_info, args.ifname)
    if cont is None or (kind is not None and cont.kind != kind):
        raise KernelError(f"CHECK: container interface {args.ifname!r} is missing or not a "
                          f"{kind}")
    if cont_if.mac and cont_if.mac != cont.mac:
        raise KernelError(f"CHECK: {args.ifname!r} has MAC {cont.mac}, prevResult says "
                          f"{cont_if.mac}")
    ns.call(host.check_iface_ips, args.ifname, result)
    ns.call(host.check_routes, result)
    return cont


def requested_mac(args: CmdArgs) -> str:
    """The requested container MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC."""
    rc_mac = args.conf.runtime_config.get("mac")
    if rc_mac:
        return parse_mac(rc_mac, "runtimeConfig.mac")
    cni_mac = args.conf.cni_args().get("mac")
    if cni_mac:
        return parse_mac(cni_mac, "args.cni.mac")
    if args.args:
        env_mac = args.cni_args(["MAC"]).get("MAC")
        if env_mac:
            return parse_mac(env_mac, "CNI_ARGS MAC")
    return ""
