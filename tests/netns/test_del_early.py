"""In the agent, a DEL answers once the kernel has announced its veth's deletion.

Deleting a veth keeps the syscall in the kernel for tens of milliseconds after the link,
its addresses, routes and bridge port are gone (an RCU barrier, the last references). The
agent hands that wait to a helper thread (``pycni.host.start_early_deletes``). Here the
helper is held after its syscall by a test hook, which a DEL must not wait for; what a user
sees must be gone when the DEL answers, a repeated DEL succeeds, and a stopping agent waits
for the held delete.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from pycni import host
from pycni.daemon import Agent, AgentConfig
from pycni.host import _rtnl, _veth, run_in_netns
from pycni.testing import (
    PluginCall,
    call_plugin,
    cni_env,
    ip_json,
    temp_netns,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.netns

#: Generous: a DEL that waited for its held syscall would never answer within it.
DEADLINE = 20.0


def _conf(tmp_path: Path, plugin: str = "bridge") -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "pytnet", "type": plugin,
        "ipam": {"type": "host-local", "subnet": "10.96.0.0/24",
                 "dataDir": str(tmp_path / "ipam")}}
    if plugin == "bridge":
        conf.update(bridge=unique_name("br"), isGateway=True)
    return conf


class HeldSyscalls:
    """Holds every early delete's helper after its syscall returned, until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.held = 0
        self.landed = 0
        monkeypatch.setattr(_veth._EARLY, "after_syscall", self._hold)

    def _hold(self) -> None:
        with self._lock:
            self.held += 1
        self.release.wait(60)
        with self._lock:
            self.landed += 1


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSyscalls]:
    hold = HeldSyscalls(monkeypatch)
    host.start_early_deletes(4)
    try:
        yield hold
    finally:
        hold.release.set()
        assert host.stop_early_deletes(DEADLINE)


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


def _del(host_ns: str, conf: dict[str, Any], netns: str, i: int = 0) -> PluginCall:
    plugin = conf["type"]
    return call_plugin(host_ns, plugin, cni_env("DEL", container_id=f"pytc{i}", netns=netns),
                       conf)


def _add(host_ns: str, conf: dict[str, Any], netns: str, i: int = 0) -> None:
    env = cni_env("ADD", container_id=f"pytc{i}", netns=netns)
    out = call_plugin(host_ns, conf["type"], env, conf)
    assert out.status == 0, out.stdout


def _assert_gone(host_ns: str, conf: dict[str, Any], pods: list[str]) -> None:
    assert ip_json(host_ns, "link", "show", "type", "veth") == []
    if conf["type"] == "bridge":
        assert ip_json(host_ns, "link", "show", "master", conf["bridge"]) == []
    assert [r for r in ip_json(host_ns, "route") if r.get("dst", "").startswith("10.96.0.")
            and r.get("dev", "").startswith("veth")] == []
    for netns in pods:
        assert [link["ifname"] for link in ip_json(netns, "link")] == ["lo"]
        assert [a["ifname"] for a in ip_json(netns, "addr") if a["ifname"] != "lo"] == []
        assert ip_json(netns, "route") == []


@pytest.mark.parametrize("plugin", ["bridge", "ptp"])
def test_del_answers_before_the_syscall_with_everything_gone(
        host_ns: str, netns: str, tmp_path: Path, held: HeldSyscalls, plugin: str) -> None:
    conf = _conf(tmp_path, plugin)
    _add(host_ns, conf, netns)
    early = _veth._EARLY.early
    thread, out = _in_thread(_del, host_ns, conf, netns)
    thread.join(DEADLINE)
    # The DEL answered while its syscall's helper was still held.
    assert not thread.is_alive(), "DEL waited for its syscall"
    assert out[0].status == 0, out[0].stdout
    assert held.landed == 0
    assert _veth._EARLY.early == early + 1
    assert wait_for(lambda: held.held == 1)  # the syscall returned since, and is held
    _assert_gone(host_ns, conf, [netns])
    # A DEL again (the runtime retries) finds nothing and succeeds, even before the first
    # one's syscall has returned.
    assert _del(host_ns, conf, netns).status == 0
    held.release.set()
    assert host.stop_early_deletes(DEADLINE)
    assert held.landed == 1
    assert _del(host_ns, conf, netns).status == 0


def test_concurrent_dels_batched_answer_early(host_ns: str, tmp_path: Path,
                                              held: HeldSyscalls) -> None:
    pods_n = 8
    conf = _conf(tmp_path)
    with ExitStack() as stack:
        pods = [stack.enter_context(temp_netns("c")) for _ in range(pods_n)]
        for i, netns in enumerate(pods):
            _add(host_ns, conf, netns, i)
        barrier = threading.Barrier(pods_n)

        def one(i: int) -> PluginCall:
            barrier.wait()
            return _del(host_ns, conf, pods[i], i)

        runs = [_in_thread(one, i) for i in range(pods_n)]
        for thread, _ in runs:
            thread.join(DEADLINE)
        assert [thread.is_alive() for thread, _ in runs] == [False] * pods_n
        assert [out[0].status for _, out in runs] == [0] * pods_n
        # Some deletes (single links or groups) answered before their syscall ended;
        # past the limit of four in flight, the others waited for their own.
        assert held.landed == 0
        assert wait_for(lambda: held.held >= 1)
        assert held.held <= 4
        _assert_gone(host_ns, conf, pods)
        held.release.set()
        assert host.stop_early_deletes(DEADLINE)


def test_a_failing_delete_raises_as_before(host_ns: str, held: HeldSyscalls) -> None:
    """An error comes before any notification: the caller gets the kernel's errno."""

    def delete_missing() -> None:
        with _rtnl.Rtnl() as sock:
            index = 0x7FFFFFF0
            _veth._EARLY.delete(sock, _rtnl.Rtnl.del_link, index, {(-1, index)})

    held.release.set()
    with pytest.raises(OSError) as caught:
        run_in_netns(host_ns, delete_missing)
    assert caught.value.errno == errno.ENODEV
    assert held.landed == 1  # it did go through the helper, and was waited for


def test_agent_shutdown_waits_for_deletes_in_the_kernel(
        host_ns: str, netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hold = HeldSyscalls(monkeypatch)
    agent = Agent(AgentConfig(socket_path=str(tmp_path / "run" / "a.sock"),
                              metrics_address=None))
    (tmp_path / "run").mkdir(mode=0o700)
    run_in_netns(host_ns, agent.start)
    stopper: threading.Thread | None = None
    try:
        conf = _conf(tmp_path)
        _add(host_ns, conf, netns)
        thread, out = _in_thread(_del, host_ns, conf, netns)
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert out[0].status == 0, out[0].stdout
        assert hold.landed == 0
        stopper, stopped = _in_thread(agent.shutdown)
        # Shutdown is waiting for the held delete.
        stopper.join(0.5)
        assert stopper.is_alive()
        assert hold.landed == 0
        hold.release.set()
        stopper.join(DEADLINE)
        assert not stopper.is_alive()
        assert stopped == [True]
        assert hold.landed == 1
    finally:
        hold.release.set()
        if stopper is None:
            agent.shutdown()
