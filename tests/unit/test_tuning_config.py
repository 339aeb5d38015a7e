"""tuning without a kernel: which sysctl paths a config writes and what the allow-list sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.plugins.meta.tuning import TuningConfig
from pycni.skel import CmdArgs
from pycni.spec import InvalidNetworkConfig, NetworkConfig


def load(tmp_path: Path, **keys: Any) -> TuningConfig:
    full = {"cniVersion": "1.0.0", "name": "pyttune", "type": "tuning",
            "sysctlAllowlist": str(tmp_path / "allowlist.conf"), **keys}
    args = CmdArgs(command="ADD", container_id="pyt-1", netns="/run/netns/pyt", ifname="eth0",
                   args="", path=("/opt/cni/bin",), stdin=json.dumps(full).encode(),
                   conf=NetworkConfig.parse(full))
    return TuningConfig.load(args)


@pytest.mark.parametrize("key", [
    "net.ipv4.conf.IFNAME.x/../net/ipv4/ip_forward",
    "net/ipv4/conf/../../net/ipv4/ip_forward",
    "net/./ipv4/ip_forward", "net//ipv4/ip_forward", "net/ipv4/ip_forward/", "net",
    "net.ipv4..ip_forward", "net/ipv4/ip_forward\n", "net.ipv4.ip forward",
    "kernel.hostname", "net/../kernel/hostname",
])
def test_sysctl_keys_that_walk_or_hide_are_refused(tmp_path: Path, key: str) -> None:
    conf = load(tmp_path, sysctl={key: "1"})
    with pytest.raises(InvalidNetworkConfig, match="sysctl key") as info:
        conf.sysctl_paths("eth0")
    assert info.value.code == 7


def test_sysctl_paths_substitute_ifname(tmp_path: Path) -> None:
    conf = load(tmp_path, sysctl={"net.ipv4.conf.IFNAME.arp_filter": "1",
                                  "net/ipv4/conf/IFNAME/rp_filter": "2"})
    assert conf.sysctl_paths("eth0.100") == {
        "/proc/sys/net/ipv4/conf/eth0.100/arp_filter": "1",
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter": "2"}


def test_allowlist_sees_the_path_that_is_written(tmp_path: Path) -> None:
    # The raw key matches the pattern, but the path written would be ip_forward.
    (tmp_path / "allowlist.conf").write_text("^net\\.ipv4\\.conf\\.IFNAME\\.\n")
    conf = load(tmp_path, sysctl={"net.ipv4.conf.IFNAME.x/../net/ipv4/ip_forward": "1"})
    with pytest.raises(InvalidNetworkConfig):
        conf.check_allowlist("eth0")


def test_allowlist_ifname_patterns_match_the_substituted_key(tmp_path: Path) -> None:
    (tmp_path / "allowlist.conf").write_text(
        "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n^net\\.ipv4\\.conf\\.eth1\\.rp_filter$\n")
    load(tmp_path, sysctl={"net.ipv4.conf.IFNAME.arp_filter": "1"}).check_allowlist("eth0")
    load(tmp_path, sysctl={"net.ipv4.conf.IFNAME.rp_filter": "1"}).check_allowlist("eth1")
    with pytest.raises(InvalidNetworkConfig, match="not allowed"):
        load(tmp_path, sysctl={"net.ipv4.conf.all.arp_filter": "1"}).check_allowlist("eth0")


def test_bad_allowlist_pattern_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "allowlist.conf").write_text("^net\\.(\n")
    with pytest.raises(InvalidNetworkConfig, match="allow-list"):
        load(tmp_path, sysctl={"net.core.somaxconn": "1"}).check_allowlist("eth0")


def test_mac_with_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidNetworkConfig, match="mac"):
        load(tmp_path, mac="c2:b0:57:49:47:f1\n")
