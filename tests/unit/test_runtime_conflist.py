"""NetworkConfigList: parsing, hostile inputs, version choice and each plugin's stdin."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.spec import (
    CNIError,
    DecodingFailure,
    GCAttachment,
    IncompatibleCNIVersion,
    InvalidNetworkConfig,
    IPConfig,
    NetworkConfig,
    NetworkConfigList,
    Result,
    derive_runtime_config,
)


def _list(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net1",
                            "plugins": [{"type": "bridge", "bridge": "br0"},
                                        {"type": "portmap",
                                         "capabilities": {"portMappings": True}}]}
    base.update(over)
    return base


def test_parse_keeps_unknown_fields_and_bytes() -> None:
    data = json.dumps(_list(vendorThing={"x": [1, 2]})).encode()
    net = NetworkConfigList.parse(data)
    assert net.name == "net1"
    assert net.cni_version == "1.0.0"
    assert net.types == ["bridge", "portmap"]
    assert net.raw["vendorThing"] == {"x": [1, 2]}
    assert net.source == data
    assert net.capabilities() == ["portMappings"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("disableCheck", True, True), ("disableCheck", "true", True),
    ("disableCheck", "FALSE", False), ("disableGC", "True", True),
    ("loadOnlyInlinedPlugins", False, False),
])
def test_bool_fields_accept_strings(field: str, value: Any, expected: bool) -> None:
    net = NetworkConfigList.parse(_list(**{field: value}))
    attr = {"disableCheck": "disable_check", "disableGC": "disable_gc",
            "loadOnlyInlinedPlugins": "load_only_inlined_plugins"}[field]
    assert getattr(net, attr) is expected


@pytest.mark.parametrize("value", ["yes", 1, None, [], {}])
def test_bool_fields_reject_other_values(value: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="disableCheck"):
        NetworkConfigList.parse(_list(disableCheck=value))


@pytest.mark.parametrize(("versions", "version", "chosen"), [
    (["0.4.0", "1.0.0", "1.1.0"], "0.3.1", "1.1.0"),
    (["1.0.0", "9.9.9"], "0.4.0", "1.0.0"),     # future versions are skipped
    ([], "0.3.1", "0.3.1"),
    (["1.0.0"], None, "1.0.0"),
])
def test_cni_versions_pick_the_highest_supported(versions: list[str], version: str | None,
                                                 chosen: str) -> None:
    raw = _list(cniVersions=versions)
    if version is None:
        del raw["cniVersion"]
    else:
        raw["cniVersion"] = version
    net = NetworkConfigList.parse(raw)
    assert net.cni_version == chosen
    assert chosen in net.cni_versions


def test_no_version_reads_as_0_1_0() -> None:
    raw = _list()
    del raw["cniVersion"]
    assert NetworkConfigList.parse(raw).cni_version == "0.1.0"


def test_unsupported_version_is_incompatible() -> None:
    with pytest.raises(IncompatibleCNIVersion) as err:
        NetworkConfigList.parse(_list(cniVersion="2.0.0"))
    assert err.value.code == 1


@pytest.mark.parametrize(("data", "error"), [
    (b"", DecodingFailure),
    (b"[]", DecodingFailure),
    (b'{"name": "x"', DecodingFailure),
    (b"\xff\xfe", DecodingFailure),
    (b'{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x", "n": NaN}]}',
     DecodingFailure),
    (b"[" * 100000 + b"]" * 100000, DecodingFailure),
    (json.dumps(_list(name="")).encode(), InvalidNetworkConfig),
    (json.dumps(_list(name="../etc")).encode(), InvalidNetworkConfig),
    (json.dumps(_list(name=7)).encode(), InvalidNetworkConfig),
    (json.dumps(_list(cniVersion=1)).encode(), InvalidNetworkConfig),
    (json.dumps(_list(cniVersion="1.0")).encode(), InvalidNetworkConfig),
    (json.dumps(_list(cniVersions="1.0.0")).encode(), InvalidNetworkConfig),
    (json.dumps(_list(cniVersions=[1])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins={"type": "x"})).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=["bridge"])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[{"bridge": "br0"}])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[{"type": ""}])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[{"type": "../../bin/sh"}])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[{"type": ".."}])).encode(), InvalidNetworkConfig),
    (json.dumps(_list(plugins=[{"type": "x", "capabilities": {"a": "yes"}}])).encode(),
     InvalidNetworkConfig),
    (json.dumps(_list(loadOnlyInlinedPlugins=True, plugins=None)).encode(),
     InvalidNetworkConfig),
])
def test_hostile_inputs_are_cni_errors(data: bytes, error: type[CNIError]) -> None:
    with pytest.raises(error):
        NetworkConfigList.parse(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_exceptions(data: bytes) -> None:
    with contextlib.suppress(CNIError):
        NetworkConfigList.parse(data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                        max_size=3),
                    max_leaves=20))
def test_arbitrary_json_never_escapes_as_other_exceptions(value: Any) -> None:
    for obj in (value, {"name": "n", "plugins": value}, {"name": "n", "plugins": [value]},
                {"name": "n", "cniVersions": value, "plugins": [{"type": "t"}]}):
        with contextlib.suppress(CNIError):
            NetworkConfigList.parse(json.dumps(obj).encode())


def test_extra_plugins_are_appended_unless_inlined_only() -> None:
    extra = [{"type": "tuning"}]
    assert NetworkConfigList.parse(_list(), extra_plugins=extra).types == [
        "bridge", "portmap", "tuning"]
    inlined = NetworkConfigList.parse(_list(loadOnlyInlinedPlugins=True), extra_plugins=extra)
    assert inlined.types == ["bridge", "portmap"]
    no_plugins = _list()
    del no_plugins["plugins"]
    assert NetworkConfigList.parse(no_plugins, extra_plugins=extra).types == ["tuning"]


def test_upconversion_of_a_single_conf() -> None:
    conf = {"cniVersion": "0.4.0", "name": "single", "type": "bridge", "ipam": {"type": "x"}}
    net = NetworkConfigList.from_conf(json.dumps(conf))
    assert net.name == "single"
    assert net.cni_version == "0.4.0"
    assert net.plugins == (conf,)
    assert json.loads(net.source) == {"name": "single", "cniVersion": "0.4.0",
                                      "plugins": [conf]}
    with pytest.raises(InvalidNetworkConfig):
        NetworkConfigList.from_conf(json.dumps({"name": "x", "cniVersion": "1.0.0"}))


def _result() -> Result:
    import ipaddress

    return Result(cni_version="1.1.0",
                  ips=[IPConfig(address=ipaddress.ip_interface("10.0.0.5/24"))])


def test_plugin_stdin_injects_name_version_prev_result_and_runtime_config() -> None:
    net = NetworkConfigList.parse(_list(cniVersion="0.4.0", plugins=[
        {"type": "bridge", "name": "other", "cniVersion": "9.9.9"},
        {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False},
         "snat": True}]))
    caps = {"portMappings": [{"hostPort": 80, "containerPort": 8080}], "bandwidth": {"x": 1},
            "ips": ["10.0.0.9/24"]}
    first = net.plugin_config(0, capability_args=caps)
    assert first == {"type": "bridge", "name": "net1", "cniVersion": "0.4.0"}
    second = net.plugin_config(1, prev_result=_result(), capability_args=caps)
    assert second["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert "capabilities" not in second
    assert second["snat"] is True
    # prevResult is converted to the list's version (0.4.0 carries ips[].version).
    assert second["prevResult"]["cniVersion"] == "0.4.0"
    assert second["prevResult"]["ips"][0]["version"] == "4"
    # The list itself is not modified.
    assert "capabilities" in net.plugins[1]


def test_runtime_config_derivation() -> None:
    plugin = {"capabilities": {"portMappings": True, "ips": True, "mac": False}}
    assert derive_runtime_config(plugin, None) == {}
    assert derive_runtime_config(plugin, {"mac": "aa", "dns": {}}) == {}
    assert derive_runtime_config(plugin, {"ips": ["1.2.3.4/32"], "mac": "aa"}) == {
        "ips": ["1.2.3.4/32"]}
    assert derive_runtime_config({}, {"ips": []}) == {}


def test_gc_extra_carries_both_keys() -> None:
    net = NetworkConfigList.parse(_list(cniVersion="1.1.0"))
    extra = net.gc_extra([GCAttachment("c1", "eth0"), GCAttachment("c2", "net1")])
    items = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    assert extra == {"cni.dev/valid-attachments": items, "cni.dev/attachments": items}
    conf = net.plugin_config(0, extra=extra)
    assert conf["cni.dev/valid-attachments"] == items


def test_with_version_only_allows_listed_versions() -> None:
    net = NetworkConfigList.parse(_list(cniVersions=["1.0.0", "1.1.0"]))
    assert net.cni_version == "1.1.0"
    assert net.with_version("1.0.0").cni_version == "1.0.0"
    with pytest.raises(IncompatibleCNIVersion):
        net.with_version("0.4.0")


@pytest.mark.parametrize("name", ["-net", "net\n", 7])
def test_bad_list_name_is_told_as_a_plugin_config_tells_it(name: Any) -> None:
    # One wording of the name rule, not the regular expression.
    with pytest.raises(InvalidNetworkConfig) as listed:
        NetworkConfigList.parse(_list(name=name))
    with pytest.raises(InvalidNetworkConfig) as single:
        NetworkConfig.parse({"cniVersion": "1.0.0", "name": name, "type": "bridge"})
    assert listed.value.msg == single.value.msg
