"""CmdArgs: CNI_ARGS parsing with IgnoreUnknown, validators, the delegation environment."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.skel import (
    IFNAME_MAX,
    CmdArgs,
    Plugin,
    parse_cni_args,
    run_plugin_bytes,
    validate_container_id,
    validate_ifname,
)
from pycni.spec import (
    InvalidEnvironmentVariables,
    NetworkConfig,
    Result,
    UnsupportedField,
)

CONF = NetworkConfig.parse({"cniVersion": "1.0.0", "name": "pytnet", "type": "x"})


def cmd(args: str, **over: str) -> CmdArgs:
    fields = {"command": "ADD", "container_id": "pyt-1", "netns": "/run/netns/pyt",
              "ifname": "eth0", "args": args}
    fields.update(over)
    return CmdArgs(path=("/opt/cni/bin",), stdin=b"{}", conf=CONF, **fields)


# --- CNI_ARGS ------------------------------------------------------------------------------


def test_parse_pairs_in_order() -> None:
    assert parse_cni_args("A=1;B=;C=x y") == [("A", "1"), ("B", ""), ("C", "x y")]
    assert parse_cni_args("") == []
    assert parse_cni_args("A=1;;B=2;") == [("A", "1"), ("B", "2")]  # empty items are skipped


@pytest.mark.parametrize("bad", ["A", "A=1;B", "=1", "A=1=2", "A==", ";=;"])
def test_malformed_pairs_are_code_4(bad: str) -> None:
    with pytest.raises(InvalidEnvironmentVariables, match="CNI_ARGS") as info:
        parse_cni_args(bad)
    assert info.value.code == 4


def test_known_keys_only() -> None:
    assert cmd("IP=10.0.0.5;MAC=0a:58:0a:00:00:05").cni_args(["IP", "MAC"]) == {
        "IP": "10.0.0.5", "MAC": "0a:58:0a:00:00:05"}
    assert cmd("").cni_args(["IP"]) == {}


def test_unknown_key_is_code_2_naming_it() -> None:
    with pytest.raises(UnsupportedField, match="K8S_POD_NAME") as info:
        cmd("IP=10.0.0.5;K8S_POD_NAME=web").cni_args(["IP"])
    assert info.value.code == 2
    assert "IgnoreUnknown" in info.value.details


@pytest.mark.parametrize("flag", ["1", "true", "True", "TRUE"])
def test_ignore_unknown_skips_unknown_keys(flag: str) -> None:
    got = cmd(f"IgnoreUnknown={flag};K8S_POD_NAMESPACE=default;IP=10.0.0.5").cni_args(["IP"])
    assert got == {"IP": "10.0.0.5"}
    # wherever it appears in the list
    got = cmd(f"K8S_POD_NAME=web;IP=10.0.0.6;IgnoreUnknown={flag}").cni_args(["IP"])
    assert got == {"IP": "10.0.0.6"}


@pytest.mark.parametrize("flag", ["0", "false", "False", ""])
def test_ignore_unknown_false_still_rejects(flag: str) -> None:
    with pytest.raises(UnsupportedField):
        cmd(f"IgnoreUnknown={flag};K8S_POD_NAME=web").cni_args(["IP"])


@pytest.mark.parametrize("flag", ["yes", "2", "on"])
def test_ignore_unknown_needs_a_boolean(flag: str) -> None:
    with pytest.raises(InvalidEnvironmentVariables, match="IgnoreUnknown"):
        cmd(f"IgnoreUnknown={flag};K8S_POD_NAME=web").cni_args(["IP"])


def test_ignore_unknown_key_is_case_sensitive_like_libcni() -> None:
    with pytest.raises(UnsupportedField):
        cmd("ignoreunknown=1;K8S_POD_NAME=web").cni_args(["IP"])


def test_ignore_unknown_alone_is_fine() -> None:
    assert cmd("IgnoreUnknown=1").cni_args([]) == {}


def test_last_duplicate_wins() -> None:
    assert cmd("IP=10.0.0.1;IP=10.0.0.2").cni_args(["IP"]) == {"IP": "10.0.0.2"}


keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
values = st.text(st.characters(blacklist_characters=";="), max_size=10)


@given(st.lists(st.tuples(keys, values), max_size=6))
def test_parse_round_trip(pairs: list[tuple[str, str]]) -> None:
    assert parse_cni_args(";".join(f"{k}={v}" for k, v in pairs)) == pairs


@given(st.text(max_size=40))
def test_fuzz_cni_args_only_cni_errors(value: str) -> None:
    with contextlib.suppress(InvalidEnvironmentVariables, UnsupportedField):
        cmd(value).cni_args(["IP", "MAC"])


class ArgsPlugin(Plugin):
    """Reads CNI_ARGS in add, so bad CNI_ARGS surface as the run's error JSON."""

    type_name = "pyt-args"

    def add(self, args: CmdArgs) -> Result:
        args.cni_args(["IP"])
        return Result()

    def delete(self, args: CmdArgs) -> None:
        args.cni_args(["IP"])


@pytest.mark.parametrize(
    ("cni_args", "code"),
    [("IP=10.0.0.5", 0), ("IP=10.0.0.5;FOO=bar", 2), ("IgnoreUnknown=1;FOO=bar", 0),
     ("IgnoreUnknown=true;FOO=bar;IP=1", 0), ("IgnoreUnknown=0;FOO=bar", 2),
     ("FOO", 4), ("IP=1;=x", 4), ("IP=a=b", 4)],
)
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_cni_args_through_the_protocol(cni_args: str, code: int, command: str) -> None:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "pyt-1", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/bin", "CNI_ARGS": cni_args}
    status, out = run_plugin_bytes(ArgsPlugin(), env,
                                   b'{"cniVersion": "1.0.0", "name": "n", "type": "pyt-args"}')
    if code == 0:
        assert status == 0
    else:
        assert status == 1
        assert json.loads(out)["code"] == code


# --- validators ----------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["", " ", "a b", "a/b", ".a", "-a", "_a", "a\n", "é", "a\x00"])
def test_validate_container_id_rejects(cid: str) -> None:
    with pytest.raises(InvalidEnvironmentVariables, match="CNI_CONTAINERID") as info:
        validate_container_id(cid)
    assert info.value.code == 4


@given(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,80}", fullmatch=True))
def test_validate_container_id_accepts_spec_ids(cid: str) -> None:
    validate_container_id(cid)


@pytest.mark.parametrize("name", ["", ".", "..", "a" * (IFNAME_MAX + 1), "é" * 8, "a/b", "a:b",
                                  "a b", "a\tb", "a\nb", "a\x7fb", "a\u00a0b"])
def test_validate_ifname_rejects(name: str) -> None:
    with pytest.raises(InvalidEnvironmentVariables, match="CNI_IFNAME") as info:
        validate_ifname(name)
    assert info.value.code == 4


@pytest.mark.parametrize("name", ["a", "a" * IFNAME_MAX, "é" * 7, "eth0.100", "...", "a.",
                                  "veth-1_x@"])
def test_validate_ifname_accepts(name: str) -> None:
    validate_ifname(name)


# --- CmdArgs helpers -----------------------------------------------------------------------


def test_env_for_delegation() -> None:
    c = cmd("IgnoreUnknown=1", netns="")
    assert c.env("DEL") == {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "pyt-1",
                            "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1",
                            "CNI_PATH": "/opt/cni/bin"}
    assert c.env()["CNI_COMMAND"] == "ADD"
    assert c.args_pairs() == [("IgnoreUnknown", "1")]
