"""An index of a host-local directory, so an ADD in a pool of tens of thousands of leases
reads neither every lease file nor (usually) the directory.

The files stay the truth: the Go plugin or another process may change the directory at any
time it holds the flock, so an index is used only under the flock and only if the
directory's ``(st_dev, st_ino, st_mtime_ns, st_ctime_ns)`` is still what it was when the
index was last brought up to date. Creating or unlinking a lease changes the directory's
mtime and ctime; Go and pycni never rewrite a lease in place (they create with ``O_EXCL``
and unlink), so the names plus their owners' checksums are all an index has to track.

File timestamps come from the kernel's coarse clock (one tick, 1-10 ms; kernels since 6.13
refine it for a file whose time was just read). A change in the same tick as the one the
index recorded could keep the same mtime, so an index is *exact* only when the coarse clock
had moved past the directory's mtime when it was recorded; otherwise the next user compares
the directory's names with the index's (one ``listdir``), which catches every create and
unlink in that tick but the unlink and re-create of one name.

What an index holds per lease is the CRC-32 of the file's stripped content: owners are found
by comparing checksums, and every match is then read and compared byte for byte, so a
collision costs one read, never a wrong answer.

Two homes: the agent keeps the indexes of the stores it used in memory (a bounded LRU);
a store of :data:`PERSIST_MIN` leases or more also keeps its index in
``<dataDir>/.pycni-index/<network>`` (a network name cannot start with a dot, and the Go
plugin reads only ``<dataDir>/<network>``), so standalone calls share it. That file is a
cache: written with a rename under the flock, checked by a checksum, ignored and rebuilt
when it is unreadable, foreign or stale. A process that already had the index in memory
does not rewrite the file (that would cost the agent ~10 ms per call in a /16): the first
standalone call after agent calls rebuilds it, once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import zlib
from array import array
from collections import OrderedDict

#: Leases from which an index is also kept on disk for standalone calls; below it, reading
#: every lease costs about what loading the index would.
PERSIST_MIN = 512
#: Directory (under dataDir) of the on-disk indexes.
INDEX_DIR = ".pycni-index"
#: Stores whose index the process keeps in memory (least recently used dropped first) ...
MEMORY_STORES = 32
#: ... and leases over all of them: about 150 bytes each, so at most ~20 MB of agent memory
#: (a /16 is 65,534 leases: two full ones fit).
MEMORY_LEASES = 140_000
_MAGIC = b"pycni host-local index 1"
#: The coarse real-time clock the kernel stamps files with (CLOCK_REALTIME_COARSE).
_COARSE_CLOCK = 5
#: Longest wait for the coarse clock to tick past a big store's new mtime (see _settle).
_SETTLE_LIMIT_NS = 25_000_000

Stamp = tuple[int, int, int, int]


def checksum(content: bytes) -> int:
    """What the index keeps of a lease's (stripped) content."""
    return zlib.crc32(content)


class Index:
    """A directory's entries and its leases' owner checksums, as of :attr:`stamp`."""

    __slots__ = ("exact", "extra", "leases", "stamp")

    def __init__(self, stamp: Stamp, leases: dict[str, int], extra: set[str],
                 exact: bool) -> None:
        self.stamp = stamp
        #: Address file name -> checksum of its stripped content.
        self.leases = leases
        #: Every other entry (lock, last_reserved_ip.N, unreadable or non-address names).
        self.extra = extra
        self.exact = exact

    def names(self) -> set[str]:
        """Every entry of the directory."""
        return self.extra.union(self.leases)

    def owners_like(self, wanted: set[int]) -> list[str]:
        """Lease names whose checksum is in ``wanted`` (to be confirmed by reading)."""
        return [name for name, crc in self.leases.items() if crc in wanted]


def stamp_of(path: str) -> Stamp:
    """What identifies one state of the directory ``path``."""
    st = os.stat(path)  # noqa: PTH116 - str paths on the hot path
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def is_exact(stamp: Stamp) -> bool:
    """True when a later change of the directory cannot keep its mtime (see the module)."""
    return time.clock_gettime_ns(_COARSE_CLOCK) > stamp[2]


def settle(stamp: Stamp) -> bool:
    """:func:`is_exact`, after waiting (under the flock, at most a few ticks) for the coarse
    clock to pass the directory's mtime: for a big store that wait is cheaper than the next
    call's ``listdir`` of tens of thousands of names."""
    deadline = time.monotonic_ns() + _SETTLE_LIMIT_NS
    while not is_exact(stamp) and time.monotonic_ns() < deadline:
        time.sleep(0.0005)
    return is_exact(stamp)


class _Memory:
    """The process's indexes, by directory path; bounded in stores and in leases."""

    def __init__(self, size: int, leases: int) -> None:
        self.size = size
        self.leases = leases
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Index] = OrderedDict()

    def get(self, path: str) -> Index | None:
        with self._lock:
            idx = self._items.get(path)
            if idx is not None:
                self._items.move_to_end(path)
            return idx

    def put(self, path: str, idx: Index) -> None:
        with self._lock:
            self._items[path] = idx
            self._items.move_to_end(path)
            total = sum(len(i.leases) for i in self._items.values())
            while len(self._items) > self.size or (total > self.leases and self._items):
                total -= len(self._items.popitem(last=False)[1].leases)

    def drop(self, path: str) -> None:
        with self._lock:
            self._items.pop(path, None)

    def __len__(self) -> int:
        return len(self._items)


#: The indexes of this process (the agent's, across calls).
MEMORY = _Memory(MEMORY_STORES, MEMORY_LEASES)


def encode(idx: Index) -> bytes:
    """The on-disk form: magic, stamp and exactness, extra names, lease names, checksums."""
    crcs = array("I", idx.leases.values())
    # Lease names are addresses; another name holding a separator is left out (it only
    # counts as taken, and a catch-up finds it again).
    extra = sorted(n for n in idx.extra if "\n" not in n and "\0" not in n)
    body = b"\n".join((
        "\0".join(extra).encode(errors="surrogateescape"),
        "\0".join(idx.leases).encode(errors="surrogateescape"),
    )) + b"\n" + crcs.tobytes()
    head = " ".join(str(v) for v in (*idx.stamp, int(idx.exact), len(crcs), zlib.crc32(body)))
    return _MAGIC + b"\n" + head.encode() + b"\n" + body


def decode(data: bytes) -> Index | None:
    """The index in ``data``; None if it is not a whole, well-formed one."""
    try:
        magic, head, body = data.split(b"\n", 2)
        if magic != _MAGIC:
            return None
        fields = [int(v) for v in head.split()]
        if len(fields) != 7 or zlib.crc32(body) != fields[6]:
            return None
        extra_raw, names_raw, crc_raw = body.split(b"\n", 2)
        count = fields[5]
        crcs = array("I")
        crcs.frombytes(crc_raw)
        names = names_raw.decode(errors="surrogateescape").split("\0") if count else []
        if len(crcs) != count or len(names) != count:
            return None
        extra = set(extra_raw.decode(errors="surrogateescape").split("\0")) - {""}
        stamp = (fields[0], fields[1], fields[2], fields[3])
        return Index(stamp, dict(zip(names, crcs, strict=True)), extra, bool(fields[4]))
    except (ValueError, UnicodeError):
        return None


def persisted_path(data_dir: str, network: str) -> str:
    """Where the on-disk index of ``network`` lives."""
    return os.path.join(data_dir, INDEX_DIR, network)  # noqa: PTH118 - str paths, hot path


def load(data_dir: str, network: str) -> Index | None:
    """The on-disk index, if there is a readable one (not yet checked against the store)."""
    try:
        with open(persisted_path(data_dir, network), "rb") as fh:
            return decode(fh.read())
    except OSError:
        return None


def save(data_dir: str, network: str, idx: Index) -> None:
    """Replace the on-disk index (a cache: no fsync; a torn file fails its checksum)."""
    target = persisted_path(data_dir, network)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)  # noqa: PTH103, PTH120
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, encode(idx))
        finally:
            os.close(fd)
        os.replace(tmp, target)  # noqa: PTH105
    except OSError:
        # Only a cache: an unwritable dataDir leaves standalone calls on the slow path.
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # noqa: PTH108


def discard(data_dir: str, network: str) -> None:
    """Remove the on-disk index (the store shrank below :data:`PERSIST_MIN`)."""
    with contextlib.suppress(OSError):
        os.unlink(persisted_path(data_dir, network))  # noqa: PTH108
