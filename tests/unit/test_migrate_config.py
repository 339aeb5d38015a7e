"""pycni migrate: the multus config rewrite of --node, and the command's argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pycni.cli import app
from pycni.multi import set_cluster_network
from pycni.spec import InvalidNetworkConfig

ONE = {"cniVersion": "1.0.0", "name": "podnet", "type": "bridge"}


def test_node_switch_makes_the_network_the_default(tmp_path: Path) -> None:
    path = tmp_path / "00-multus.conf"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "multus-cni-network",
                                "type": "multus", "delegates": [ONE], "logLevel": "debug"}))
    set_cluster_network(str(path), "kube-system/ptp-net")
    written = json.loads(path.read_text())
    assert written["clusterNetwork"] == "kube-system/ptp-net"
    assert "delegates" not in written
    assert written["logLevel"] == "debug"


def test_node_switch_refuses_to_drop_extra_delegates(tmp_path: Path) -> None:
    path = tmp_path / "00-multus.conf"
    original = json.dumps({"cniVersion": "1.0.0", "name": "m", "type": "multus",
                           "delegates": [ONE, {**ONE, "name": "other"}]})
    path.write_text(original)
    with pytest.raises(InvalidNetworkConfig, match="2 networks"):
        set_cluster_network(str(path), "ptp-net")
    assert path.read_text() == original


def test_migrate_needs_exactly_one_selection() -> None:
    result = CliRunner().invoke(app, ["migrate", "--to", "x"])
    assert result.exit_code == 1
    assert "exactly one of --pod, --namespace, --node" in result.output
