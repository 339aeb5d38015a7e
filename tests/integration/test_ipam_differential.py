"""host-local and static against the Go reference plugins in /usr/lib/cni.

Both IPAM plugins run in the host namespace and never touch the kernel, so the Go binaries
run directly (no netns) with a dataDir under tmp_path. The comparisons: the same config gives
the same result JSON; the same sequence of calls leaves byte-identical state directories; and
Go and pycni working on one network interleave without duplicates or leaks.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pycni.invoke import load_plugin
from pycni.skel import run_plugin_bytes
from pycni.testing import GO_PLUGIN_DIR, cni_env

pytestmark = pytest.mark.differential

VERSIONS = ["0.3.1", "0.4.0", "1.0.0"]


def go(type_name: str, command: str, conf: dict[str, Any], cid: str = "c1", *,
       ifname: str = "eth0", args: str = "") -> tuple[int, Any]:
    """Run the Go plugin; (exit status, parsed stdout)."""
    exe = str(Path(GO_PLUGIN_DIR) / type_name)
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{exe} is not installed (containernetworking-plugins)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env(command, container_id=cid, netns="/var/run/netns/none", ifname=ifname,
                       args=args))
    proc = subprocess.run([exe], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def py(type_name: str, command: str, conf: dict[str, Any], cid: str = "c1", *,
       ifname: str = "eth0", args: str = "") -> tuple[int, Any]:
    """Run the pycni plugin in-process; (exit status, parsed stdout)."""
    cls = load_plugin(type_name)
    assert cls is not None
    env = cni_env(command, container_id=cid, netns="/var/run/netns/none", ifname=ifname,
                  args=args)
    status, out = run_plugin_bytes(cls(), env, json.dumps(conf).encode())
    return status, json.loads(out) if out.strip() else None


IMPLS = {"go": go, "py": py}


def host_local(data_dir: Path, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    ipam.setdefault("ranges", [[{"subnet": "10.1.0.0/24"}]])
    return {"cniVersion": version, "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}}


def state(data_dir: Path) -> dict[str, bytes]:
    """Every file of the network directory with its exact bytes (and mode)."""
    d = data_dir / "net1"
    return {f"{p.name} {oct(p.stat().st_mode)}": p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\ndomain example.com\n"
                    "search a.example b.example\noptions ndots:3\n")
    return path


CONFIGS: dict[str, dict[str, Any]] = {
    "legacy": {"ranges": None, "subnet": "10.2.0.0/16", "rangeStart": "10.2.1.10",
               "rangeEnd": "10.2.1.20", "gateway": "10.2.0.254"},
    "dual-stack": {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.3.0.0/24"}],
                              [{"subnet": "2001:db8:1::/64", "rangeStart": "2001:db8:1::10",
                                "rangeEnd": "2001:db8:1::20"}]],
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "2001:db8:1::1"}]},
    "routes-only-v6": {"ranges": [[{"subnet": "fd00:1::/120", "gateway": "fd00:1::fe"}]],
                       "routes": [{"dst": "fd00::/8"}]},
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_result_and_same_files(tmp_path: Path, resolv: Path, version: str,
                                    name: str) -> None:
    results: dict[str, list[Any]] = {}
    states: dict[str, dict[str, bytes]] = {}
    for impl, run in IMPLS.items():
        conf = host_local(tmp_path / impl, version, resolvConf=str(resolv), **CONFIGS[name])
        if conf["ipam"]["ranges"] is None:
            del conf["ipam"]["ranges"]
        outs = [run("host-local", "ADD", conf, cid=f"c{i}") for i in range(3)]
        assert run("host-local", "DEL", conf, cid="c1") == (0, None)
        if version != "0.3.1":  # CHECK arrived in 0.4.0
            assert run("host-local", "CHECK", conf, cid="c0")[0] == 0
        outs.append(run("host-local", "ADD", conf, cid="c3"))
        results[impl] = outs
        states[impl] = state(tmp_path / impl)
    assert results["py"] == results["go"]
    assert all(status == 0 for status, _ in results["py"])
    assert states["py"] == states["go"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("where", "value"),
    [("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.42"),
     ("args", {"cni": {"ips": ["10.1.0.42", "2001:db8::42"]}}),
     ("runtimeConfig", {"ips": ["10.1.0.42/24"]})],
)
def test_requested_addresses_match(tmp_path: Path, version: str, where: str,
                                   value: Any) -> None:
    for impl in ("go", "py"):
        conf = host_local(tmp_path / impl, version,
                          ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]])
        args = value if where == "CNI_ARGS" else ""
        if where != "CNI_ARGS":
            conf[where] = value
        first = IMPLS[impl]("host-local", "ADD", conf, args=args)
        again = IMPLS[impl]("host-local", "ADD", conf, cid="c2", args=args)
        if impl == "go":
            expected_first, go_again_status = first, again[0]
        else:
            assert first == expected_first
            assert again[0] == go_again_status == 1
            assert state(tmp_path / "py") == state(tmp_path / "go")


def test_round_robin_and_wrap_match(tmp_path: Path) -> None:
    """A small pool cycled through ADD/DEL hands out the same addresses in the same order."""
    ops = [("ADD", "a"), ("ADD", "b"), ("DEL", "a"), ("ADD", "c"), ("ADD", "d"), ("DEL", "b"),
           ("ADD", "e"), ("ADD", "f"), ("DEL", "c"), ("ADD", "g"), ("ADD", "h"), ("DEL", "d"),
           ("ADD", "i")]
    seen: dict[str, list[Any]] = {}
    for impl, run in IMPLS.items():
        conf = host_local(tmp_path / impl, ranges=[
            [{"subnet": "10.1.0.0/29"}, {"subnet": "10.1.1.0/30", "gateway": "10.1.1.2"}]])
        seen[impl] = [run("host-local", cmd, conf, cid=cid) for cmd, cid in ops]
    assert seen["py"] == seen["go"]
    assert state(tmp_path / "py") == state(tmp_path / "go")


def test_errors_match_in_kind(tmp_path: Path) -> None:
    """Exhausted pools, duplicate ADDs and bad configs fail on both sides."""
    for impl, run in IMPLS.items():
        conf = host_local(tmp_path / impl, ranges=[[{"subnet": "10.1.0.0/30"}]])
        assert run("host-local", "ADD", conf, cid="a")[0] == 0
        assert run("host-local", "ADD", conf, cid="a")[0] == 1, impl  # duplicate
        assert run("host-local", "ADD", conf, cid="b")[0] == 1, impl  # exhausted
        bad = host_local(tmp_path / impl, ranges=[[{"subnet": "10.1.0.1/24"}]])
        assert run("host-local", "ADD", bad, cid="c")[0] == 1, impl
    assert state(tmp_path / "py") == state(tmp_path / "go")


@pytest.mark.parametrize("version", VERSIONS)
def test_go_and_pycni_share_one_network(tmp_path: Path, version: str) -> None:
    conf = host_local(tmp_path, version,
                      ranges=[[{"subnet": "10.1.0.0/28"}], [{"subnet": "2001:db8::/124"}]])
    order = ["go", "py", "py", "go", "go", "py"]
    got: dict[str, list[str]] = {}
    for i, impl in enumerate(order):
        status, result = IMPLS[impl]("host-local", "ADD", conf, cid=f"{impl}{i}")
        assert status == 0, result
        got[f"{impl}{i}"] = [ip["address"] for ip in result["ips"]]
        # Each side continues after the address the other reserved last (last_reserved_ip).
        assert got[f"{impl}{i}"] == [f"10.1.0.{i + 2}/28", f"2001:db8::{i + 2:x}/124"]
    d = tmp_path / "net1"
    for cid, addrs in got.items():
        for addr in addrs:
            assert (d / addr.split("/")[0]).read_bytes() == f"{cid}\r\neth0".encode()
    # Each side releases the other's attachments.
    for cid in got:
        other = "py" if cid.startswith("go") else "go"
        assert IMPLS[other]("host-local", "DEL", conf, cid=cid) == (0, None)
        assert IMPLS[other]("host-local", "DEL", conf, cid=cid) == (0, None)
    assert sorted(p.name for p in d.iterdir()) == ["last_reserved_ip.0", "last_reserved_ip.1",
                                                   "lock"]


def test_legacy_files_are_understood_by_both(tmp_path: Path) -> None:
    """Files with only the container ID (pre-0.7 format) are released by either plugin."""
    conf = host_local(tmp_path)
    d = tmp_path / "net1"
    d.mkdir()
    (d / "10.1.0.9").write_bytes(b"old1")
    (d / "10.1.0.10").write_bytes(b"old2")
    assert py("host-local", "CHECK", conf, cid="old1")[0] == 0
    assert go("host-local", "CHECK", conf, cid="old2")[0] == 0
    assert py("host-local", "DEL", conf, cid="old2") == (0, None)
    assert go("host-local", "DEL", conf, cid="old1") == (0, None)
    assert sorted(p.name for p in d.iterdir()) == ["lock"]


STATIC = {"cniVersion": "1.0.0", "name": "net1", "type": "macvlan",
          "ipam": {"type": "static",
                   "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                                 {"address": "3ffe:ffff:0:1ff::1/64"}],
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
                   "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com",
                           "search": ["example.com"], "options": ["ndots:2"]}}}


@pytest.mark.parametrize("version", ["0.2.0", *VERSIONS])
@pytest.mark.parametrize(
    ("extra", "args"),
    [({}, ""),
     ({}, "IgnoreUnknown=1;IP=10.20.0.5/16, 10.10.0.9/24;GATEWAY=10.20.0.1,10.10.0.1"),
     ({"args": {"cni": {"ips": ["10.30.0.5/24"]}}}, "IP=10.20.0.5/16"),
     ({"runtimeConfig": {"ips": ["10.40.0.5/24", "2001:db8::5/64"]}}, "")],
)
def test_static_matches(version: str, extra: dict[str, Any], args: str) -> None:
    conf = {**STATIC, "cniVersion": version, **extra}
    if version == "0.2.0":
        conf["ipam"] = {**conf["ipam"], "addresses": conf["ipam"]["addresses"][:1]}
    ours = py("static", "ADD", conf, args=args)
    theirs = go("static", "ADD", conf, args=args)
    assert ours[0] == theirs[0]
    if ours[0] == 0:
        assert ours == theirs
    else:
        # Several addresses of one family cannot be written as a 0.2.0 result.
        assert version == "0.2.0"


def test_100_kb_container_id_leases_are_shared(tmp_path: Path) -> None:
    """The reference accepts a 100 KB container ID; each plugin releases the other's lease."""
    long_id = "c" + "0123456789abcdef" * 6400
    conf = host_local(tmp_path)
    net_dir = tmp_path / "net1"
    for adder, deleter in (("go", "py"), ("py", "go")):
        status, _ = IMPLS[adder]("host-local", "ADD", conf, long_id)
        assert status == 0
        assert (net_dir / "10.1.0.2").read_bytes() == long_id.encode() + b"\r\neth0"
        assert IMPLS[deleter]("host-local", "DEL", conf, long_id) == (0, None)
        assert not (net_dir / "10.1.0.2").exists(), f"{deleter} did not release {adder}'s lease"
        (net_dir / "last_reserved_ip.0").unlink()
