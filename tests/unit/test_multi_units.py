"""The meta plugin's parsers without a cluster: annotations, its config, gen-config, the
attachment record and network-status entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycni.multi import (
    Attachment,
    DeviceAllocator,
    MultusConfig,
    PodRecord,
    PodRecords,
    gen_config,
    network_status,
    parse_default_network,
    parse_networks,
    write_config,
)
from pycni.spec import InvalidNetworkConfig


def test_short_form_namespaces_and_interfaces() -> None:
    got = parse_networks(" a, other/b@data0 ,c@x", "pods")
    assert [(s.namespace, s.name, s.interface) for s in got] == [
        ("pods", "a", ""), ("other", "b", "data0"), ("pods", "c", "x")]
    assert parse_networks("", "pods") == []


@pytest.mark.parametrize("text", ["a@b@c", "/a", "a/b/c", "UPPER", "a@", "a@way-too-long-ifname",
                                  "a,,b", "ns/a@x y"])
def test_short_form_errors_name_the_annotation(text: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=r"k8s\.v1\.cni\.cncf\.io/networks"):
        parse_networks(text, "pods")


def test_json_form_every_key() -> None:
    text = json.dumps([{
        "name": "net-a", "namespace": "other", "interface": "data0",
        "ips": ["10.1.1.5/24", "fd00::5"], "mac": "02:00:00:00:00:01",
        "cni-args": {"foo": "bar"}, "portMappings": [{"hostPort": 8080, "containerPort": 80}],
        "bandwidth": {"ingressRate": 1000}, "default-route": ["10.1.1.1"],
        "infiniband-guid": "00:11:22:33:44:55:66:77", "deviceID": "0000:03:02.0",
        "ipam-claim-reference": "claim-1", "some-future-key": 1}])
    [sel] = parse_networks(text, "pods")
    assert (sel.key, sel.interface) == ("other/net-a", "data0")
    assert sel.capability_args == {
        "ips": ["10.1.1.5/24", "fd00::5"], "mac": "02:00:00:00:00:01",
        "portMappings": [{"hostPort": 8080, "containerPort": 80}],
        "bandwidth": {"ingressRate": 1000}, "infinibandGUID": "00:11:22:33:44:55:66:77",
        "deviceID": "0000:03:02.0"}
    assert sel.cni_args == {"foo": "bar"}
    assert sel.default_route == ("10.1.1.1",)
    assert sel.ipam_claim_reference == "claim-1"


@pytest.mark.parametrize(("item", "field"), [
    ({"namespace": "x"}, '"name"'),
    ({"name": "a", "ips": ["10.1.1.500"]}, '"ips"'),
    ({"name": "a", "ips": "10.1.1.5"}, '"ips"'),
    ({"name": "a", "mac": "02:00:00"}, '"mac"'),
    ({"name": "a", "default-route": ["10.0.0.1/24"]}, '"default-route"'),
    ({"name": "a", "cni-args": []}, '"cni-args"'),
    ({"name": "a", "interface": "a/b"}, '"interface"'),
    ({"name": "a", "infiniband-guid": "zz"}, '"infiniband-guid"'),
    ({"name": "a", "portMappings": {}}, '"portMappings"'),
])
def test_json_form_errors_name_the_key(item: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=field):
        parse_networks(json.dumps([item]), "pods")


def test_malformed_json_is_a_clear_error() -> None:
    with pytest.raises(InvalidNetworkConfig, match="expected a JSON list"):
        parse_networks('[{"name": "a"', "pods")


@pytest.mark.parametrize("text", [
    '[{"name": "a", "ips": [NaN]}]',
    '[{"name": "a", "x": 1e999}]',
    "[" * 100_000 + "]" * 100_000,
])
def test_annotation_json_is_as_strict_as_go(text: str) -> None:
    # A pod annotation is hostile input: NaN, an infinite number or absurd nesting is a
    # config error naming the annotation, never a float that fails later or a crash.
    with pytest.raises(InvalidNetworkConfig, match="expected a JSON list"):
        parse_networks(text, "pods")


def test_default_network_annotation() -> None:
    assert parse_default_network("kube-system/calico", "pods").key == "kube-system/calico"
    with pytest.raises(InvalidNetworkConfig, match="exactly one"):
        parse_default_network("a,b", "pods")


def test_config_keys_and_isolation() -> None:
    conf = MultusConfig.parse({
        "cniVersion": "1.0.0", "name": "multus", "type": "multus", "kubeconfig": "/k",
        "clusterNetwork": "pod-net", "defaultNetworks": ["extra"],
        "systemNamespaces": ["kube-system", "infra"], "multusNamespace": "multus",
        "namespaceIsolation": True, "globalNamespaces": "default,shared",
        "readinessindicatorfile": "/ready", "confDir": "/c", "cniDir": "/d", "binDir": "/b",
        "logFile": "/l", "logLevel": "debug", "logToStderr": False})
    assert conf.system_namespaces == ("kube-system", "infra")
    assert conf.global_namespaces == ("default", "shared")
    assert conf.namespace_allowed("a", "a")
    assert conf.namespace_allowed("a", "shared")
    assert conf.namespace_allowed("a", "multus")
    assert not conf.namespace_allowed("a", "b")


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "clusterNetwork"),
    ({"clusterNetwork": "x", "namespaceIsolation": "yes"}, '"namespaceIsolation"'),
    ({"clusterNetwork": "x", "logLevel": "loud"}, '"logLevel"'),
    ({"clusterNetwork": "x", "globalNamespaces": 3}, '"globalNamespaces"'),
    ({"delegates": [{"type": "bridge"}]}, r"delegates\[0\]"),
    ({"delegates": "bridge"}, '"delegates"'),
])
def test_config_errors_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=field):
        MultusConfig.parse({"cniVersion": "1.0.0", "name": "m", "type": "multus", **raw})


def test_gen_config_takes_the_first_network(tmp_path: Path) -> None:
    (tmp_path / "10-pods.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "pods", "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    (tmp_path / "20-other.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "other", "type": "ptp"}))
    conf = gen_config(str(tmp_path), kubeconfig="/etc/k", namespace_isolation=True)
    assert conf["type"] == "multus"
    assert conf["cniVersion"] == "1.0.0"
    assert conf["capabilities"] == {"portMappings": True}
    assert conf["delegates"][0]["name"] == "pods"
    path = write_config(str(tmp_path), conf)
    assert path.name == "00-multus.conf"
    # the generated file sorts first and is skipped the next time round
    assert gen_config(str(tmp_path))["delegates"][0]["name"] == "pods"
    MultusConfig.parse(json.loads(path.read_text()))


def test_gen_config_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidNetworkConfig, match="no network configuration"):
        gen_config(str(tmp_path))


def test_record_round_trip(tmp_path: Path) -> None:
    records = PodRecords(str(tmp_path))
    att = Attachment("ns/a", "net1", {"cniVersion": "1.0.0", "name": "a",
                                      "plugins": [{"type": "dummy"}]},
                     cni_args=[("K8S_POD_NAME", "p")], default_route=["10.0.0.1"])
    record = PodRecord("c1", "/run/netns/x", "eth0", {"namespace": "ns", "name": "p"}, [att])
    records.save(record)
    back = records.load("c1", "eth0")
    assert back is not None
    assert back.to_json() == record.to_json()
    assert back.attachments[0].network_config().name == "a"
    records.remove("c1", "eth0")
    assert records.load("c1", "eth0") is None


def test_status_entries() -> None:
    result = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "veth0"}, {"name": "eth0", "mac": "02:00:00:00:00:09",
                                                 "sandbox": "/run/netns/x"}],
              "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 1}],
              "dns": {"nameservers": ["10.96.0.10"]}}
    cluster = Attachment("pods", "eth0", {}, default=True, result=result)
    extra = Attachment("ns/a", "net1", {}, result={"cniVersion": "1.0.0"},
                       device_id="0000:03:02.0")
    assert network_status([cluster, extra]) == [
        {"name": "pods", "interface": "eth0", "ips": ["10.9.0.5"],
         "mac": "02:00:00:00:00:09", "default": True,
         "dns": {"nameservers": ["10.96.0.10"]}, "gateway": ["10.9.0.1"]},
        {"name": "ns/a", "interface": "net1", "default": False,
         "device-info": {"type": "pci", "version": "1.1.0",
                         "pci": {"pci-address": "0000:03:02.0"}}}]


def test_device_ids_from_the_kubelet_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    path.write_text(json.dumps({"Data": {"PodDeviceEntries": [
        {"PodUID": "u1", "ContainerName": "c", "ResourceName": "r/x",
         "DeviceIDs": {"0": ["d1", "d2"]}},
        {"PodUID": "u2", "ContainerName": "c", "ResourceName": "r/x", "DeviceIDs": ["d3"]}]}}))
    devices = DeviceAllocator("u1", str(path))
    assert [devices.take("r/x", "n"), devices.take("r/x", "n")] == ["d1", "d2"]
    with pytest.raises(InvalidNetworkConfig, match="allocated none"):
        devices.take("r/x", "n")
    assert DeviceAllocator("u2", str(path)).take("r/x", "n") == "d3"


def test_cli_gen_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pycni.cli import app

    (tmp_path / "10-pods.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "pods", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}))
    runner = CliRunner()
    out = runner.invoke(app, ["multus", "gen-config", "--conf-dir", str(tmp_path),
                              "--kubeconfig", "/k", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["delegates"][0]["name"] == "pods"
    assert not (tmp_path / "00-multus.conf").exists()
    out = runner.invoke(app, ["multus", "gen-config", "--conf-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    written = json.loads((tmp_path / "00-multus.conf").read_text())
    assert (written["type"], written["cniVersion"]) == ("multus", "0.4.0")
    out = runner.invoke(app, ["multus", "gen-config", "--conf-dir", str(tmp_path / "none")])
    assert out.exit_code == 1
    assert "no network configuration" in out.output


@pytest.mark.parametrize("failing", ["run_in_netns", "delete_proxy_neighbour"])
def test_interrupted_switch_cleanup_goes_on_past_a_failure(
        failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary interface or a proxy entry that cannot be removed does not keep the
    staging netns (nor the other proxy entries) from going."""
    from pycni import host
    from pycni.multi import _plugin
    from pycni.spec import KernelError

    calls: list[tuple[str, object]] = []

    def fake(name: str) -> object:
        def call(*args: object) -> None:
            calls.append((name, args[-1]))
            if name == failing:
                raise KernelError(f"{name} failed")
        return call

    for name in ("run_in_netns", "delete_proxy_neighbour", "remove_netns"):
        monkeypatch.setattr(host, name, fake(name))
    netns = tmp_path / "podns"
    netns.touch()
    att = Attachment("new", "eth0", {}, state="switching", switch={
        "staging": "pycni-mig-x", "tmp": "mig0",
        "proxies": [{"device": "br0", "address": "10.1.0.5"},
                    {"device": "br0", "address": "10.1.0.6"}]})
    _plugin._drop_switch(PodRecord("cid", str(netns), "eth0", attachments=[att]), att)
    assert [c[0] for c in calls] == ["run_in_netns", "delete_proxy_neighbour",
                                     "delete_proxy_neighbour", "remove_netns"]
    assert calls[-1] == ("remove_netns", "pycni-mig-x")
