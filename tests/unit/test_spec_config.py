"""NetworkConfig.parse, version helpers and the error model, fed hostile input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.spec import (
    NAME_RE,
    SUPPORTED_VERSIONS,
    AddressExhausted,
    CNIError,
    DecodingFailure,
    ErrorCode,
    IncompatibleCNIVersion,
    InternalError,
    InvalidNetworkConfig,
    NetworkConfig,
    Result,
    bool_field,
    decode_json_object,
    highest_supported,
    int_field,
    parse_version,
    require_supported,
    str_field,
    version_at_least,
)


def conf(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def test_minimal_config() -> None:
    c = NetworkConfig.parse(json.dumps(conf()).encode())
    assert (c.cni_version, c.name, c.type) == ("1.0.0", "pytnet", "bridge")
    assert c.prev_result is None
    assert c.ipam is None
    assert c.capabilities == c.runtime_config == c.args == {}
    assert c.dns.is_empty()


def test_everything_parsed_and_raw_kept() -> None:
    raw = conf(
        capabilities={"portMappings": True},
        ipam={"type": "host-local", "subnet": "10.1.0.0/24"},
        dns={"nameservers": ["10.1.0.1"], "search": ["svc"]},
        runtimeConfig={"portMappings": [{"hostPort": 8080}]},
        args={"cni": {"ips": ["10.1.0.9/24"]}},
        prevResult={"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.9/24"}]},
        bridge="cni0",
    )
    c = NetworkConfig.parse(raw)
    assert c.raw["bridge"] == "cni0"
    assert c.ipam == {"type": "host-local", "subnet": "10.1.0.0/24"}
    assert c.dns.nameservers == ["10.1.0.1"]
    assert c.cni_args() == {"ips": ["10.1.0.9/24"]}
    assert c.prev_result is not None
    assert str(c.prev_result.ips[0].address) == "10.1.0.9/24"


@pytest.mark.parametrize("version", [_DROP, None, ""])
def test_missing_version_is_0_1_0(version: Any) -> None:
    assert NetworkConfig.parse(conf(cniVersion=version)).cni_version == "0.1.0"


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_supported_version_parses(version: str) -> None:
    assert NetworkConfig.parse(conf(cniVersion=version)).cni_version == version


@pytest.mark.parametrize(
    "version", ["0.1", "1", "1.0", "v1.0.0", "1.0.0 ", "1.0.0\n", "1.0.0.0", "2.0.0", "0.5.0",
                "\uff11.0.0", "1.0.0-rc1", "99999999.0.0", "-1.0.0"],
)
def test_wrong_version_strings_are_code_1(version: str) -> None:
    with pytest.raises(IncompatibleCNIVersion) as info:
        NetworkConfig.parse(conf(cniVersion=version))
    assert info.value.code == 1


@pytest.mark.parametrize("version", [1, 1.0, ["1.0.0"], {"v": 1}, True, 0, False])
def test_non_string_versions_are_code_7(version: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="cniVersion"):
        NetworkConfig.parse(conf(cniVersion=version))


@pytest.mark.parametrize(
    "name", ["", None, _DROP, " net", "net ", "net\n", "-net", ".net", "_net", "n/et", "nét",
             "net:1", "a\x00b", "\u0660net"],
)
def test_bad_network_names(name: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="name") as info:
        NetworkConfig.parse(conf(name=name))
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


@pytest.mark.parametrize("name", [5, ["net"], {"a": 1}, True])
def test_non_string_names(name: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="name"):
        NetworkConfig.parse(conf(name=name))


@pytest.mark.parametrize("name", ["a", "0", "net-1.2_3", "A" * 1000])
def test_good_network_names(name: str) -> None:
    assert NetworkConfig.parse(conf(name=name)).name == name


def test_name_re_refuses_trailing_newline() -> None:
    # Python's "$" would match before it; the spec's rule (and Go's regexp) do not.
    assert NAME_RE.match("net")
    assert not NAME_RE.match("net\n")


@pytest.mark.parametrize("ptype", ["", None, _DROP, 3, ["bridge"]])
def test_bad_type(ptype: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="type"):
        NetworkConfig.parse(conf(type=ptype))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("capabilities", []),
        ("capabilities", "portMappings"),
        ("capabilities", {"portMappings": "true"}),
        ("capabilities", {"portMappings": 1}),
        ("ipam", []),
        ("ipam", "host-local"),
        ("ipam", 0),
        ("runtimeConfig", []),
        ("runtimeConfig", ""),
        ("runtimeConfig", 0),
        ("args", "K=V"),
        ("args", []),
        ("args", False),
        ("dns", []),
        ("dns", "10.0.0.1"),
        ("dns", {"nameservers": "10.0.0.1"}),
        ("dns", {"search": [None]}),
    ],
)
def test_wrong_types_of_common_keys(key: str, value: Any) -> None:
    with pytest.raises(InvalidNetworkConfig) as info:
        NetworkConfig.parse(conf(**{key: value}))
    assert key in info.value.msg or key in str(info.value)


@pytest.mark.parametrize("key", ["capabilities", "ipam", "runtimeConfig", "args", "dns"])
def test_null_common_keys_are_absent(key: str) -> None:
    NetworkConfig.parse(conf(**{key: None}))


@pytest.mark.parametrize(
    "prev",
    [
        "garbage", [], 0, False, "", ["ips"], 1.5,
        {"cniVersion": "1.0.0", "ips": "10.0.0.1/8"},
        {"cniVersion": "1.0.0", "ips": [{"address": "nope"}]},
        {"cniVersion": "1.0.0", "interfaces": [{"name": ["eth0"]}]},
        {"cniVersion": 1, "ips": []},
        {"ip4": {"ip": "fd00::1/64"}, "cniVersion": "0.2.0"},
    ],
)
def test_prev_result_garbage_is_code_7_naming_prev_result(prev: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match="prevResult") as info:
        NetworkConfig.parse(conf(prevResult=prev))
    assert info.value.code == 7


@pytest.mark.parametrize("prev", [None, {}])
def test_empty_prev_result_is_none(prev: Any) -> None:
    assert NetworkConfig.parse(conf(prevResult=prev)).prev_result is None


def test_prev_result_without_version_uses_config_version() -> None:
    c = NetworkConfig.parse(conf(cniVersion="0.4.0",
                                 prevResult={"ips": [{"version": "4", "address": "10.0.0.2/8"}]}))
    assert c.prev_result is not None
    assert c.prev_result.cni_version == "0.4.0"
    assert len(c.prev_result.ips) == 1


def test_prev_result_declaring_another_known_version_is_read_as_declared() -> None:
    # a runtime that forgot to convert: do not silently read a 0.2.0 result as an empty 1.0.0
    c = NetworkConfig.parse(conf(prevResult={"cniVersion": "0.2.0",
                                             "ip4": {"ip": "10.0.0.2/8"}}))
    assert c.prev_result is not None
    assert [str(ip.address) for ip in c.prev_result.ips] == ["10.0.0.2/8"]


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'"x"', b"null", b"1", b"\xff\xfe\x00", b"{'a': 1}", b"[" * 100_000,
     b'{"a": 1} trailing', "{\"name\": \"\ud800\"".encode("utf-8", "surrogatepass")],
)
def test_stdin_that_is_not_a_json_object_is_code_6(data: bytes) -> None:
    with pytest.raises(DecodingFailure) as info:
        NetworkConfig.parse(data)
    assert info.value.code == 6


def test_decode_json_object_names_what() -> None:
    with pytest.raises(DecodingFailure, match="the thing"):
        decode_json_object(b"[1]", "the thing")


def test_huge_values_are_kept() -> None:
    c = NetworkConfig.parse(conf(mtu=10**40, blob="x" * 1_000_000, nested={"a": [[[[1]]]]}))
    assert c.raw["mtu"] == 10**40


config_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                        children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["cniVersion", "name", "type", "capabilities", "ipam", "dns",
                         "runtimeConfig", "args", "prevResult"]),
        config_values | st.sampled_from(["1.0.0", "pytnet", "bridge"]),
    )
)
def test_fuzz_parse_raises_only_config_errors(raw: dict[str, Any]) -> None:
    with contextlib.suppress(DecodingFailure, InvalidNetworkConfig, IncompatibleCNIVersion):
        NetworkConfig.parse(json.dumps(raw))


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True),
                                                 ("FALSE", False), ("True", True)])
def test_bool_field_with_strings(value: Any, expected: bool) -> None:
    assert bool_field({"k": value}, "k", strings=True) is expected


@pytest.mark.parametrize("value", ["true", "false", "True"])
def test_bool_field_refuses_strings_by_default(value: str) -> None:
    # Plugin keys: the reference decodes them into Go bools, which refuses a string.
    with pytest.raises(InvalidNetworkConfig, match='"k"') as info:
        bool_field({"k": value}, "k")
    assert info.value.code == 7


@pytest.mark.parametrize("version", ["9.9.9", "abc", "1.0", 1])
def test_prev_result_of_an_unknown_version_is_code_7(version: Any) -> None:
    prev = {"cniVersion": version, "ips": [{"address": "10.0.0.2/8"}]}
    with pytest.raises(InvalidNetworkConfig, match="prevResult") as info:
        NetworkConfig.parse(conf(prevResult=prev))
    assert info.value.code == 7


@pytest.mark.parametrize("value", ["yes", 1, 0, [], "1"])
def test_bool_field_rejects(value: Any) -> None:
    with pytest.raises(InvalidNetworkConfig, match='"k"'):
        bool_field({"k": value}, "k")


def test_bool_field_default() -> None:
    assert bool_field({}, "k", default=True) is True


def test_bool_field_null_is_the_default_except_for_libcni_keys() -> None:
    # Go's encoding/json leaves a bool at its default for null (the reference bridge takes
    # "isGateway": null); libcni's own disableCheck refuses a null ("invalid type").
    assert bool_field({"k": None}, "k", default=True) is True
    assert bool_field({"k": None}, "k") is False
    with pytest.raises(InvalidNetworkConfig, match='"k"'):
        bool_field({"k": None}, "k", strings=True)


@pytest.mark.parametrize("read", [bool_field, int_field, str_field])
def test_a_long_wrong_value_is_shown_cut(read: Any) -> None:
    # A whole object pasted into the message would bury the key's name.
    with pytest.raises(InvalidNetworkConfig) as info:
        read({"k": [{"x": "y" * 10}] * 50}, "k")
    assert info.value.msg.startswith('invalid "k": expected ')
    assert info.value.msg.endswith("...")
    assert len(info.value.msg) < 100


# --- versions ------------------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("0.3.1") == (0, 3, 1)
    assert version_at_least("1.1.0", "1.0.0")
    assert not version_at_least("0.3.1", "0.4.0")
    assert version_at_least("0.10.0", "0.4.0")  # numeric, not string, ordering


@pytest.mark.parametrize("bad", ["", "1", "1.0", "a.b.c", "1.0.0.0", "1..0", "\uff11.0.0",
                                 "100000.0.0"])
def test_parse_version_rejects(bad: str) -> None:
    with pytest.raises(DecodingFailure):
        parse_version(bad)


def test_require_supported_names_both_sides() -> None:
    with pytest.raises(IncompatibleCNIVersion) as info:
        require_supported("0.4.0", ("1.0.0",))
    assert info.value.msg == "incompatible CNI versions"
    assert info.value.details == 'config is "0.4.0", plugin supports ["1.0.0"]'


def test_highest_supported() -> None:
    assert highest_supported(["0.4.0", "1.1.0", "9.0.0", "garbage"]) == "1.1.0"
    assert highest_supported(["9.0.0"]) is None


# --- errors --------------------------------------------------------------------------------


def test_error_json_shape() -> None:
    err = AddressExhausted("no free address in 10.1.0.0/30", "range 10.1.0.2-10.1.0.3")
    assert err.to_json("1.0.0") == {"cniVersion": "1.0.0", "code": 101,
                                    "msg": "no free address in 10.1.0.0/30",
                                    "details": "range 10.1.0.2-10.1.0.3"}
    assert "details" not in CNIError("x").to_json("1.0.0")
    assert str(err) == "no free address in 10.1.0.0/30: range 10.1.0.2-10.1.0.3"


def test_error_round_trip_keeps_class_and_unknown_codes() -> None:
    back = CNIError.from_json(AddressExhausted("m", "d").to_json("1.1.0"))
    assert type(back) is AddressExhausted
    assert (back.code, back.msg, back.details) == (101, "m", "d")
    other = CNIError.from_json({"code": 8, "msg": "invalid netns"})
    assert type(other) is CNIError
    assert other.code == 8
    assert type(CNIError.from_json({"code": 999, "msg": "x"})) is InternalError


@pytest.mark.parametrize("obj", [None, [], "x", {}, {"code": "7"}, {"msg": "x"}, {"code": 1.0}])
def test_error_from_json_rejects_non_errors(obj: Any) -> None:
    with pytest.raises(DecodingFailure):
        CNIError.from_json(obj)


def test_every_code_has_one_class() -> None:
    classes = list(CNIError.__subclasses__())
    codes = [int(cls.default_code) for cls in classes]
    assert len(codes) == len(set(codes))
    assert set(codes) == {int(c) for c in ErrorCode}


def test_result_from_json_default_version_matches_config_default() -> None:
    assert Result.from_json({}).cni_version == NetworkConfig.parse(conf(cniVersion="")).cni_version
