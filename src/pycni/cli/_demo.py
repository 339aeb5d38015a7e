"""The demo behind ``pycni demo``: two pods on one network ping each other, then all of it goes.

A front end over :class:`pycni.runtime.PodNetworks`, like the rest of the command.

"All of it" includes what a first ADD leaves on the node for later pods: a bridge the
network's bridge plugin created, the masquerade/portmap nftables tables it made, the
forwarding sysctls it turned on and host-local's network directory. The demo notes what
existed before and removes or restores only what it brought, so a node that already runs the
network keeps its state.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host import (
    create_netns,
    delete_link,
    link_info,
    netns_path,
    remove_netns,
    run_in_netns,
    sysctl_get,
    sysctl_set,
)
from ..host.netfilter import NftError, nft_json
from ..runtime import PodNetworks
from ..spec import CNIError, NetworkConfigList

_FORWARDING = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


def _nft_tables() -> set[tuple[str, str]]:
    try:
        items = nft_json([{"list": {"tables": {}}}], what="listing nftables tables")
    except (NftError, CNIError):
        return set()
    return {(t["table"]["family"], t["table"]["name"]) for t in items if "table" in t}


def _bridges(network: NetworkConfigList) -> list[str]:
    return [str(p.get("bridge") or "cni0") for p in network.plugins if p.get("type") == "bridge"]


def _data_dirs(network: NetworkConfigList) -> list[Path]:
    dirs = []
    for plugin in network.plugins:
        ipam = plugin.get("ipam") or {}
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            base = ipam.get("dataDir") or "/var/lib/cni/networks"
            dirs.append(Path(str(base)) / network.name)
    return dirs


@dataclass
class HostFootprint:
    """What a network's first ADD may create on the node, as it was before the demo."""

    new_bridges: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    nft_tables: set[tuple[str, str]] = field(default_factory=set)
    new_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def take(cls, network: NetworkConfigList) -> HostFootprint:
        """Note the node's state before the network is used."""
        bridges = [b for b in _bridges(network) if link_info(b) is None]
        return cls(
            new_bridges=bridges,
            sysctls={name: sysctl_get(name) for name in _FORWARDING},
            nft_tables=_nft_tables(),
            new_dirs=[d for d in _data_dirs(network) if not d.exists()],
        )

    def restore(self) -> None:
        """Remove what appeared since :meth:`take` and put the sysctls back."""
        for bridge in self.new_bridges:
            delete_link(bridge)
        for family, name in sorted(_nft_tables() - self.nft_tables):
            nft_json([{"delete": {"table": {"family": family, "name": name}}}],
                     what=f"deleting nftables table {family} {name}")
        for name, value in self.sysctls.items():
            if sysctl_get(name) != value:
                sysctl_set(name, value)
        for directory in self.new_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _run_in(netns: str, argv: list[str]) -> int:
    # Forked from a thread that sits in the namespace, the child starts there: no shell and
    # no nsenter binary involved.
    proc: subprocess.Popen[bytes] = run_in_netns(netns, subprocess.Popen, argv)
    return proc.wait()


def run_demo(pods: PodNetworks, *, network: str | None = None, count: int = 3,
             prefix: str = "pycni-demo", echo: Callable[[str], Any] = print) -> int:
    """Two pods on ``network`` (default: the default network) ping each other; 0 on success."""
    net = pods.network(network)
    footprint = HostFootprint.take(net)
    names = [f"{prefix}-{secrets.token_hex(3)}-{side}" for side in ("a", "b")]
    made: list[str] = []
    status = 1
    try:
        ips = []
        for name in names:
            path = create_netns(name)
            made.append(name)
            setup = pods.setup(name, path, network=net.name)
            v4 = [ip.split("/")[0] for ip in setup.ips if ":" not in ip]
            ips.append(v4[0] if v4 else setup.ips[0].split("/")[0])
            echo(f"pod {name}: {setup.ifname} {', '.join(setup.ips)} on {setup.network}")
        echo(f"pod {names[0]} pings {ips[1]}:")
        status = _run_in(netns_path(names[0]), ["ping", "-c", str(count), "-W", "2", ips[1]])
        echo("ping works" if status == 0 else f"ping failed (exit {status})")
    finally:
        for name in reversed(made):
            try:
                pods.teardown(name, netns_path(name), network=net.name)
            finally:
                remove_netns(name)
        footprint.restore()
        if made:
            echo("torn down: pods, their addresses and rules, and what the network left on "
                 "the node")
    return status
