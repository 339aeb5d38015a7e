"""The agent's IPAM pool gauges: each distinct config is parsed once, the latest one counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.daemon import Metrics
from pycni.plugins.ipam import host_local


def _conf(data: Path, subnet: str, **extra: Any) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
                       "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(data)},
                       **extra}).encode()


def _pool_lines(metrics: Metrics) -> list[str]:
    return [line for line in metrics.exposition().decode().splitlines()
            if line.startswith("pycni_agent_ipam_pool_size")]


def test_a_config_seen_before_is_not_parsed_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real = host_local.HostLocalConfig.load

    def counting(*args: Any) -> host_local.HostLocalConfig:
        loads.append(args)
        return real(*args)

    monkeypatch.setattr(host_local.HostLocalConfig, "load", counting)
    metrics = Metrics()
    conf = _conf(tmp_path, "10.9.0.0/29")
    for _ in range(50):
        metrics.pools.observe(conf, "bridge")
    assert len(loads) == 1
    metrics.pools.observe(_conf(tmp_path, "10.9.0.0/29", runtimeConfig={"x": 1}), "bridge")
    assert len(loads) == 2


def test_the_latest_config_of_a_network_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    old, new = _conf(tmp_path, "10.9.0.0/29"), _conf(tmp_path, "10.9.0.0/28")
    for conf in (old, new, old):
        metrics.pools.observe(conf, "bridge")
    assert _pool_lines(metrics) == [
        'pycni_agent_ipam_pool_size{network="pytnet",range="10.9.0.1-10.9.0.6"} 5.0']


def test_configs_without_host_local_are_not_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    static = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                         "ipam": {"type": "static"}}).encode()
    for conf in (static, static, b"{", b"{"):
        metrics.pools.observe(conf, "bridge")
    assert _pool_lines(metrics) == []
    # The same bytes sent to host-local itself are its config.
    direct = _conf(tmp_path, "10.9.0.0/29")
    metrics.pools.observe(direct, "host-local")
    assert len(_pool_lines(metrics)) == 1


def test_netfilter_merge_counters_are_exported() -> None:
    text = Metrics().exposition().decode()
    for field in ("calls", "transactions", "batches", "fallbacks"):
        for backend in ("iptables", "nftables"):
            assert f'pycni_agent_netfilter_{field}_total{{backend="{backend}"}}' in text
