"""Every JSON pycni reads from outside refuses what Go's encoding/json refuses: ``NaN``,
``Infinity`` and numbers beyond float range are DecodingFailures (code 6) naming the input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pycni.cli import app
from pycni.runtime import ResultCache
from pycni.skel import CmdArgs, Plugin, delegate_add, run_plugin_bytes
from pycni.spec import (
    DecodingFailure,
    NetworkConfig,
    NetworkConfigList,
    Result,
    decode_json,
    decode_json_object,
)

NON_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
BASE = '{"cniVersion": "1.0.0", "name": "pytnet", "type": "pyt-nan"'


@pytest.mark.parametrize("number", NON_JSON_NUMBERS)
def test_decoders_refuse_non_finite_numbers(number: str) -> None:
    with pytest.raises(DecodingFailure, match="the thing") as info:
        decode_json_object(f'{{"a": [1, {number}]}}', "the thing")
    assert info.value.code == 6
    with pytest.raises(DecodingFailure, match="the thing"):
        decode_json(number.encode(), "the thing")


def test_decoder_keeps_ordinary_numbers() -> None:
    assert decode_json(b'[1, -2.5, 1e300, 10000000000000000000000]', "x") == [
        1, -2.5, 1e300, 10**22]


@pytest.mark.parametrize("number", NON_JSON_NUMBERS)
@pytest.mark.parametrize("where", ["mtu", "prevResult"])
def test_plugin_config_with_non_finite_number_is_code_6(number: str, where: str) -> None:
    if where == "mtu":
        data = f'{BASE}, "mtu": {number}}}'
    else:
        data = (f'{BASE}, "prevResult": {{"cniVersion": "1.0.0", '
                f'"ips": [{{"address": "10.1.0.2/24"}}], "x": {number}}}}}')
    with pytest.raises(DecodingFailure, match="network config") as info:
        NetworkConfig.parse(data.encode())
    assert info.value.code == 6


class Nan(Plugin):
    """Never reached: the config does not decode."""

    type_name = "pyt-nan"

    def add(self, args: CmdArgs) -> Result:  # noqa: ARG002 - the Plugin interface
        raise AssertionError("config with NaN reached the plugin")


def test_plugin_stdin_with_nan_is_error_json_code_6() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pyt-c", "CNI_NETNS": "/run/netns/pyt",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    status, out = run_plugin_bytes(Nan(), env, f'{BASE}, "isGateway": NaN}}'.encode())
    assert status == 1
    assert json.loads(out)["code"] == 6


def test_conflist_with_infinity_is_code_6() -> None:
    data = b'{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "x", "mtu": 1e999}]}'
    with pytest.raises(DecodingFailure):
        NetworkConfigList.parse(data)


def test_cache_entry_with_nan_is_no_result(tmp_path: Path) -> None:
    entry: dict[str, Any] = {
        "kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "net1",
        "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}}
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "net1-c1-eth0"
    path.write_text(json.dumps(entry))
    cache = ResultCache(str(tmp_path))
    assert cache.result("net1", "c1", "eth0", "1.0.0") is not None
    path.write_text(json.dumps(entry)[:-1] + ', "extra": NaN}')
    assert cache.result("net1", "c1", "eth0", "1.0.0") is None


def test_cap_args_with_nan_is_code_6(tmp_path: Path) -> None:
    (tmp_path / "10.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}))
    out = CliRunner().invoke(app, ["add", "n", "/x", "--json", "--conf-dir", str(tmp_path),
                                   "--cni-path", str(tmp_path)],
                             env={"CAP_ARGS": '{"bandwidth": {"ingressRate": NaN}}'})
    assert out.exit_code == 1
    assert json.loads(out.stdout)["code"] == 6


def test_delegate_result_with_nan_is_decoding_failure(tmp_path: Path) -> None:
    script = tmp_path / "pyt-other"
    script.write_text("#!/bin/sh\necho '{\"cniVersion\": \"1.0.0\", \"ips\": "
                      "[{\"address\": \"10.7.0.3/16\"}], \"x\": NaN}'\n")
    script.chmod(0o755)
    stdin = f"{BASE}}}".encode()
    args = CmdArgs(command="ADD", container_id="pyt-1", netns="/run/netns/pyt", ifname="eth0",
                   args="", path=(str(tmp_path),), stdin=stdin, conf=NetworkConfig.parse(stdin))
    with pytest.raises(DecodingFailure, match="pyt-other"):
        delegate_add("pyt-other", stdin, args)
