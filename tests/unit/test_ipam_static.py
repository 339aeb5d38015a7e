"""The static IPAM plugin: addresses, overrides and their precedence, validation, CHECK."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.plugins.ipam.static import Static
from pycni.skel import run_plugin_bytes
from pycni.spec import ErrorCode
from pycni.testing import cni_env


def call(command: str, conf: dict[str, Any], args: str = "") -> tuple[int, Any]:
    env = cni_env(command, container_id="c1", netns="/var/run/netns/none", args=args)
    status, out = run_plugin_bytes(Static(), env, json.dumps(conf).encode())
    return status, json.loads(out) if out.strip() else None


def conf_for(version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    ipam.setdefault("addresses", [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                                  {"address": "3ffe:ffff:0:1ff::1/64"}])
    return {"cniVersion": version, "name": "net1", "type": "macvlan",
            "ipam": {"type": "static", **ipam}}


def test_add_returns_addresses_routes_dns() -> None:
    conf = conf_for(routes=[{"dst": "0.0.0.0/0"}],
                    dns={"nameservers": ["8.8.8.8"], "domain": "example.com",
                         "search": ["example.com"]})
    status, result = call("ADD", conf)
    assert status == 0, result
    assert result == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                {"address": "3ffe:ffff:0:1ff::1/64"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]},
    }


def test_cni_args_ip_appends_and_gateway_applies_to_matching_cni_args_ips() -> None:
    status, result = call("ADD", conf_for(),
                          args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.20.0.5/16, 10.10.0.9/24;"
                               "GATEWAY=10.20.0.1,10.10.0.1")
    assert status == 0, result
    assert result["ips"] == [
        {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},  # configured: keeps its own
        {"address": "3ffe:ffff:0:1ff::1/64"},
        {"address": "10.20.0.5/16", "gateway": "10.20.0.1"},
        {"address": "10.10.0.9/24", "gateway": "10.10.0.1"},
    ]


def test_args_ips_replace_config_and_runtime_ips_replace_args() -> None:
    conf = conf_for()
    conf["args"] = {"cni": {"ips": ["10.30.0.5/24"]}}
    status, result = call("ADD", conf, args="IP=10.20.0.5/16")
    assert status == 0, result
    assert [ip["address"] for ip in result["ips"]] == ["10.30.0.5/24"]
    conf["runtimeConfig"] = {"ips": ["10.40.0.5/24", "2001:db8::5/64"]}
    status, result = call("ADD", conf)
    assert [ip["address"] for ip in result["ips"]] == ["10.40.0.5/24", "2001:db8::5/64"]


@pytest.mark.parametrize(
    ("conf", "args", "needle"),
    [
        ({"cniVersion": "1.0.0", "name": "n", "type": "x"}, "", "ipam"),
        (conf_for(addresses="10.1.0.1/24"), "", "ipam.addresses"),
        (conf_for(addresses=[{"address": "10.1.0.1"}]), "", r"ipam.addresses\[0\].address"),
        (conf_for(addresses=[{}]), "", r"ipam.addresses\[0\].address"),
        (conf_for(addresses=["10.1.0.1/24"]), "", r"ipam.addresses\[0\]"),
        (conf_for(addresses=[{"address": "10.1.0.1/24", "gateway": "zz"}]), "",
         r"ipam.addresses\[0\].gateway"),
        (conf_for(addresses=[{"address": "10.1.0.1/24", "gateway": "2001:db8::1"}]), "",
         r"ipam.addresses\[0\].gateway"),
        (conf_for(), "IP=10.1.0.1", "CNI_ARGS IP"),
        (conf_for(), "GATEWAY=nope", "CNI_ARGS GATEWAY"),
        (conf_for(routes=[{"gw": "10.0.0.1"}]), "", r"ipam.routes\[0\]"),
        (conf_for(dns={"nameservers": "8.8.8.8"}), "", "ipam.dns"),
        ({**conf_for(), "runtimeConfig": {"ips": ["10.1.0.1"]}}, "", r"runtimeConfig.ips\[0\]"),
        ({**conf_for(), "args": {"cni": {"ips": "10.1.0.1/24"}}}, "", "args.cni.ips"),
        (conf_for("0.2.0", addresses=[{"address": "10.1.0.1/24"}, {"address": "10.2.0.1/24"}]),
         "", "one address per family"),
    ],
)
def test_invalid_config(conf: dict[str, Any], args: str, needle: str) -> None:
    status, err = call("ADD", conf, args)
    assert status == 1
    assert err["code"] == ErrorCode.INVALID_NETWORK_CONFIG, err
    assert re.search(needle, err["msg"]), err


def test_legacy_version_result() -> None:
    status, result = call("ADD", conf_for("0.2.0"))
    assert status == 0, result
    assert result["ip4"] == {"ip": "10.10.0.1/24", "gateway": "10.10.0.254"}
    assert result["ip6"] == {"ip": "3ffe:ffff:0:1ff::1/64"}


def test_del_always_succeeds() -> None:
    assert call("DEL", {"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {}}) == (0, None)


def test_check_against_prev_result() -> None:
    conf = conf_for()
    status, result = call("ADD", conf)
    assert status == 0
    assert call("CHECK", {**conf, "prevResult": result}) == (0, None)
    status, err = call("CHECK", conf)
    assert (status, err["code"]) == (1, ErrorCode.INVALID_NETWORK_CONFIG)
    wrong_gw = json.loads(json.dumps(result))
    wrong_gw["ips"][0]["gateway"] = "10.10.0.1"
    status, err = call("CHECK", {**conf, "prevResult": wrong_gw})
    assert status == 1
    assert "gateway" in err["msg"]
    missing = {**result, "ips": result["ips"][1:]}
    status, err = call("CHECK", {**conf, "prevResult": missing})
    assert status == 1
    assert "10.10.0.1/24" in err["msg"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["10.1.0.5/24", "10.1.0.5", "2001:db8::5/64", "::ffff:10.1.0.1/120", "/"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["address", "gateway", "dst", "gw", "nameservers", "ips"]), inner,
        max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["addresses", "routes", "dns"]), json_values, max_size=3),
       json_values, st.sampled_from(["", "IP=10.1.0.9/24", "IP=x", "GATEWAY=10.1.0.1", "IP=,"]),
       st.sampled_from(["0.2.0", "0.4.0", "1.1.0"]))
def test_hostile_configs_get_a_cni_error_never_a_crash(ipam: dict[str, Any], ips: Any,
                                                       args: str, version: str) -> None:
    conf = {"cniVersion": version, "name": "fuzz", "type": "macvlan",
            "ipam": {"type": "static", **ipam}, "runtimeConfig": {"ips": ips}}
    status, out = call("ADD", conf, args)
    if status:
        assert out["code"] in {1, 2, 4, 7}, out
