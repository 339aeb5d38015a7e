"""Network namespaces: entering one safely, and creating/removing named ones.

``setns(2)`` with CLONE_NEWNET changes the namespace of the calling *thread* only. pycni
never switches the thread it runs on: :func:`enter` hands the block to a dedicated worker
thread, which moves into the target namespace and runs callables there. The worker returns
to its own namespace when the context closes, even on error, and waits for the next block
(or ends if it cannot get back). pyroute2's sockets are
bound to the namespace and thread that made them, so create them inside ``ns.call``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from _queue import SimpleQueue  # queue.SimpleQueue without the rest of queue.py
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .._pathstr import join_path
from ..spec import CNIError, InternalError, KernelError, UnknownContainer
from .links import forget_netns, reuse_sockets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import CDLL
    from typing import Any, TypeVar

    T = TypeVar("T")


CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc: CDLL | None = None


def _move_thread(call: Callable[[CDLL], int]) -> None:
    # Python 3.11 has neither os.setns nor os.unshare. ctypes (a few milliseconds of a
    # plugin's start) is loaded by the first switch: calls that never enter a namespace do
    # without it.
    global _libc  # noqa: PLW0603 - loaded once per process
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    forget_netns()  # even a failed call: the thread's namespace is looked up afresh
    if call(_libc) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _setns(fd: int) -> None:
    _move_thread(lambda libc: libc.setns(fd, CLONE_NEWNET))


def unshare_netns() -> None:
    """Move the calling thread into a new network namespace of its own (``unshare(2)``);
    it lives as long as a thread or an fd holds it."""
    _move_thread(lambda libc: libc.unshare(CLONE_NEWNET))


class NetNSNotFound(UnknownContainer):
    """The network namespace is gone: its path does not exist, or is an unmounted mount point."""


class NotANetNSError(InternalError):
    """The path exists but is not a network namespace (a caller error, not a gone netns).

    Code 999 (an InternalError), as the reference plugins report it ("unknown FS magic").
    """


# ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): only nsfs files answer it, with their CLONE_NEW* type.
_NS_GET_NSTYPE = 0xB703

# errno values of open(2) meaning the namespace is gone: a missing path (ENOENT, ENOTDIR for a
# vanished directory in it) or a /proc/<pid>/ns/net whose process has exited (ESRCH). Anything
# else (EMFILE, ENOMEM, EACCES...) says nothing about the namespace and must not be taken for
# "gone": DEL would release a lease whose interface still exists.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ESRCH)


def _gone_or_not_netns(path: str, st: os.stat_result) -> CNIError:
    # "ip netns add" and the runtimes bind-mount the namespace onto an empty regular file; once
    # it is unmounted (namespace deleted) the empty file may stay behind for a while.
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return NetNSNotFound(f"netns {path!r} is gone (an empty file, no namespace mounted "
                             "on it)")
    return NotANetNSError(f"{path!r} is not a network namespace",
                     f"expected an nsfs file such as /run/netns/<name> or /proc/<pid>/ns/net, "
                     f"found a {_file_kind(st.st_mode)}")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
             (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular file"))
    return next((name for test, name in kinds if test(mode)), "special file")


def open_netns(path: str) -> int:
    """Open a network namespace path for setns and return the fd.

    Raises NetNSNotFound (code 3) if the namespace is gone, NotANetNSError (999) if ``path`` is
    something else (a FIFO, a device, a regular file, another kind of namespace), and
    KernelError if it cannot be opened for another reason (too many open files...).
    Never blocks: the path is checked with stat before it is opened (so a FIFO or a device
    is never opened), and opened with O_NONBLOCK.
    """
    try:
        st = os.stat(path or ".")  # "" names the current directory, as Path("") did
    except OSError as exc:
        raise _open_error(path, exc) from exc
    if not stat.S_ISREG(st.st_mode):  # nsfs files are regular files (mode 0444)
        raise _gone_or_not_netns(path, st)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    try:
        _require_netns(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_netns(fd: int, path: str) -> None:
    """Raise unless ``fd`` (what was opened, not what ``path`` names now) is a netns."""
    try:
        nstype = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise KernelError(f"cannot tell what kind of file netns {path!r} is",
                              exc.strerror or str(exc)) from exc
        raise _gone_or_not_netns(path, os.fstat(fd)) from exc
    if nstype != CLONE_NEWNET:
        raise NotANetNSError(f"{path!r} is not a network namespace",
                             "it is a namespace of another kind (e.g. a mount namespace)")


def _open_error(path: str, exc: OSError) -> CNIError:
    if exc.errno in _GONE:
        return NetNSNotFound(f"netns {path!r} does not exist")
    return KernelError(f"cannot open netns {path!r}: {exc.strerror or exc}",
                       "the namespace may still exist; nothing was changed")


class _Worker:
    """A thread that runs the calls of one :func:`enter` block at a time.

    Starting a thread per block cost more CPU than the plugin work done in it (a clone, a
    stack, and the start-up handshake), so threads born in the process's own namespace are
    kept for the next block once they are back home (at most :data:`_MAX_IDLE` idle).
    A thread that cannot get back home ends instead; so does one born elsewhere (a block
    opened inside another block), which would otherwise pin that namespace while idle.
    """

    def __init__(self, pooled: bool) -> None:
        self.pooled = pooled
        self.jobs: SimpleQueue[Any] = SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="pycni-netns", daemon=True)
        self.thread.start()  # no handshake: the block's first message waits in the queue

    def _run(self) -> None:
        # A new thread starts in its creator's namespace: that is home for its whole life.
        try:
            origin: int | None = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            broken: BaseException | None = None
        except OSError as exc:
            origin, broken = None, KernelError("cannot open this thread's network namespace",
                                               exc.strerror or str(exc))
        try:
            while self._serve(origin, broken) and self._park():
                pass
        finally:
            if origin is not None:
                os.close(origin)

    def _serve(self, origin: int | None, broken: BaseException | None) -> bool:
        """One block: enter, run its calls, go home. False if this thread must end."""
        # The block's first call comes with the namespace to enter (one wake-up, not two).
        target, path, first = self.jobs.get()
        failed = broken
        entered = False
        if failed is None:
            try:
                _setns(target)
                entered = True
            except OSError as exc:
                failed = KernelError(f"cannot enter netns {path!r}", exc.strerror or str(exc))
        os.close(target)
        with reuse_sockets():
            job = first
            while job is not None:
                fn, reply = job
                if failed is not None:
                    reply.put((False, failed))
                else:
                    try:
                        reply.put((True, fn()))
                    except BaseException as exc:  # re-raised in the caller
                        reply.put((False, exc))
                job = self.jobs.get()
        if not entered:
            return broken is None
        try:
            _setns(origin)  # type: ignore[arg-type]  # entered, so origin is open
        except OSError:
            return False  # it must not live on in a foreign namespace: end the thread
        return True

    def _park(self) -> bool:
        if not self.pooled:
            return False
        with _pool_lock:
            if len(_idle) >= _MAX_IDLE:
                return False
            _idle.append(self)
        return True


#: Idle worker threads kept for the next :func:`enter` (a burst needs one per call).
_MAX_IDLE = 32
_pool_lock = threading.Lock()
_idle: list[_Worker] = []
#: (st_dev, st_ino) of the process's namespace (its first thread's), once known.
_home: list[tuple[int, int]] = []


def _netns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _at_home() -> bool:
    """Whether the calling thread is in the process's own namespace."""
    try:
        if not _home:
            _home.append(_netns_id("/proc/self/ns/net"))
        return _netns_id("/proc/thread-self/ns/net") == _home[0]
    except OSError:
        return False


def _take_worker() -> _Worker:
    if _at_home():
        with _pool_lock:
            if _idle:
                return _idle.pop()
        return _Worker(pooled=True)
    return _Worker(pooled=False)


def _forget_workers() -> None:
    # A forked child has only the forking thread: the parked workers do not exist there,
    # and a lock one of them held at the fork would stay held for good.
    global _pool_lock  # noqa: PLW0603 - replaced in a forked child only
    _pool_lock = threading.Lock()
    _idle.clear()
    _home.clear()


os.register_at_fork(after_in_child=_forget_workers)


class NetNS:
    """Calls into a network namespace, on a worker thread; use :func:`enter` to get one."""

    def __init__(self, path: str, target: int) -> None:
        self.path = path
        self._lock = threading.Lock()
        #: The open namespace until the first call hands it to a worker.
        self._target: int | None = target
        self._worker: _Worker | None = None
        self._left = False

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside the namespace; its exception propagates."""
        reply: SimpleQueue[tuple[bool, Any]] = SimpleQueue()
        job = (lambda: fn(*args, **kwargs), reply)
        with self._lock:
            if self._left:
                raise RuntimeError(f"netns {self.path!r} was left: its block has ended")
            if self._worker is None:
                self._worker = _take_worker()
                self._worker.jobs.put((self._target, self.path, job))
                self._target = None
            else:
                self._worker.jobs.put(job)
        ok, value = reply.get()
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _leave(self) -> None:
        with self._lock:
            self._left = True
            worker, target = self._worker, self._target
            self._worker = self._target = None
        if target is not None:
            os.close(target)  # no call was made: no worker was needed
        if worker is not None:
            # Not waited for: the worker goes home and closes its sockets on its own.
            worker.jobs.put(None)


@contextmanager
def enter(path: str) -> Iterator[NetNS]:
    """Run code in netns ``path``: ``with enter(p) as ns: ns.call(fn)``.

    Raises what :func:`open_netns` raises: NetNSNotFound (code 3) only if the namespace is
    gone, NotANetNSError or KernelError otherwise. The namespace is opened here and the
    open fd handed to a worker with the first call, so it cannot vanish in between; if the
    worker still cannot enter it (no CAP_SYS_ADMIN), each call raises that KernelError.
    """
    ns = NetNS(path, open_netns(path))
    try:
        yield ns
    finally:
        ns._leave()


def run_in_netns(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One-shot form of :func:`enter`."""
    with enter(path) as ns:
        return ns.call(fn, *args, **kwargs)


def netns_path(name: str) -> str:
    """The path of a named netns (``ip netns`` convention)."""
    return join_path(NETNS_RUN_DIR, name)


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

    if not os.path.exists(netns_path(name)):
        return
    try:
        pr_netns.remove(name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise KernelError(f"failed to remove netns {name!r}: {exc}") from exc


def list_netns() -> list[str]:
    """Named netns, sorted."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []
