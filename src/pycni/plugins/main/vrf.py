"""vrf: put the container interface of prevResult into a VRF (created on first use).

Example (chained after a main plugin)::

    {"cniVersion": "1.1.0", "name": "tenant", "plugins": [
      {"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", ...}},
      {"type": "vrf", "vrfname": "blue", "table": 1001}]}

Keys: ``vrfname`` (required), ``table`` (the VRF's routing table; default: the lowest table
no VRF in the container uses; a VRF that exists with another table is an error).
``CNI_IFNAME`` is enslaved to the VRF; its IPv6 addresses are kept (they would go with the
device cycle) and its routes move from the main table to the VRF's table. DEL releases the
interface and deletes the VRF when no interface is left in it. Needs the kernel's vrf
module. The result is prevResult, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ... import host
from ...host import NetNSNotFound
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import InvalidNetworkConfig, KernelError, Result
from .._fields import UINT32_MAX, check_ifname, int_field, require_prev_result
from ._common import run_with_rollback


@dataclass(frozen=True)
class VRFConfig:
    """The vrf plugin's keys."""

    vrfname: str
    table: int = 0

    @classmethod
    def load(cls, args: CmdArgs) -> VRFConfig:
        """Read and validate ``vrfname`` and ``table``."""
        raw = args.conf.raw
        name = raw.get("vrfname")
        if not isinstance(name, str) or not name:
            raise InvalidNetworkConfig("configuration is expected to have a valid vrf name "
                                       '("vrfname")')
        check_ifname(name, "vrfname")
        table = int_field(raw, "table", maximum=UINT32_MAX) or 0
        if table in (253, 254, 255):
            raise InvalidNetworkConfig(f'invalid "table": {table} is a reserved table '
                                       "(default/main/local)")
        return cls(vrfname=name, table=table)


def _attach(conf: VRFConfig, ifname: str, rollback: host.Undo, netns: str) -> None:
    """In the container: find or create the VRF, then enslave ``ifname`` to it."""
    vrf = host.find_vrf(conf.vrfname)
    if vrf is not None and conf.table and vrf.table != conf.table:
        raise KernelError(f"VRF {conf.vrfname} already exists with a different routing "
                          f"table {vrf.table} (config wants {conf.table})")
    if vrf is None:
        vrf = host.create_vrf(conf.vrfname, conf.table)
        rollback.push(f"delete VRF {conf.vrfname}", host.run_in_netns, netns,
                      host.delete_link, conf.vrfname)
    host.enslave_to_vrf(ifname, vrf)
    rollback.push(f"release {ifname} from VRF {conf.vrfname}", host.run_in_netns, netns,
                  host.release_from_vrf, ifname)


def _detach(conf: VRFConfig, ifname: str) -> None:
    """In the container: release ``ifname``; delete the VRF once it has no members."""
    try:
        vrf = host.find_vrf(conf.vrfname)
    except KernelError:
        return  # something else took the name: not ours to touch
    if vrf is None:
        return
    host.release_from_vrf(ifname)
    if not host.vrf_members(vrf):
        host.delete_link(vrf.name)


def _check(conf: VRFConfig, ifname: str) -> None:
    vrf = host.find_vrf(conf.vrfname)
    if vrf is None:
        raise KernelError(f"CHECK: VRF {conf.vrfname} not found")
    if conf.table and vrf.table != conf.table:
        raise KernelError(f"CHECK: VRF {conf.vrfname} has table {vrf.table}, config says "
                          f"{conf.table}")
    if ifname not in host.vrf_members(vrf):
        raise KernelError(f"CHECK: failed to find {ifname} associated to vrf {conf.vrfname}")


class VRF(Plugin):
    """The ``vrf`` plugin."""

    type_name = "vrf"
    supported_versions: ClassVar[tuple[str, ...]] = tuple(
        v for v in Plugin.supported_versions if v not in ("0.1.0", "0.2.0", "0.3.0"))

    def add(self, args: CmdArgs) -> Result:
        conf = VRFConfig.load(args)
        result = require_prev_result(args, "vrf: missing prevResult from earlier plugin")

        def attach(rollback: host.Undo) -> Result:
            with enter_netns(args.netns) as ns:
                ns.call(_attach, conf, args.ifname, rollback, args.netns)
            return result

        return run_with_rollback(args, attach)

    def delete(self, args: CmdArgs) -> None:
        # Only the VRF's name finds it; the table rules are ADD's.
        raw_name = args.conf.raw.get("vrfname")
        try:
            name = check_ifname(raw_name if isinstance(raw_name, str) else "", "vrfname")
        except InvalidNetworkConfig:
            return  # no VRF can have this name, so ADD made none
        conf = VRFConfig(vrfname=name)
        if not args.netns:
            return
        try:
            with enter_netns(args.netns) as ns:
                ns.call(_detach, conf, args.ifname)
        except NetNSNotFound:
            return

    def check(self, args: CmdArgs) -> None:
        conf = VRFConfig.load(args)
        require_prev_result(args, "vrf: missing prevResult from earlier plugin")
        with enter_netns(args.netns) as ns:
            ns.call(_check, conf, args.ifname)

    def status(self, args: CmdArgs) -> None:
        VRFConfig.load(args)

    def gc(self, args: CmdArgs) -> None:
        """Nothing to collect: a VRF lives and dies with its container's namespace."""


main = VRF.main
