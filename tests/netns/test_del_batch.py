"""Concurrent DELs in one process delete their veth pairs together, and only theirs.

The agent runs calls in threads of one process; the host ends of concurrent bridge DELs
are deleted by one group delete (one wait for the kernel's unregister instead of one per
pod). What a user sees: the RTM_DELLINK notifications carry the batch's shared group, every
DEL succeeds on its own, nothing is left behind, and an operator's link is never caught.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from pycni.host import _rtnl, _veth, run_in_netns
from pycni.testing import (
    PluginCall,
    at_once,
    call_plugin,
    cni_env,
    ip_json,
    ns_run,
    paused_burst,
    temp_netns,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.netns

PODS = 12
RTNLGRP_LINK = 1

def _conf(tmp_path: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
            "bridge": unique_name("br"), "isGateway": True,
            "ipam": {"type": "host-local", "subnet": "10.97.0.0/24",
                     "dataDir": str(tmp_path / "ipam")}}


class LinkMonitor:
    """RTM_DELLINK notifications of veths in a namespace: (ifindex, group) each."""

    def __init__(self, netns: str) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, 1 << (RTNLGRP_LINK - 1)))
            return sock

        # A netlink socket belongs to the namespace of the thread that made it.
        self.sock = run_in_netns(netns, make)
        self.sock.settimeout(0.2)
        self.deleted: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                body = data[offset + 16:offset + length]
                offset += (length + 3) & ~3
                if kind != _rtnl.RTM_DELLINK or length < 32:
                    continue
                index = _rtnl.as_s32(body[4:8])
                attrs = _rtnl.attrs(body, 16)
                info = _rtnl.attrs(attrs.get(_rtnl.IFLA_LINKINFO, b""))
                if _rtnl.as_str(info.get(_rtnl.IFLA_INFO_KIND, b"")) == "veth":
                    group = _rtnl.as_u32(attrs.get(_rtnl.IFLA_GROUP, bytes(4)))
                    self.deleted.append((index, group))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _calls(host_ns: str, conf: dict[str, Any], pods: list[str],
           command: str) -> list[Callable[[], PluginCall]]:
    """``command`` for every pod, in-process (as the agent runs it)."""
    return [lambda i=i, netns=netns: call_plugin(
                host_ns, "bridge", cni_env(command, container_id=f"pytc{i}", netns=netns), conf)
            for i, netns in enumerate(pods)]


def _concurrently(host_ns: str, conf: dict[str, Any], pods: list[str],
                  command: str) -> list[Any]:
    """Run ``command`` for every pod at once, each in its own thread, as the agent does."""
    return at_once(_calls(host_ns, conf, pods, command))


def _batched(host_ns: str, conf: dict[str, Any], pods: list[str]) -> list[Any]:
    """Every pod's DEL at once, their deletes queued in the paused veth combiner until all
    are there (the threads' free race does not always overlap them): one batch."""
    return paused_burst(_veth._BATCHES, _calls(host_ns, conf, pods, "DEL"))


@pytest.fixture
def pods() -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(temp_netns("c")) for _ in range(PODS)]


def _add_all(host_ns: str, conf: dict[str, Any], pods: list[str]) -> None:
    for i, netns in enumerate(pods):
        env = cni_env("ADD", container_id=f"pytc{i}", netns=netns)
        assert call_plugin(host_ns, "bridge", env, conf).status == 0


def _assert_nothing_left(host_ns: str, conf: dict[str, Any], pods: list[str],
                         tmp_path: Path, keep: tuple[str, ...] = ()) -> None:
    veths = ip_json(host_ns, "link", "show", "type", "veth")
    assert sorted(link["ifname"] for link in veths) == sorted(keep)
    for netns in pods:
        assert [link["ifname"] for link in ip_json(netns, "link")] == ["lo"]
    leases = [p.name for p in (tmp_path / "ipam" / "pytnet").iterdir()
              if p.name[0].isdigit()]
    assert leases == []
    assert ip_json(host_ns, "link", "show", conf["bridge"])  # the bridge stays


def test_concurrent_dels_delete_their_veths_in_one_group(host_ns: str, pods: list[str],
                                                         tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    _add_all(host_ns, conf, pods)
    monitor = LinkMonitor(host_ns)
    try:
        results = _batched(host_ns, conf, pods)
        assert wait_for(lambda: len(monitor.deleted) >= PODS, timeout=10)
    finally:
        monitor.close()
    assert [r.status for r in results] == [0] * PODS, [r.stdout for r in results]
    _assert_nothing_left(host_ns, conf, pods, tmp_path)
    # Each host end was deleted once, all in one group (a random one above 2^30).
    assert len(monitor.deleted) == PODS
    groups = [group for _, group in monitor.deleted]
    assert len(set(groups)) == 1, f"not one batch: groups {groups}"
    assert groups[0] > 1 << 30, groups
    # A DEL again (the runtime retries) succeeds with nothing to delete.
    assert [r.status for r in _concurrently(host_ns, conf, pods, "DEL")] == [0] * PODS


def test_a_group_holding_another_link_is_not_deleted_by_group(
        host_ns: str, pods: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's link in the group a batch draws: the batch goes link by link."""
    group = 0x40000123
    monkeypatch.setattr(_veth, "_new_group", lambda: group)
    operator, peer = unique_name("op"), unique_name("op")
    ns_run(host_ns, "ip", "link", "add", operator, "type", "veth", "peer", "name", peer,
           check=True)
    ns_run(host_ns, "ip", "link", "set", operator, "group", str(group), check=True)
    conf = _conf(tmp_path)
    _add_all(host_ns, conf, pods)
    before = _veth._BATCHES.counters()
    results = _batched(host_ns, conf, pods)
    assert [r.status for r in results] == [0] * PODS, [r.stdout for r in results]
    # The batch was made and refused its group: redone link by link.
    assert _veth._BATCHES.counters().fallbacks == before.fallbacks + 1
    _assert_nothing_left(host_ns, conf, pods, tmp_path, keep=(operator, peer))
    assert ip_json(host_ns, "link", "show", operator)[0]["group"] == str(group)


def test_del_when_the_container_netns_is_gone(host_ns: str, tmp_path: Path) -> None:
    """The pod's namespace went first (its veth with it): DEL succeeds, releases the lease."""
    conf = _conf(tmp_path)
    with temp_netns("c") as netns:
        env = cni_env("ADD", container_id="pytc0", netns=netns)
        assert call_plugin(host_ns, "bridge", env, conf).status == 0
    out = call_plugin(host_ns, "bridge", {**env, "CNI_COMMAND": "DEL"}, conf)
    assert out.status == 0, out.stdout
    # The kernel dismantles a namespace (and the pair) from a work queue, a little later.
    assert wait_for(lambda: ip_json(host_ns, "link", "show", "type", "veth") == [])
    assert not [p for p in (tmp_path / "ipam" / "pytnet").iterdir() if p.name[0].isdigit()]
