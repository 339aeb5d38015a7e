"""Delegation to an IPAM plugin: in-process for pycni types, exec from CNI_PATH otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycni.invoke import PYCNI_MARKER, REGISTRY
from pycni.skel import (
    CmdArgs,
    Plugin,
    delegate_add,
    delegate_check,
    delegate_del,
    delegate_gc,
    delegate_status,
)
from pycni.spec import (
    AddressExhausted,
    DecodingFailure,
    NetworkConfig,
    PluginNotAvailable,
    PluginNotFound,
    Result,
)

STDIN = json.dumps({"cniVersion": "1.1.0", "name": "pytnet", "type": "pyt-main",
                    "ipam": {"type": "pyt-ipam"}}).encode()


class FakeIpam(Plugin):
    """Hands out 10.9.0.2/24 and records every call."""

    type_name = "pyt-ipam"
    calls: list[tuple[str, str]] = []  # noqa: RUF012 - shared on purpose: delegate makes its own

    def add(self, args: CmdArgs) -> Result:
        self.calls.append(("ADD", args.container_id))
        return Result.from_json({"cniVersion": "1.1.0", "ips": [{"address": "10.9.0.2/24"}]})

    def delete(self, args: CmdArgs) -> None:
        self.calls.append(("DEL", args.container_id))

    def check(self, args: CmdArgs) -> None:
        self.calls.append(("CHECK", args.container_id))

    def status(self, args: CmdArgs) -> None:
        self.calls.append(("STATUS", args.container_id))
        raise PluginNotAvailable("pool offline")

    def gc(self, args: CmdArgs) -> None:
        self.calls.append(("GC", args.container_id))


def cmd(path: tuple[str, ...]) -> CmdArgs:
    return CmdArgs(command="ADD", container_id="pyt-1", netns="/run/netns/pyt", ifname="eth0",
                   args="", path=path, stdin=STDIN, conf=NetworkConfig.parse(STDIN))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> type[FakeIpam]:
    FakeIpam.calls = []
    monkeypatch.setitem(REGISTRY, "pyt-ipam", f"{__name__}:FakeIpam")
    return FakeIpam


def test_in_process_when_not_in_path(registered: type[FakeIpam], tmp_path: Path) -> None:
    empty = cmd((str(tmp_path),))
    result = delegate_add("pyt-ipam", STDIN, empty)
    assert [str(ip.address) for ip in result.ips] == ["10.9.0.2/24"]
    delegate_check("pyt-ipam", STDIN, empty)
    delegate_del("pyt-ipam", STDIN, empty)
    delegate_gc("pyt-ipam", STDIN, empty)
    with pytest.raises(PluginNotAvailable, match="pool offline"):
        delegate_status("pyt-ipam", STDIN, empty)
    assert [c for c, _ in registered.calls] == ["ADD", "CHECK", "DEL", "GC", "STATUS"]
    assert registered.calls[0][1] == "pyt-1"


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_in_process_when_path_has_a_pycni_shim(registered: type[FakeIpam],
                                               tmp_path: Path) -> None:
    _script(tmp_path, "pyt-ipam", f"{PYCNI_MARKER.decode()} pyt-ipam\nexit 99")
    delegate_add("pyt-ipam", STDIN, cmd((str(tmp_path),)))
    assert registered.calls == [("ADD", "pyt-1")]


def test_exec_when_path_has_a_foreign_executable(registered: type[FakeIpam],
                                                 tmp_path: Path) -> None:
    _script(tmp_path, "pyt-ipam",
            """echo '{"cniVersion": "1.0.0", "ips": [{"address": "10.7.0.3/16"}]}'""")
    result = delegate_add("pyt-ipam", STDIN, cmd((str(tmp_path),)))
    assert [str(ip.address) for ip in result.ips] == ["10.7.0.3/16"]
    assert registered.calls == []


def test_foreign_error_keeps_its_class(tmp_path: Path) -> None:
    _script(tmp_path, "pyt-other",
            """echo '{"code": 101, "msg": "no free address"}'; exit 1""")
    with pytest.raises(AddressExhausted, match="no free address"):
        delegate_add("pyt-other", STDIN, cmd((str(tmp_path),)))


@pytest.mark.parametrize("output", ["not json", "[1]", '{"cniVersion": "1.0.0", "ips": 5}'])
def test_foreign_garbage_result_is_decoding_failure(tmp_path: Path, output: str) -> None:
    _script(tmp_path, "pyt-other", f"echo '{output}'")
    with pytest.raises(DecodingFailure, match="pyt-other"):
        delegate_add("pyt-other", STDIN, cmd((str(tmp_path),)))


def test_unknown_type_not_in_path_is_plugin_not_found(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound, match="pyt-nowhere"):
        delegate_del("pyt-nowhere", STDIN, cmd((str(tmp_path),)))
