"""Config discovery: lexical order, default network, skipped files, inlined plugins."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pycni.runtime import NetworkNotFound, default_network, discover, load_network


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _conflist(name: str, *types: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": t} for t in types]}


def _conf(name: str, ptype: str = "bridge") -> dict[str, Any]:
    return {"cniVersion": "0.4.0", "name": name, "type": ptype}


def test_lexical_order_and_default(tmp_path: Path) -> None:
    _write(tmp_path / "20-b.conflist", _conflist("b", "bridge"))
    _write(tmp_path / "10-a.conf", _conf("a"))
    _write(tmp_path / "15-c.json", _conf("c", "macvlan"))
    _write(tmp_path / "05-ignored.txt", _conf("ignored"))
    (tmp_path / "00-dir.conf").mkdir()
    found = discover(str(tmp_path))
    assert [n.network.name for n in found.networks] == ["a", "c", "b"]
    assert found.default is not None
    assert found.default.network.name == "a"
    net = default_network(str(tmp_path))
    assert net is not None
    assert net.types == ["bridge"]


def test_invalid_files_are_skipped_with_a_logged_reason(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    _write(tmp_path / "00-broken.conflist", "{not json")
    _write(tmp_path / "01-notype.conf", {"cniVersion": "1.0.0", "name": "x"})
    _write(tmp_path / "02-badname.conflist", _conflist("bad/name", "bridge"))
    _write(tmp_path / "03-future.conflist", {**_conflist("f", "bridge"), "cniVersion": "7.0.0"})
    _write(tmp_path / "10-good.conflist", _conflist("good", "bridge"))
    with caplog.at_level(logging.WARNING, logger="pycni.runtime"):
        found = discover(str(tmp_path))
    assert [n.network.name for n in found.networks] == ["good"]
    assert [Path(s.path).name for s in found.skipped] == [
        "00-broken.conflist", "01-notype.conf", "02-badname.conflist", "03-future.conflist"]
    assert "00-broken.conflist" in caplog.text
    assert found.default is not None
    assert found.default.network.name == "good"


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    assert discover(str(tmp_path / "nope")).networks == []
    assert default_network(str(tmp_path)) is None
    with pytest.raises(NetworkNotFound) as err:
        load_network(str(tmp_path), "x")
    assert err.value.code == 7


def test_lookup_prefers_conflists_then_single_confs(tmp_path: Path) -> None:
    _write(tmp_path / "00-net.conf", _conf("net", "macvlan"))
    _write(tmp_path / "50-net.conflist", _conflist("net", "bridge", "portmap"))
    assert load_network(str(tmp_path), "net").types == ["bridge", "portmap"]
    # The default network is still the lexically first file.
    assert discover(str(tmp_path)).networks[0].network.types == ["macvlan"]


def test_not_found_names_skipped_files(tmp_path: Path) -> None:
    _write(tmp_path / "00-bad.conflist", "[]")
    with pytest.raises(NetworkNotFound, match=r"00-bad\.conflist"):
        load_network(str(tmp_path), "other")


def test_conf_holding_a_list_is_read_as_a_list(tmp_path: Path) -> None:
    _write(tmp_path / "87-podman.conf", _conflist("podman", "bridge", "portmap"))
    assert load_network(str(tmp_path), "podman").types == ["bridge", "portmap"]


def test_inlined_plugins_from_the_network_subdirectory(tmp_path: Path) -> None:
    _write(tmp_path / "10-net.conflist", _conflist("net", "bridge"))
    _write(tmp_path / "net" / "20-tuning.conf", {"type": "tuning"})
    _write(tmp_path / "net" / "10-portmap.conf", {"type": "portmap"})
    _write(tmp_path / "net" / "30-ignored.json", {"type": "firewall"})
    assert load_network(str(tmp_path), "net").types == ["bridge", "portmap", "tuning"]


def test_load_only_inlined_plugins_ignores_the_subdirectory(tmp_path: Path) -> None:
    _write(tmp_path / "10-net.conflist", {**_conflist("net", "bridge"),
                                          "loadOnlyInlinedPlugins": True})
    _write(tmp_path / "net" / "10-portmap.conf", {"type": "portmap"})
    assert load_network(str(tmp_path), "net").types == ["bridge"]


def test_plugins_only_from_the_subdirectory(tmp_path: Path) -> None:
    _write(tmp_path / "10-net.conflist", {"cniVersion": "1.0.0", "name": "net"})
    _write(tmp_path / "net" / "10-bridge.conf", {"type": "bridge"})
    assert load_network(str(tmp_path), "net").types == ["bridge"]


def test_a_broken_inlined_plugin_skips_the_network(tmp_path: Path) -> None:
    _write(tmp_path / "10-net.conflist", _conflist("net", "bridge"))
    _write(tmp_path / "net" / "10-bad.conf", "{")
    found = discover(str(tmp_path))
    assert found.networks == []
    assert "10-net.conflist" in found.skipped[0].path
