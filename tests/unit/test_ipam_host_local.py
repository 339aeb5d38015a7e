"""The host-local plugin through the CNI protocol: config, results, errors, CHECK, GC, STATUS."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.plugins.ipam.host_local import HostLocal
from pycni.skel import run_plugin_bytes
from pycni.spec import ErrorCode
from pycni.testing import cni_env


def ls(path: Path) -> list[str]:
    """The names in a directory, sorted."""
    return sorted(p.name for p in Path(path).iterdir())


def call(command: str, conf: dict[str, Any], cid: str = "c1", ifname: str = "eth0",
         args: str = "") -> tuple[int, Any]:
    """Run host-local in-process; (exit status, parsed stdout)."""
    env = cni_env(command, container_id=cid, netns="/var/run/netns/none", ifname=ifname,
                  args=args)
    status, out = run_plugin_bytes(HostLocal(), env, json.dumps(conf).encode())
    return status, json.loads(out) if out.strip() else None


def conf_for(data_dir: Path, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    ipam.setdefault("ranges", [[{"subnet": "10.1.0.0/24"}]])
    return {"cniVersion": version, "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}}


def addresses(result: Any) -> list[str]:
    return [ip["address"] for ip in result["ips"]]


def test_add_result_dual_stack_with_routes_and_dns(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\n; other comment\nnameserver 192.0.2.53\nnameserver\n"
                      "domain example.com\nsearch a.example b.example\noptions ndots:2 rotate\n")
    conf = conf_for(tmp_path, ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]],
                    routes=[{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}],
                    resolvConf=str(resolv))
    status, result = call("ADD", conf)
    assert status == 0, result
    assert result == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}],
        "dns": {"nameservers": ["192.0.2.53"], "domain": "example.com",
                "search": ["a.example", "b.example"], "options": ["ndots:2", "rotate"]},
    }


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0",
                                     "1.1.0"])
def test_add_for_every_version(tmp_path: Path, version: str) -> None:
    status, result = call("ADD", conf_for(tmp_path, version))
    assert status == 0, result
    assert result["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert result["ip4"] == {"ip": "10.1.0.2/24", "gateway": "10.1.0.1"}
    else:
        ip = result["ips"][0]
        assert ip["address"] == "10.1.0.2/24"
        assert ("version" in ip) == (version < "1.0.0")


def test_legacy_range_comes_first(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, subnet="10.9.0.0/24", rangeStart="10.9.0.100",
                    rangeEnd="10.9.0.110", gateway="10.9.0.254")
    status, result = call("ADD", conf)
    assert status == 0, result
    assert result["ips"] == [{"address": "10.9.0.100/24", "gateway": "10.9.0.254"},
                             {"address": "10.1.0.2/24", "gateway": "10.1.0.1"}]


def test_runtime_ip_ranges_replace_configured_ranges(tmp_path: Path) -> None:
    conf = conf_for(tmp_path)
    conf["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.7.0.0/24"}]]}
    status, result = call("ADD", conf)
    assert status == 0, result
    assert addresses(result) == ["10.7.0.2/24"]


@pytest.mark.parametrize(
    ("where", "source"),
    [("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.77"),
     ("args", {"cni": {"ips": ["10.1.0.77"]}}),
     ("runtimeConfig", {"ips": ["10.1.0.77/24"]})],
)
def test_requested_address(tmp_path: Path, where: str, source: Any) -> None:
    conf = conf_for(tmp_path)
    cni_args = ""
    if where == "CNI_ARGS":
        cni_args = source
    else:
        conf[where] = source
    status, result = call("ADD", conf, args=cni_args)
    assert status == 0, result
    assert addresses(result) == ["10.1.0.77/24"]
    status, err = call("ADD", conf, cid="c2", args=cni_args)
    assert status == 1
    assert err["code"] == ErrorCode.ADDRESS_IN_USE
    assert "10.1.0.77" in err["msg"]


def test_unknown_cni_args_need_ignore_unknown(tmp_path: Path) -> None:
    status, err = call("ADD", conf_for(tmp_path), args="K8S_POD_NAME=x")
    assert status == 1
    assert err["code"] == ErrorCode.UNSUPPORTED_FIELD


def test_exhausted_names_the_range(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, ranges=[[{"subnet": "10.1.0.0/30"}]])
    assert call("ADD", conf, cid="a")[0] == 0
    status, err = call("ADD", conf, cid="b")
    assert status == 1
    assert err["code"] == ErrorCode.ADDRESS_EXHAUSTED
    assert "10.1.0.1-10.1.0.2" in err["msg"]


@pytest.mark.parametrize(
    ("ipam", "needle"),
    [
        ({"ranges": None}, "no IP ranges"),
        ({"ranges": []}, "no IP ranges"),
        ({"ranges": {"subnet": "10.1.0.0/24"}}, "ipam.ranges"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]},
         r"ipam.ranges\[0\]\[0\].rangeStart"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]]}, "overlap"),
        ({"subnet": "10.1.0.0/24"}, "overlap"),
        ({"subnet": "10.1.0.0/33"}, "ipam.subnet"),
        ({"routes": [{"dst": "nope"}]}, r"ipam.routes\[0\]"),
        ({"routes": "0.0.0.0/0"}, "ipam.routes"),
        ({"dataDir": 7}, "ipam.dataDir"),
        ({"resolvConf": ["x"]}, "ipam.resolvConf"),
    ],
)
def test_bad_config_is_invalid_network_config(tmp_path: Path, ipam: dict[str, Any],
                                              needle: str) -> None:
    status, err = call("ADD", conf_for(tmp_path, **ipam))
    assert status == 1
    assert err["code"] == ErrorCode.INVALID_NETWORK_CONFIG, err
    assert re.search(needle, err["msg"]), err
    assert not (tmp_path / "net1").exists() or ls(tmp_path / "net1") == ["lock"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c.pop("ipam"), "ipam"),
        (lambda c: c.update(runtimeConfig={"ips": "10.1.0.5"}), "runtimeConfig.ips"),
        (lambda c: c.update(runtimeConfig={"ips": ["10.1.0.x"]}), r"runtimeConfig.ips\[0\]"),
        (lambda c: c.update(args={"cni": {"ips": [5]}}), r"args.cni.ips\[0\]"),
        (lambda c: c.update(args={"cni": {"ips": ["10.3.0.5"]}}), "not in any range set"),
        (lambda c: c.update(runtimeConfig={"ipRanges": [[{"subnet": "x"}]]}),
         r"runtimeConfig.ipRanges\[0\]\[0\].subnet"),
        (lambda c: c.update(cniVersion="0.2.0", ipam={**c["ipam"], "ranges": [
            [{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}), "one address per family"),
    ],
)
def test_hostile_inputs(tmp_path: Path, mutate: Any, needle: str) -> None:
    conf = conf_for(tmp_path)
    mutate(conf)
    status, err = call("ADD", conf)
    assert status == 1
    assert err["code"] == ErrorCode.INVALID_NETWORK_CONFIG, err
    assert re.search(needle, err["msg"]), err


def test_bad_cni_args_ip(tmp_path: Path) -> None:
    status, err = call("ADD", conf_for(tmp_path), args="IP=300.1.1.1")
    assert (status, err["code"]) == (1, ErrorCode.INVALID_NETWORK_CONFIG)
    assert "CNI_ARGS IP" in err["msg"]


def test_unreadable_resolv_conf_allocates_nothing(tmp_path: Path) -> None:
    status, err = call("ADD", conf_for(tmp_path, resolvConf=str(tmp_path / "missing")))
    assert (status, err["code"]) == (1, ErrorCode.IO_FAILURE)
    assert "ipam.resolvConf" in err["msg"]
    assert not (tmp_path / "net1").exists()


def test_del_is_idempotent_and_per_interface(tmp_path: Path) -> None:
    conf = conf_for(tmp_path)
    assert call("ADD", conf, ifname="eth0")[0] == 0
    assert call("ADD", conf, ifname="eth1")[0] == 0
    assert call("DEL", conf, ifname="eth0") == (0, None)
    assert call("DEL", conf, ifname="eth0") == (0, None)
    assert ls(tmp_path / "net1") == ["10.1.0.3", "last_reserved_ip.0", "lock"]
    assert call("DEL", conf_for(tmp_path / "never-used")) == (0, None)


def test_check(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]])
    assert call("ADD", conf)[0] == 0
    assert call("CHECK", conf) == (0, None)
    status, err = call("CHECK", conf, cid="other")
    assert (status, err["code"]) == (1, ErrorCode.UNKNOWN_CONTAINER)
    (tmp_path / "net1" / "2001:db8::2").unlink()
    status, err = call("CHECK", conf)
    assert status == 1
    assert "range set 1" in err["msg"]


def test_check_accepts_legacy_reservation(tmp_path: Path) -> None:
    (tmp_path / "net1").mkdir()
    (tmp_path / "net1" / "10.1.0.9").write_bytes(b"c1")
    assert call("CHECK", conf_for(tmp_path)) == (0, None)


def gc_conf(tmp_path: Path, valid: Any, **ipam: Any) -> dict[str, Any]:
    conf = conf_for(tmp_path, "1.1.0", **ipam)
    if valid is not None:
        conf["cni.dev/valid-attachments"] = valid
    return conf


def test_gc_releases_stale_reservations(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, "1.1.0")
    for cid in ("keep", "stale1", "stale2"):
        assert call("ADD", conf, cid=cid)[0] == 0
    (tmp_path / "net1" / "10.1.0.50").write_bytes(b"keep")  # legacy, same container
    status, out = call("GC", gc_conf(tmp_path, [{"containerID": "keep", "ifname": "eth0"}]))
    assert (status, out) == (0, None)
    assert ls(tmp_path / "net1") == ["10.1.0.2", "10.1.0.50",
                                                     "last_reserved_ip.0", "lock"]
    assert call("GC", gc_conf(tmp_path, [])) == (0, None)
    assert ls(tmp_path / "net1") == ["last_reserved_ip.0", "lock"]


@pytest.mark.parametrize("valid", [None, "x", [{"containerID": 1, "ifname": "eth0"}], ["x"]])
def test_gc_needs_a_valid_attachment_list(tmp_path: Path, valid: Any) -> None:
    assert call("ADD", conf_for(tmp_path, "1.1.0"))[0] == 0
    status, err = call("GC", gc_conf(tmp_path, valid))
    assert (status, err["code"]) == (1, ErrorCode.INVALID_NETWORK_CONFIG)
    assert "10.1.0.2" in ls(tmp_path / "net1")


def test_gc_needs_1_1_0(tmp_path: Path) -> None:
    status, err = call("GC", {**gc_conf(tmp_path, []), "cniVersion": "1.0.0"})
    assert (status, err["code"]) == (1, ErrorCode.INCOMPATIBLE_CNI_VERSION)


def test_status_exhausted_pool(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, "1.1.0", ranges=[[{"subnet": "10.1.0.0/30"}],
                                              [{"subnet": "2001:db8::/64"}]])
    assert call("STATUS", conf) == (0, None)
    assert not (tmp_path / "net1").exists()
    assert call("ADD", conf)[0] == 0
    status, err = call("STATUS", conf)
    assert (status, err["code"]) == (1, ErrorCode.PLUGIN_NOT_AVAILABLE)
    assert "range set 0 (10.1.0.1-10.1.0.2)" in err["details"]
    assert call("DEL", conf)[0] == 0
    assert call("STATUS", conf) == (0, None)


def test_status_unwritable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    status, err = call("STATUS", conf_for(tmp_path / "file", "1.1.0"))
    assert (status, err["code"]) == (1, ErrorCode.PLUGIN_NOT_AVAILABLE)
    assert "not a directory" in err["details"]


def test_del_releases_even_when_ranges_broke_after_add(tmp_path: Path) -> None:
    conf = conf_for(tmp_path)
    assert call("ADD", conf)[0] == 0
    broken = conf_for(tmp_path, ranges=[[{"subnet": "not a subnet"}]])
    assert call("DEL", broken, args="K8S_POD_NAME=x") == (0, None)
    assert ls(tmp_path / "net1") == ["last_reserved_ip.0", "lock"]
    status, err = call("DEL", {**conf, "ipam": {"type": "host-local", "dataDir": 5}})
    assert (status, err["code"]) == (1, ErrorCode.INVALID_NETWORK_CONFIG)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["10.1.0.0/24", "10.1.0.5", "2001:db8::/64", "::ffff:10.1.0.1", "/",
                       "10.1.0.0/33", "", " 10.1.0.9", "10.1.0.5/24"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["subnet", "rangeStart", "rangeEnd", "gateway", "dst", "gw", "ips"]),
        inner, max_size=4),
    max_leaves=12,
)
ipam_keys = st.sampled_from(["ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes",
                             "dataDir", "resolvConf"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(ipam_keys, json_values, max_size=4), json_values, json_values,
       st.sampled_from(["", "IP=10.1.0.9", "IP=x", "IP=", "IgnoreUnknown=1;Z=1", "=;"]))
def test_hostile_configs_get_a_cni_error_never_a_crash(ipam: dict[str, Any], runtime_ips: Any,
                                                       args_ips: Any, cni_args: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if ipam.get("dataDir") is None or isinstance(ipam["dataDir"], str):
            ipam = {**ipam, "dataDir": tmp}  # never write outside the sandbox
        conf = {"cniVersion": "1.0.0", "name": "fuzz", "type": "bridge",
                "ipam": {"type": "host-local", **ipam},
                "runtimeConfig": {"ips": runtime_ips, "ipRanges": runtime_ips},
                "args": {"cni": {"ips": args_ips}}}
        for command in ("ADD", "CHECK", "DEL"):
            status, out = call(command, conf, args=cni_args)
            if status:
                assert out["code"] in {1, 2, 4, 5, 6, 7, 101, 102, 3}, out
                assert out["msg"]


def test_ipv4_mapped_request_is_the_ipv4_address(tmp_path: Path) -> None:
    conf = {**conf_for(tmp_path), "runtimeConfig": {"ips": ["::ffff:10.1.0.77"]}}
    status, result = call("ADD", conf)
    assert status == 0, result
    assert addresses(result) == ["10.1.0.77/24"]
    assert (tmp_path / "net1" / "10.1.0.77").read_bytes() == b"c1\r\neth0"


def test_nearly_full_pool_finds_the_last_free_addresses(tmp_path: Path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    free = {"10.1.3.7", "10.1.50.9"}
    for n in range(2, 2**14 - 1):  # .0.2 - .63.254 of 10.1.0.0/18
        ip = f"10.1.{n >> 8}.{n & 255}"
        if ip not in free:
            (d / ip).write_bytes(b"x\r\neth0")
    (d / "last_reserved_ip.0").write_bytes(b"10.1.20.0")
    conf = conf_for(tmp_path, ranges=[[{"subnet": "10.1.0.0/18"}]])
    got = [addresses(call("ADD", conf, cid=f"c{i}")[1]) for i in range(2)]
    # Round-robin from the last reservation: .50.9 comes first, then the walk wraps.
    assert got == [["10.1.50.9/18"], ["10.1.3.7/18"]]
    status, err = call("ADD", conf, cid="c3")
    assert (status, err["code"]) == (1, ErrorCode.ADDRESS_EXHAUSTED)


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC"])
def test_no_store_is_created_for_a_network_never_stored(tmp_path: Path, command: str) -> None:
    conf = gc_conf(tmp_path, []) if command == "GC" else conf_for(tmp_path)
    call(command, conf)
    assert ls(tmp_path) == []


#: 100 KB: the spec sets no limit on a container ID, and the reference accepts this.
LONG_ID = "c" + "0123456789abcdef" * 6400


def test_go_written_lease_of_a_100_kb_container_id_is_released(tmp_path: Path) -> None:
    (tmp_path / "net1").mkdir()
    # The reference writes "<containerID>\r\n<ifname>" (os.WriteFile, no newline).
    (tmp_path / "net1" / "10.1.0.7").write_bytes(LONG_ID.encode() + b"\r\neth0")
    assert call("CHECK", conf_for(tmp_path), cid=LONG_ID) == (0, None)
    assert call("DEL", conf_for(tmp_path), cid=LONG_ID[:-1]) == (0, None)
    assert "10.1.0.7" in ls(tmp_path / "net1")
    assert call("DEL", conf_for(tmp_path), cid=LONG_ID) == (0, None)
    assert ls(tmp_path / "net1") == ["lock"]


def test_100_kb_container_id_add_check_gc(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, "1.1.0")
    assert addresses(call("ADD", conf, cid=LONG_ID)[1]) == ["10.1.0.2/24"]
    status, err = call("ADD", conf, cid=LONG_ID)  # the lease is recognised as this one's
    assert (status, err["code"]) == (1, 102)
    assert (tmp_path / "net1" / "10.1.0.2").read_bytes() == LONG_ID.encode() + b"\r\neth0"
    assert call("CHECK", conf, cid=LONG_ID) == (0, None)
    assert call("GC", gc_conf(tmp_path, [{"containerID": LONG_ID, "ifname": "eth0"}])) == (0, None)
    assert "10.1.0.2" in ls(tmp_path / "net1")
    assert call("GC", gc_conf(tmp_path, [{"containerID": LONG_ID[:-1], "ifname": "eth0"}])
                ) == (0, None)
    assert "10.1.0.2" not in ls(tmp_path / "net1")
