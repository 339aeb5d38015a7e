"""bandwidth behind the Go bridge: real traffic is limited, kernel state matches the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meta_pods import (
    bridge_pod,
    chained,
    host_veth,
    iperf_bits_per_second,
    iperf_server,
    ours,
    pod_ip,
    theirs,
)

from pycni.plugins.meta.bandwidth import ifb_name
from pycni.testing import call_plugin, cni_env, ns_run, unique_name

pytestmark = pytest.mark.netns

RATE = 16_000_000  # bits/s
BURST = 256_000  # bits


def _tc(netns: str, *args: str) -> Any:
    return json.loads(ns_run(netns, "tc", "-j", *args, check=True).stdout)


def _root(netns: str, dev: str) -> dict[str, Any]:
    return next(q for q in _tc(netns, "qdisc", "show", "dev", dev) if q.get("root"))


def _bw(**limits: int) -> dict[str, Any]:
    return {"type": "bandwidth", **limits}


@pytest.fixture
def pods(host_ns: str, netns: str, netns2: str, tmp_path: Path, go_plugins: str
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    bridge = unique_name("br")
    a = bridge_pod(host_ns, netns, tmp_path, bridge=bridge, subnet="10.77.0.0/24", cid="a")
    b = bridge_pod(host_ns, netns2, tmp_path, bridge=bridge, subnet="10.77.0.0/24", cid="b")
    return a, b


def test_ingress_and_egress_rates_are_enforced(host_ns: str, netns: str, netns2: str,
                                               pods: tuple[dict[str, Any], dict[str, Any]]
                                               ) -> None:
    a, _ = pods
    conf = chained(_bw(ingressRate=RATE, ingressBurst=BURST, egressRate=RATE,
                       egressBurst=BURST), a)
    with iperf_server(netns):
        # Before ADD the path is far faster: the limit measured below is the plugin's doing.
        assert iperf_bits_per_second(netns2, pod_ip(a), seconds=1) > RATE * 3
        out = ours(host_ns, "bandwidth", "ADD", conf, cid="a", netns=netns)
        into_a = iperf_bits_per_second(netns2, pod_ip(a))
        out_of_a = iperf_bits_per_second(netns2, pod_ip(a), reverse=True)
    ifb = ifb_name("pytnet", "a")
    assert out["interfaces"][-1]["name"] == ifb
    assert RATE * 0.8 <= into_a <= RATE * 1.2, into_a
    assert RATE * 0.8 <= out_of_a <= RATE * 1.2, out_of_a
    check = call_plugin(host_ns, "bandwidth", cni_env("CHECK", container_id="a", netns=netns),
                        conf)
    assert check.status == 0, check.stdout
    ours(host_ns, "bandwidth", "DEL", conf, cid="a", netns=netns)
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode != 0
    ours(host_ns, "bandwidth", "DEL", conf, cid="a", netns=netns)


def test_kernel_state_matches_reference(host_ns: str, netns: str, netns2: str,
                                        pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pods
    limits = _bw(ingressRate=RATE, ingressBurst=BURST, egressRate=RATE, egressBurst=BURST)
    mine = ours(host_ns, "bandwidth", "ADD", chained(limits, a), cid="a", netns=netns)
    ref = theirs(host_ns, "bandwidth", "ADD", chained(limits, b), cid="b", netns=netns2)
    assert ref["interfaces"][-1]["name"] == ifb_name("pytnet", "b")
    for key in ("kind", "options"):
        assert _root(host_ns, host_veth(a))[key] == _root(host_ns, host_veth(b))[key]
        assert (_root(host_ns, mine["interfaces"][-1]["name"])[key]
                == _root(host_ns, ref["interfaces"][-1]["name"])[key])
    ifbs = [json.loads(ns_run(host_ns, "ip", "-j", "-d", "link", "show", r["interfaces"][-1][
        "name"]).stdout)[0] for r in (mine, ref)]
    # Not txqlen: pycni copies the host veth's, as current upstream does; 1.1.1 did not.
    for key in ("mtu", "operstate"):
        assert ifbs[0].get(key) == ifbs[1].get(key), (ifbs[0], ifbs[1])


def test_runtime_config_and_gc(host_ns: str, netns: str,
                               pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pods
    conf = chained({"type": "bandwidth", "capabilities": {"bandwidth": True},
                    "runtimeConfig": {"bandwidth": {"egressRate": RATE,
                                                    "egressBurst": BURST}}}, a)
    ours(host_ns, "bandwidth", "ADD", conf, cid="a", netns=netns)
    ifb = ifb_name("pytnet", "a")
    assert _root(host_ns, ifb)["kind"] == "tbf"
    assert _root(host_ns, host_veth(a))["kind"] != "tbf"  # no ingress limit asked for
    gc = {"cniVersion": "1.1.0", "name": "pytnet", "type": "bandwidth",
          "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    assert call_plugin(host_ns, "bandwidth", cni_env("GC"), gc).status == 0
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode == 0
    gc["cni.dev/valid-attachments"] = []
    assert call_plugin(host_ns, "bandwidth", cni_env("GC"), gc).status == 0
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode != 0


def test_shaped_subnets_use_htb_classes(host_ns: str, netns: str,
                                        pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pods
    conf = chained(_bw(ingressRate=RATE, ingressBurst=BURST,
                       shapedSubnets=["10.77.0.0/24"]), a)
    ours(host_ns, "bandwidth", "ADD", conf, cid="a", netns=netns)
    root = _root(host_ns, host_veth(a))
    assert root["kind"] == "htb"
    classes = ns_run(host_ns, "tc", "class", "show", "dev", host_veth(a)).stdout
    assert "htb 1:1 " in classes
    assert "htb 1:30 " in classes
    assert "rate 16Mbit" in classes
    filters = ns_run(host_ns, "tc", "filter", "show", "dev", host_veth(a)).stdout
    assert "match 0a4d0000/ffffff00 at 12" in filters  # peer (source) in 10.77.0.0/24
    assert "flowid 1:30" in filters


@pytest.mark.parametrize(("limits", "message"), [
    ({"ingressRate": 1000}, "ingressBurst must also be set"),
    ({"egressBurst": 1000}, "egressRate must also be set"),
    ({"ingressRate": 1000, "ingressBurst": 8 * 2**32}, "4GB"),
    ({"ingressRate": -1, "ingressBurst": 10}, "ingressRate"),
])
def test_invalid_limits_are_config_errors(host_ns: str, limits: dict[str, int],
                                          message: str) -> None:
    env = cni_env("ADD", container_id="a", netns="/run/netns/pyt-none")
    call = call_plugin(host_ns, "bandwidth", env, chained(_bw(**limits), None))
    assert call.status == 1
    assert call.json["code"] == 7
    assert message in call.json["msg"]


def test_both_subnet_lists_rejected(host_ns: str, netns: str,
                                    pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pods
    conf = chained(_bw(ingressRate=RATE, ingressBurst=BURST, shapedSubnets=["10.0.0.0/8"],
                       unshapedSubnets=["10.1.0.0/16"]), a)
    call = call_plugin(host_ns, "bandwidth", cni_env("ADD", container_id="a", netns=netns), conf)
    assert call.status == 1
    assert call.json["code"] == 7


def test_zero_limits_pass_result_through(host_ns: str, netns: str,
                                         pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pods
    out = ours(host_ns, "bandwidth", "ADD", chained(_bw(), a), cid="a", netns=netns)
    assert out == a


def test_del_when_netns_is_gone(host_ns: str) -> None:
    conf = chained(_bw(ingressRate=RATE, ingressBurst=BURST), None)
    ours(host_ns, "bandwidth", "DEL", conf, cid="gone", netns="/run/netns/pyt-gone")


KUBELET_UNLIMITED = 2**31 - 1  # math.MaxInt32 bits: kubelet's and containerd's "no limit"


@pytest.mark.parametrize("rate", [1_000_000, 100_000_000])
def test_kubelet_unlimited_burst(host_ns: str, netns: str,
                                 pods: tuple[dict[str, Any], dict[str, Any]], rate: int) -> None:
    # At 1 Mbit/s the bucket for 256 MiB is longer than the kernel's 32-bit tick field:
    # it is clamped to the longest one (the reference's uint32 arithmetic wraps instead).
    a, _ = pods
    conf = chained({"type": "bandwidth", "capabilities": {"bandwidth": True},
                    "runtimeConfig": {"bandwidth": {
                        "ingressRate": rate, "ingressBurst": KUBELET_UNLIMITED,
                        "egressRate": rate, "egressBurst": KUBELET_UNLIMITED}}}, a)
    out = ours(host_ns, "bandwidth", "ADD", conf, cid="a", netns=netns)
    ifb = ifb_name("pytnet", "a")
    for dev in (host_veth(a), ifb):
        root = _root(host_ns, dev)
        assert root["kind"] == "tbf"
        assert root["options"]["rate"] == rate // 8
    check = call_plugin(host_ns, "bandwidth", cni_env("CHECK", container_id="a", netns=netns),
                        {**conf, "prevResult": out})
    assert check.status == 0, check.stdout
    ours(host_ns, "bandwidth", "DEL", conf, cid="a", netns=netns)
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode != 0


def test_rates_beyond_32_bits_match_reference(host_ns: str, netns: str, netns2: str,
                                              pods: tuple[dict[str, Any], dict[str, Any]]
                                              ) -> None:
    # 1 Tbit/s is more bytes per second than tbf's 32-bit rate field: TCA_TBF_RATE64.
    a, b = pods
    limits = _bw(ingressRate=2**40, ingressBurst=KUBELET_UNLIMITED, egressRate=2**40,
                 egressBurst=KUBELET_UNLIMITED)
    mine = ours(host_ns, "bandwidth", "ADD", chained(limits, a), cid="a", netns=netns)
    ref = theirs(host_ns, "bandwidth", "ADD", chained(limits, b), cid="b", netns=netns2)
    assert _root(host_ns, host_veth(a)) == {**_root(host_ns, host_veth(b)),
                                           "refcnt": _root(host_ns, host_veth(a))["refcnt"]}
    assert (_root(host_ns, mine["interfaces"][-1]["name"])["options"]
            == _root(host_ns, ref["interfaces"][-1]["name"])["options"])
    check = call_plugin(host_ns, "bandwidth", cni_env("CHECK", container_id="a", netns=netns),
                        chained(limits, mine))
    assert check.status == 0, check.stdout


@pytest.mark.parametrize("limits", [
    {"ingressRate": RATE},  # ADD's rule: a rate needs a burst
    {"egressBurst": BURST},
    {"ingressRate": 10**30, "ingressBurst": BURST},
    {"ingressRate": RATE, "ingressBurst": BURST, "shapedSubnets": ["10.0.0.0/8"],
     "unshapedSubnets": ["10.1.0.0/16"]},
])
def test_del_needs_only_the_ifb_name(host_ns: str, netns: str,
                                     pods: tuple[dict[str, Any], dict[str, Any]],
                                     limits: dict[str, Any]) -> None:
    a, _ = pods
    ours(host_ns, "bandwidth", "ADD", chained(_bw(egressRate=RATE, egressBurst=BURST), a),
         cid="a", netns=netns)
    ifb = ifb_name("pytnet", "a")
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode == 0
    ours(host_ns, "bandwidth", "DEL", chained(_bw(**limits), a), cid="a", netns=netns)
    assert ns_run(host_ns, "ip", "link", "show", ifb).returncode != 0


def test_kubelet_unlimited_burst_with_shaped_subnets(
        host_ns: str, netns: str, pods: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pods
    conf = chained(_bw(ingressRate=1_000_000, ingressBurst=KUBELET_UNLIMITED,
                       egressRate=2**40, egressBurst=KUBELET_UNLIMITED,
                       shapedSubnets=["10.77.0.0/24"]), a)
    out = ours(host_ns, "bandwidth", "ADD", conf, cid="a", netns=netns)
    assert _root(host_ns, host_veth(a))["kind"] == "htb"
    check = call_plugin(host_ns, "bandwidth", cni_env("CHECK", container_id="a", netns=netns),
                        {**conf, "prevResult": out})
    assert check.status == 0, check.stdout


def test_long_container_ids(host_ns: str, netns: str, netns2: str, tmp_path: Path,
                            go_plugins: str) -> None:
    # The spec sets no limit on container IDs (the reference takes 100 KB); the ifalias GC
    # reads holds at most 255 bytes, so a long one is hashed, and GC still tells them apart.
    long_a, long_b = "a" * 100_000, "a" * 99_999 + "b"
    bridge = unique_name("br")
    pods = [bridge_pod(host_ns, ns, tmp_path, bridge=bridge, subnet="10.76.0.0/24", cid=cid)
            for ns, cid in ((netns, long_a), (netns2, long_b))]
    for pod, ns, cid in zip(pods, (netns, netns2), (long_a, long_b), strict=True):
        conf = chained(_bw(egressRate=RATE, egressBurst=BURST), pod)
        ours(host_ns, "bandwidth", "ADD", conf, cid=cid, netns=ns)
        assert _root(host_ns, ifb_name("pytnet", cid))["kind"] == "tbf"
    gc = {"cniVersion": "1.1.0", "name": "pytnet", "type": "bandwidth",
          "cni.dev/valid-attachments": [{"containerID": long_a, "ifname": "eth0"}]}
    assert call_plugin(host_ns, "bandwidth", cni_env("GC"), gc).status == 0
    assert ns_run(host_ns, "ip", "link", "show", ifb_name("pytnet", long_a)).returncode == 0
    assert ns_run(host_ns, "ip", "link", "show", ifb_name("pytnet", long_b)).returncode != 0
    conf = chained(_bw(egressRate=RATE, egressBurst=BURST), pods[0])
    ours(host_ns, "bandwidth", "DEL", conf, cid=long_a, netns=netns)
    assert ns_run(host_ns, "ip", "link", "show", ifb_name("pytnet", long_a)).returncode != 0
