"""Entering namespaces: worker threads are reused, yet none is ever left in a foreign one.

``host.enter`` runs a block's calls on a worker thread that is kept for the next block once
it is back home. These check what that must never change: each block acts in its own
namespace, no thread of the process stays in a container's namespace after its block (an
idle thread there would pin the namespace and everything in it), and a handle used after
its block ends cannot reach whatever namespace the worker serves next.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pycni import host
from pycni.testing import wait_for

pytestmark = pytest.mark.netns


def _netns_here() -> tuple[int, int]:
    st = Path("/proc/thread-self/ns/net").stat()
    return st.st_dev, st.st_ino


def _netns_of(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_dev, st.st_ino


def _threads_in(ns: tuple[int, int]) -> list[str]:
    """Task ids of this process's threads that are in namespace ``ns``."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        try:
            if _netns_of(str(task / "ns" / "net")) == ns:
                found.append(task.name)
        except OSError:
            continue  # the thread ended meanwhile
    return found


def test_each_block_acts_in_its_own_namespace(netns: str, netns2: str) -> None:
    home = _netns_here()
    for _ in range(3):
        for path in (netns, netns2):
            with host.enter(path) as ns:
                assert ns.call(_netns_here) == _netns_of(path)
                assert ns.call(_netns_here) == _netns_of(path)
            assert _netns_here() == home
    assert host.run_in_netns(netns2, _netns_here) == _netns_of(netns2)


def test_no_thread_stays_in_a_namespace_after_its_block(netns: str, netns2: str) -> None:
    # Blocks from several threads at once, and a block opened inside another one (its worker
    # is born in the outer namespace): afterwards nothing of the process is left in either.
    def nested() -> tuple[int, int]:
        return host.run_in_netns(netns2, _netns_here)

    def use() -> None:
        with host.enter(netns) as ns:
            assert ns.call(nested) == _netns_of(netns2)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for path in (netns, netns2):
        assert wait_for(lambda path=path: not _threads_in(_netns_of(path)), timeout=10), \
            f"threads {_threads_in(_netns_of(path))} stayed in {path}"


def test_a_handle_used_after_its_block_is_refused(netns: str, netns2: str) -> None:
    with host.enter(netns) as stale:
        pass
    outcome: list[object] = []

    def late_call() -> None:
        try:
            outcome.append(stale.call(_netns_here))
        except RuntimeError as exc:
            outcome.append(exc)

    # Another block may already be served by the same worker thread.
    with host.enter(netns2) as ns:
        caller = threading.Thread(target=late_call, daemon=True)
        caller.start()
        caller.join(10)
        assert ns.call(_netns_here) == _netns_of(netns2)
    assert outcome, "a call on a handle whose block had ended never returned"
    assert isinstance(outcome[0], RuntimeError)
    assert "was left" in str(outcome[0])


def test_a_gone_namespace_fails_at_enter(tmp_path: Path) -> None:
    with pytest.raises(host.NetNSNotFound), host.enter(str(tmp_path / "nothing")):
        pass


def _fork_entering(netns: str) -> int:
    """Fork a child that enters ``netns`` from a thread of its own (within 10 s); its pid.
    It exits 0 if it got there."""
    pid = os.fork()
    if pid == 0:  # the child has none of the parent's threads
        code = 1
        try:
            result: list[tuple[int, int]] = []
            t = threading.Thread(target=lambda: result.append(
                host.run_in_netns(netns, _netns_here)), daemon=True)
            t.start()
            t.join(10)
            code = 0 if result == [_netns_of(netns)] else 1
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_enters_namespaces(netns: str) -> None:
    host.run_in_netns(netns, _netns_here)  # a worker is parked in the parent now
    assert _exit_code(_fork_entering(netns)) == 0


def test_a_child_forked_while_a_worker_parks_enters_namespaces(netns: str) -> None:
    # A worker holds the pool's lock while it parks; a fork at that moment copies the lock
    # held, and no thread of the child will ever release it.
    from pycni.host import _netns

    held, done = threading.Event(), threading.Event()

    def parking() -> None:
        with _netns._pool_lock:  # as a parking worker holds it
            held.set()
            done.wait(30)

    holder = threading.Thread(target=parking, daemon=True)
    holder.start()
    held.wait(30)
    pid = _fork_entering(netns)
    done.set()
    holder.join()
    assert _exit_code(pid) == 0
