"""CNIConfig with a fake exec: chaining, DEL order, CHECK/GC/STATUS rules, VERSION."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import (
    CNIError,
    GCAttachment,
    IncompatibleCNIVersion,
    InvalidEnvironmentVariables,
    KernelError,
    NetworkConfigList,
    PluginNotFound,
)


@dataclass
class Call:
    command: str
    plugin: str
    env: dict[str, str]
    conf: dict[str, Any]


@dataclass
class FakeExec:
    """Plugins that add one interface each to the result they are handed."""

    supported: dict[str, tuple[str, ...]] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)  # type -> command that fails
    calls: list[Call] = field(default_factory=list)

    def find(self, plugin_type: str, paths: Sequence[str]) -> str:
        if plugin_type == "missing":
            raise PluginNotFound(f'failed to find plugin "{plugin_type}" in path {list(paths)}')
        return f"/fake/{plugin_type}"

    def run(self, path: str, env: Mapping[str, str], stdin: bytes,
            timeout: float) -> bytes:  # noqa: ARG002 - the PluginExec signature
        plugin = path.rsplit("/", 1)[1]
        command = env["CNI_COMMAND"]
        conf = json.loads(stdin)
        self.calls.append(Call(command, plugin, dict(env), conf))
        if self.failing.get(plugin) == command:
            raise KernelError(f"{plugin} broke")
        if command == "VERSION":
            versions = self.supported.get(plugin, ("0.4.0", "1.0.0", "1.1.0"))
            return json.dumps({"cniVersion": "1.1.0", "supportedVersions": versions}).encode()
        if command != "ADD":
            return b""
        prev = conf.get("prevResult") or {"cniVersion": conf["cniVersion"]}
        result = dict(prev)
        result["interfaces"] = [*prev.get("interfaces", []), {"name": plugin}]
        result.setdefault("ips", [{"address": "10.0.0.2/24", "interface": 0}])
        return json.dumps(result).encode()

    def of(self, command: str) -> list[Call]:
        return [c for c in self.calls if c.command == command]


def _net(version: str = "1.1.0", **over: Any) -> NetworkConfigList:
    raw: dict[str, Any] = {"cniVersion": version, "name": "net1", "plugins": [
        {"type": "bridge"}, {"type": "tuning"},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    raw.update(over)
    return NetworkConfigList.parse(raw)


@pytest.fixture
def fake() -> FakeExec:
    return FakeExec()


@pytest.fixture
def cni(tmp_path: Path, fake: FakeExec) -> CNIConfig:
    return CNIConfig(["/a", "", "/b"], str(tmp_path), exec_=fake)


RT = RuntimeConf("c1", "/run/netns/x", "eth0", [("K", "V"), ("IgnoreUnknown", "1")],
                 {"portMappings": [{"hostPort": 80, "containerPort": 8080}]})


def test_add_chains_prev_results_and_caches(cni: CNIConfig, fake: FakeExec) -> None:
    result = cni.add_network_list(_net(), RT)
    assert [i.name for i in result.interfaces] == ["bridge", "tuning", "portmap"]
    adds = fake.of("ADD")
    assert [c.plugin for c in adds] == ["bridge", "tuning", "portmap"]
    assert "prevResult" not in adds[0].conf
    assert [i["name"] for i in adds[2].conf["prevResult"]["interfaces"]] == ["bridge", "tuning"]
    assert "runtimeConfig" not in adds[0].conf
    assert adds[2].conf["runtimeConfig"] == {"portMappings": RT.capability_args["portMappings"]}
    assert adds[0].env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                           "CNI_NETNS": "/run/netns/x", "CNI_ARGS": "K=V;IgnoreUnknown=1",
                           "CNI_IFNAME": "eth0", "CNI_PATH": "/a:/b"}
    cached = cni.cache.read("net1", "c1", "eth0")
    assert cached is not None
    assert cached.result is not None
    assert len(cached.result["interfaces"]) == 3
    assert cached.capability_args == RT.capability_args


def test_failed_add_stops_the_chain_keeps_the_code_and_caches_nothing(
        cni: CNIConfig, fake: FakeExec) -> None:
    fake.failing["tuning"] = "ADD"
    with pytest.raises(KernelError, match='plugin type="tuning" failed \\(add\\)') as err:
        cni.add_network_list(_net(), RT)
    assert err.value.code == 100
    assert [c.plugin for c in fake.of("ADD")] == ["bridge", "tuning"]
    assert cni.cache.read("net1", "c1", "eth0") is None


@pytest.mark.parametrize("rt", [
    RuntimeConf("", "/x", "eth0"), RuntimeConf("bad/id", "/x", "eth0"),
    RuntimeConf("c1", "/x", "a-very-long-interface"), RuntimeConf("c1", "/x", ""),
])
def test_add_validates_the_attachment(cni: CNIConfig, fake: FakeExec, rt: RuntimeConf) -> None:
    with pytest.raises(InvalidEnvironmentVariables):
        cni.add_network_list(_net(), rt)
    assert fake.calls == []


def test_del_runs_in_reverse_with_cached_prev_result(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(), RT)
    cni.delete_network_list(_net(), RT)
    dels = fake.of("DEL")
    assert [c.plugin for c in dels] == ["portmap", "tuning", "bridge"]
    assert all(len(c.conf["prevResult"]["interfaces"]) == 3 for c in dels)
    assert cni.cache.read("net1", "c1", "eth0") is None
    # DEL again: no cache entry, still runs, without prevResult.
    cni.delete_network_list(_net(), RT)
    assert all("prevResult" not in c.conf for c in fake.of("DEL")[3:])


def test_del_before_0_4_0_sends_no_prev_result(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net("0.3.1"), RT)
    cni.delete_network_list(_net("0.3.1"), RT)
    assert all("prevResult" not in c.conf for c in fake.of("DEL"))


def test_del_with_corrupt_cache_goes_ahead(cni: CNIConfig, fake: FakeExec,
                                          tmp_path: Path) -> None:
    cni.add_network_list(_net(), RT)
    Path(cni.cache.path("net1", "c1", "eth0")).write_text("{corrupt")
    cni.delete_network_list(_net(), RT)
    assert len(fake.of("DEL")) == 3
    assert all("prevResult" not in c.conf for c in fake.of("DEL"))
    assert not Path(cni.cache.path("net1", "c1", "eth0")).exists()


def test_failed_del_keeps_the_cache(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(), RT)
    fake.failing["tuning"] = "DEL"
    with pytest.raises(KernelError, match="failed \\(del\\)"):
        cni.delete_network_list(_net(), RT)
    assert cni.cache.read("net1", "c1", "eth0") is not None


def test_check_uses_cached_result(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(), RT)
    cni.check_network_list(_net(), RT)
    checks = fake.of("CHECK")
    assert [c.plugin for c in checks] == ["bridge", "tuning", "portmap"]
    assert all(len(c.conf["prevResult"]["interfaces"]) == 3 for c in checks)


def test_check_rules(cni: CNIConfig, fake: FakeExec) -> None:
    with pytest.raises(IncompatibleCNIVersion, match="does not support the CHECK"):
        cni.check_network_list(_net("0.3.1"), RT)
    cni.check_network_list(_net(disableCheck="true"), RT)
    assert fake.of("CHECK") == []


def test_gc_deletes_stale_attachments_and_sends_valid_lists(cni: CNIConfig,
                                                           fake: FakeExec) -> None:
    net = _net()
    for cid in ("c1", "c2", "c3"):
        cni.add_network_list(net, RuntimeConf(cid, f"/run/netns/{cid}", "eth0",
                                              [("A", cid)], {"portMappings": [cid]}))
    other = _net(name="net2")
    cni.add_network_list(other, RuntimeConf("c9", "/run/netns/c9", "eth0"))
    fake.calls.clear()
    cni.gc_network_list(net, [GCAttachment("c1", "eth0"), GCAttachment("c3", "eth0")])
    dels = fake.of("DEL")
    assert {c.env["CNI_CONTAINERID"] for c in dels} == {"c2"}
    # The stale DEL uses what the cache recorded: netns, CNI_ARGS, capability args.
    assert dels[0].env["CNI_NETNS"] == "/run/netns/c2"
    assert dels[0].env["CNI_ARGS"] == "A=c2"
    assert dels[0].conf["runtimeConfig"] == {"portMappings": ["c2"]}
    assert sorted(e.container_id for e in cni.cached_attachments()) == ["c1", "c3", "c9"]
    gcs = fake.of("GC")
    assert [c.plugin for c in gcs] == ["bridge", "tuning", "portmap"]
    items = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c3", "ifname": "eth0"}]
    for call in gcs:
        assert call.conf["cni.dev/valid-attachments"] == items
        assert call.conf["cni.dev/attachments"] == items
        assert call.conf["name"] == "net1"
        assert call.env["CNI_CONTAINERID"] == ""
        assert call.env["CNI_PATH"] == "/a:/b"


def test_gc_without_valid_list_deletes_everything(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(), RT)
    cni.gc_network_list(_net())
    assert cni.cached_attachments() == []
    assert fake.of("GC")[0].conf["cni.dev/valid-attachments"] == []


def test_gc_before_1_1_0_only_cleans_the_cache(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net("1.0.0"), RT)
    cni.gc_network_list(_net("1.0.0"), [])
    assert len(fake.of("DEL")) == 3
    assert fake.of("GC") == []


def test_gc_disabled(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(disableGC=True), RT)
    cni.gc_network_list(_net(disableGC=True), [])
    assert fake.of("DEL") == []
    assert fake.of("GC") == []
    assert len(cni.cached_attachments()) == 1


def test_gc_collects_every_error(cni: CNIConfig, fake: FakeExec) -> None:
    cni.add_network_list(_net(), RT)
    fake.failing.update({"bridge": "DEL", "portmap": "GC"})
    with pytest.raises(KernelError) as err:
        cni.gc_network_list(_net(), [])
    assert "stale attachment c1 eth0" in err.value.msg
    assert "failed to GC plugin type=\"portmap\"" in err.value.details
    assert len(fake.of("GC")) == 3


def test_status(cni: CNIConfig, fake: FakeExec) -> None:
    cni.status_network_list(_net("1.0.0"))
    assert fake.of("STATUS") == []
    cni.status_network_list(_net())
    assert [c.plugin for c in fake.of("STATUS")] == ["bridge", "tuning", "portmap"]
    assert fake.of("STATUS")[0].conf == {"type": "bridge", "name": "net1", "cniVersion": "1.1.0"}
    fake.failing["bridge"] = "STATUS"
    with pytest.raises(KernelError, match="failed \\(status\\)"):
        cni.status_network_list(_net())


def test_version_info_and_validation(cni: CNIConfig, fake: FakeExec) -> None:
    fake.supported["tuning"] = ("0.4.0", "1.0.0")
    info = cni.get_version_info("tuning")
    assert info.supported_versions == ("0.4.0", "1.0.0")
    assert fake.of("VERSION")[0].env["CNI_NETNS"] == "dummy"
    assert cni.validate_network_list(_net("1.0.0")) == ["portMappings"]
    with pytest.raises(IncompatibleCNIVersion, match="plugin tuning does not support"):
        cni.validate_network_list(_net("1.1.0"))
    bad = _net(plugins=[{"type": "missing"}, {"type": "tuning"}])
    with pytest.raises(PluginNotFound) as err:
        cni.validate_network_list(bad)
    assert "tuning" in err.value.details


def test_negotiation_picks_the_highest_common_version(cni: CNIConfig, fake: FakeExec) -> None:
    fake.supported["tuning"] = ("0.4.0", "1.0.0")
    net = _net(cniVersions=["0.4.0", "1.0.0", "1.1.0"])
    assert net.cni_version == "1.1.0"
    assert cni.negotiate(net).cni_version == "1.0.0"
    fake.supported["tuning"] = ("0.3.1",)
    with pytest.raises(IncompatibleCNIVersion):
        cni.negotiate(net)
    plain = _net()
    assert cni.negotiate(plain) is plain


def test_plugin_not_found(cni: CNIConfig) -> None:
    with pytest.raises(CNIError) as err:
        cni.add_network_list(_net(plugins=[{"type": "missing"}]), RT)
    assert err.value.code == 103
