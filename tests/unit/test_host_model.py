"""host's shared pieces without a kernel: the link reader, the undo helper, the netlink
encoder, and the one list of public names."""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import Any

import pytest

import pycni.host
from pycni._lazy import type_checking_imports
from pycni.host import LinkInfo, Undo
from pycni.host._netlink import NLA_F_NESTED, message, nlattr, nlattrs
from pycni.host.links import _link_info


def _decoded(index: int, flags: int, attrs: list[list[Any]]) -> bytes:
    """The body of an RTM_NEWLINK message as the kernel would send it, encoded by pyroute2
    (an encoder independent of the reader's)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["attrs"] = index, flags, attrs
    msg.encode()
    return bytes(msg.data[16:])  # without the nlmsghdr


def _kind(kind: str, data: list[list[Any]]) -> list[Any]:
    return ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", kind],
                                        ["IFLA_INFO_DATA", {"attrs": data}]]}]


def test_the_reader_fills_the_common_fields() -> None:
    info = _link_info(_decoded(7, 0x1 | 0x100 | 0x200, [
        ["IFLA_IFNAME", "pyt0"], ["IFLA_ADDRESS", "02:AB:00:00:00:01"], ["IFLA_MTU", 1400],
        ["IFLA_TXQLEN", 0], ["IFLA_MASTER", 3], ["IFLA_LINK", 9], ["IFLA_IFALIAS", "was-eth1"],
        ["IFLA_OPERSTATE", "UP"]]))
    assert (info.name, info.index, info.mac, info.mtu, info.master, info.link_index) == (
        "pyt0", 7, "02:ab:00:00:00:01", 1400, 3, 9)
    assert (info.up, info.promisc, info.allmulti, info.operstate, info.alias) == (
        True, True, True, "UP", "was-eth1")
    assert (info.kind, info.mode, info.vlan_id, info.table, info.addresses) == (
        "", "", None, None, ())


@pytest.mark.parametrize(("kind", "data", "fields"), [
    ("macvlan", [["IFLA_MACVLAN_MODE", 4]], {"mode": "bridge"}),
    ("macvlan", [["IFLA_MACVLAN_MODE", 16]], {"mode": "source"}),
    ("ipvlan", [["IFLA_IPVLAN_MODE", 2]], {"mode": "l3s"}),
    ("vlan", [["IFLA_VLAN_ID", 100]], {"vlan_id": 100, "mode": ""}),
    ("vrf", [["IFLA_VRF_TABLE", 1001]], {"table": 1001, "vlan_id": None}),
])
def test_the_reader_names_kind_details(kind: str, data: list[list[Any]],
                                       fields: dict[str, Any]) -> None:
    info = _link_info(_decoded(5, 0, [["IFLA_IFNAME", "x"], ["IFLA_LINK", 2], _kind(kind, data)]))
    assert info.kind == kind
    assert info.link_index == 2
    assert {k: getattr(info, k) for k in fields} == fields


def test_a_link_model_needs_only_a_name_and_index() -> None:
    assert LinkInfo(name="lo", index=1).kind == ""


def test_undo_runs_newest_first_and_keeps_going(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def fail() -> None:
        raise OSError("busy")

    undo = Undo()
    undo.push("first", done.append, "first")
    undo.push("remove the thing", fail)
    undo.push("third", done.append, "third")
    undo.run()
    assert done == ["third", "first"]
    assert "rollback: failed to remove the thing: busy" in capsys.readouterr().err
    undo.run()  # the steps ran once
    assert done == ["third", "first"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_undo_block_runs_on_any_error_and_forgets_on_success(error: type[BaseException]) -> None:
    done: list[int] = []

    def change() -> None:
        with Undo() as undo:
            undo.push("one", done.append, 1)
            raise error

    with pytest.raises(error):
        change()
    assert done == [1]
    with Undo() as undo:
        undo.push("two", done.append, 2)
    undo.run()
    assert done == [1]


def test_netlink_attributes_round_trip() -> None:
    inner = nlattr(1, b"ab") + nlattr(2, struct.pack("=I", 7))
    outer = nlattr(5 | NLA_F_NESTED, inner)
    assert len(outer) % 4 == 0
    [(kind, payload, whole)] = list(nlattrs(outer))
    assert (kind, whole) == (5, outer)
    assert [(k, p) for k, p, _ in nlattrs(payload)] == [(1, b"ab"), (2, struct.pack("=I", 7))]
    msg = message(16, 0x5, b"xyz", seq=3)
    assert struct.unpack_from("=IHHII", msg) == (19, 16, 0x5, 3, 0)


def _ast_imports(source: str) -> dict[str, str | None]:
    tree = ast.parse(source)
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING")
    out: dict[str, str | None] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            out[alias.asname or alias.name] = node.module
    return out


def test_host_lists_its_public_names_once() -> None:
    source = Path(pycni.host.__file__).read_text()
    names = type_checking_imports(source)
    assert names == _ast_imports(source)
    assert sorted(pycni.host.__all__) == sorted(names)


def test_the_name_list_refuses_renames() -> None:
    with pytest.raises(ValueError, match="'as'"):
        type_checking_imports("x\nif TYPE_CHECKING:\n    from .a import b as c\n")
