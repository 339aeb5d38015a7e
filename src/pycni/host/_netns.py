"""Network namespaces: entering one safely, and creating/removing named ones.

``setns(2)`` with CLONE_NEWNET changes the namespace of the calling *thread* only. pycni
never switches the thread it runs on: :func:`enter` starts a dedicated worker thread, moves
that thread into the target namespace and runs callables there. The worker returns to the
original namespace and exits when the context closes, even on error. pyroute2's sockets are
bound to the namespace and thread that made them, so create them inside ``ns.call``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..spec import KernelError, UnknownContainer
from .links import reuse_sockets

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetNSNotFound(UnknownContainer):
    """The netns path does not exist (or is not a network namespace)."""


def open_netns(path: str) -> int:
    """Open a netns path for setns; NetNSNotFound if it is gone or not a netns."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetNSNotFound(f"netns {path!r} does not exist") from exc
    except OSError as exc:
        raise NetNSNotFound(f"cannot open netns {path!r}: {exc.strerror}") from exc
    return fd


def same_netns(a: str, b: str) -> bool:
    """True if both paths refer to the same network namespace (same inode)."""
    sa, sb = Path(a).stat(), Path(b).stat()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class NetNS:
    """A worker thread living in a network namespace; use :func:`enter` to get one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]] | None] = queue.Queue()
        self._ready: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"netns:{path}", daemon=True)

    def _run(self) -> None:
        origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = open_netns(self.path)
            try:
                _setns(target)
            except OSError as exc:
                raise NetNSNotFound(f"{self.path!r} is not a network namespace: {exc}") from exc
            finally:
                os.close(target)
        except BaseException as exc:  # handed to the caller
            os.close(origin)
            self._ready.put(exc)
            return
        self._ready.put(None)
        try:
            with reuse_sockets():
                while (job := self._jobs.get()) is not None:
                    fn, reply = job
                    try:
                        reply.put((True, fn()))
                    except BaseException as exc:  # re-raised in the caller
                        reply.put((False, exc))
        finally:
            # If we cannot get back, the thread must not live on in a foreign namespace:
            # it exits here either way, and a failure is reported to the next caller.
            try:
                _setns(origin)
            finally:
                os.close(origin)

    def start(self) -> None:
        self._thread.start()
        err = self._ready.get()
        if err is not None:
            self._thread.join()
            raise err

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside the namespace; its exception propagates."""
        reply: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self._jobs.put((lambda: fn(*args, **kwargs), reply))
        ok, value = reply.get()
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


@contextmanager
def enter(path: str) -> Iterator[NetNS]:
    """Run code in netns ``path``: ``with enter(p) as ns: ns.call(fn)``.

    Raises NetNSNotFound (code 3) if ``path`` is missing or not a netns.
    """
    ns = NetNS(path)
    ns.start()
    try:
        yield ns
    finally:
        ns.stop()


def run_in_netns(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One-shot form of :func:`enter`."""
    with enter(path) as ns:
        return ns.call(fn, *args, **kwargs)


def netns_path(name: str) -> str:
    """The path of a named netns (``ip netns`` convention)."""
    return str(Path(NETNS_RUN_DIR) / name)


def create_netns(name: str) -> str:
    """Create a named netns (like ``ip netns add``); return its path."""
    from pyroute2 import netns as pr_netns

    if "/" in name or name in ("", ".", ".."):
        raise KernelError(f"invalid netns name {name!r}")
    try:
        pr_netns.create(name)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise KernelError(f"netns {name!r} already exists") from exc
        raise KernelError(f"failed to create netns {name!r}: {exc}") from exc
    return netns_path(name)


def remove_netns(name: str) -> None:
    """Remove a named netns; a missing one is fine."""
    from pyroute2 import netns as pr_netns

    if not Path(netns_path(name)).exists():
        return
    try:
        pr_netns.remove(name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise KernelError(f"failed to remove netns {name!r}: {exc}") from exc


def list_netns() -> list[str]:
    """Named netns, sorted."""
    try:
        return sorted(p.name for p in Path(NETNS_RUN_DIR).iterdir())
    except FileNotFoundError:
        return []
