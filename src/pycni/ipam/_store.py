"""host-local's on-disk store, byte for byte the reference plugin's, so both can share it.

Layout of ``<dataDir>/<network>/`` (dataDir defaults to ``/var/lib/cni/networks``)::

    lock                  empty; flock(LOCK_EX) on it guards the whole directory
    10.1.0.2              "<containerID>\\r\\n<ifname>" (no trailing newline), mode 0644
    2001:db8::2           the same for IPv6 (Go's net.IP.String form)
    last_reserved_ip.0    the address last reserved from range set 0 (no newline)

Reservation files written before CNI 0.7 hold only the container ID; they match any
interface of that container, as in the reference. Go opens ``lock`` with
``O_CREAT|O_RDONLY`` and mode 0750 and takes ``flock`` on it; we do exactly the same, so a
Go plugin and a pycni plugin working on one network exclude each other.

Callers hold :meth:`DiskStore.locked` around every read-modify-write. DEL, CHECK and GC lock
with ``create=False``: a network this host never stored anything for stays without a
directory (the reference creates ``<network>/lock`` even then).

A reservation file holds the whole container ID, whatever its length (the spec sets none; a
100 KB ID is a 100 KB file), and is read whole.

Under the lock, a store answers "what is taken" and "what does this attachment hold" from an
index of the directory (:mod:`._index`) checked against the directory's timestamps first, so
an ADD in a nearly full /16 reads only the files it must; the files remain the truth.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .._pathstr import join_path
from .._record import FrozenRecord, set_fields
from ..spec import IOFailure, IPAddress
from . import _index
from ._index import MEMORY, PERSIST_MIN, Index, checksum
from ._range import canonical_ip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LOCK_NAME = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
#: One read covers any ordinary reservation file; longer ones (long IDs) take more reads.
_READ_CHUNK = 4096


def reservation_bytes(container_id: str, ifname: str) -> bytes:
    """A reservation file's exact content."""
    return (container_id.strip() + LINE_BREAK + ifname).encode()


class Reservation(FrozenRecord):
    """One reservation file: an address held by (container ID, interface)."""

    __slots__ = ("container_id", "ifname", "ip", "name")
    ip: IPAddress
    name: str
    container_id: str
    #: Empty for a legacy file that holds only the container ID.
    ifname: str

    def __init__(self, ip: IPAddress, name: str, container_id: str, ifname: str) -> None:
        set_fields(self, ip, name, container_id, ifname)

    @property
    def legacy(self) -> bool:
        """True for a file written before the interface name was recorded."""
        return not self.ifname

    def owned_by(self, container_id: str, ifname: str) -> bool:
        """Exact (ID, interface) match, or a legacy file with this container ID."""
        return self.container_id == container_id.strip() and self.ifname in ("", ifname)

    @classmethod
    def parse(cls, name: str, data: bytes) -> Reservation | None:
        """Decode a file's content; None if the name is not an address."""
        ip = _ip_from_name(name)
        if ip is None:
            return None
        text = data.decode(errors="replace").strip()
        cid, _, ifname = text.partition(LINE_BREAK)
        return cls(ip=ip, name=name, container_id=cid.strip(), ifname=ifname.strip())


#: Characters of an address file's name; ``lock`` and ``last_reserved_ip.N`` have others.
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")


def _may_be_address(name: str) -> bool:
    """A cheap filter before the (costly) address parse; tens of thousands of names pass."""
    return _ADDRESS_CHARS.issuperset(name)


def _ip_from_name(name: str) -> IPAddress | None:
    if not _may_be_address(name):
        return None
    try:
        return canonical_ip(ipaddress.ip_address(name))
    except ValueError:
        return None


class DiskStore:
    """The reservations of one network in ``<data_dir>/<network>``: host-local's :class:`Store`."""

    def __init__(self, network: str, data_dir: str = "") -> None:
        self.network = network
        self.data_dir = data_dir or DEFAULT_DATA_DIR
        # A str, as pathlib spells it (pathlib costs a plugin's start milliseconds): it names
        # the files, keys the in-memory index and appears in messages.
        self._dir = join_path(self.data_dir, network)
        #: While the flock is held: the directory's index once something asked for it.
        self._index: Index | None = None
        self._held = False
        self._dirty = False
        self._disk_stale = False
        self._from_memory = False

    @property
    def path(self) -> Path:
        """The network's directory, ``<data_dir>/<network>``."""
        from pathlib import Path

        return Path(self._dir)

    def _file(self, name: str) -> str:
        return join_path(self._dir, name)

    @contextmanager
    def locked(self, *, create: bool = True) -> Iterator[bool]:
        """Hold the network's flock; yields whether the store exists.

        ``create``: make the directory if needed (ADD). Without it a missing directory yields
        False and nothing is locked or created: there is nothing to read or release.
        """
        lock = self._file(LOCK_NAME)
        flags = os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC
        try:
            if not create and not os.path.isdir(self._dir):
                yield False
                return
            try:
                fd = os.open(lock, flags, 0o750)
            except FileNotFoundError:
                if not create:
                    raise
                # The first call of a network: its directory (parents with the default mode,
                # as pathlib's mkdir(parents=True) made them).
                os.makedirs(self._dir, 0o755, exist_ok=True)
                fd = os.open(lock, flags, 0o750)
        except OSError as exc:
            raise IOFailure(f"host-local: cannot open the store of network {self.network!r} "
                            f"in {self._dir}", str(exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = True
            try:
                yield True
            finally:
                self._held = False
                self._commit()
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def _idx(self) -> Index:
        """The directory's index, checked against (or rebuilt from) the directory."""
        if self._index is None:
            self._index = self._fresh_index()
        return self._index

    def _fresh_index(self) -> Index:
        try:
            stamp = _index.stamp_of(self._dir)
        except OSError as exc:
            raise IOFailure(f"host-local: cannot read {self._dir}", str(exc)) from exc
        idx = MEMORY.get(self._dir)
        self._from_memory = idx is not None and idx.stamp == stamp
        if not self._from_memory:
            disk = _index.load(self.data_dir, self.network)
            self._disk_stale = disk is not None and disk.stamp != stamp
            idx = disk if disk is not None and not self._disk_stale else None
        if idx is None:
            self._dirty = True
            return self._build(stamp)
        if not idx.exact:
            self._catch_up(idx)
        return idx

    def _build(self, stamp: _index.Stamp) -> Index:
        """Read every lease once (what every call did before there was an index)."""
        idx = Index(stamp, {}, set(), exact=False)
        names = self._listdir()
        with self._dir_fd() as dir_fd:
            for name in names:
                self._classify(idx, name, dir_fd)
        return idx

    def _catch_up(self, idx: Index) -> None:
        """Apply the creates and unlinks the index may have missed (same clock tick).

        The index is then saved even if nothing was missed: it may now be recorded as exact,
        which spares the next calls this listing.
        """
        self._dirty = True
        names = self._listdir()
        known = idx.names()
        for name in known - names:
            idx.leases.pop(name, None)
            idx.extra.discard(name)
        new = names - known
        if new:
            with self._dir_fd() as dir_fd:
                for name in new:
                    self._classify(idx, name, dir_fd)

    def _classify(self, idx: Index, name: str, dir_fd: int | None) -> None:
        data = None
        if _may_be_address(name):
            data = _read_file(name if dir_fd is not None else self._file(name), dir_fd)
        if data is None:
            idx.extra.add(name)
        else:
            idx.leases[name] = checksum(data.strip())

    def _commit(self) -> None:
        """Record the index against the directory as this call leaves it (under the flock)."""
        idx, self._index = self._index, None
        dirty, self._dirty = self._dirty, False
        if idx is None:
            return
        try:
            idx.stamp = _index.stamp_of(self._dir)
        except OSError:
            MEMORY.drop(self._dir)
            return
        big = len(idx.leases) >= PERSIST_MIN
        idx.exact = _index.settle(idx.stamp) if big else _index.is_exact(idx.stamp)
        MEMORY.put(self._dir, idx)
        # A process that had the index in memory (the agent) does not rewrite the file each
        # call: a standalone call after it finds the file stale and rebuilds it, once.
        if big and (dirty or self._disk_stale) and not self._from_memory:
            _index.save(self.data_dir, self.network, idx)
        elif not big and self._disk_stale:
            _index.discard(self.data_dir, self.network)
        self._disk_stale = False

    @contextmanager
    def _dir_fd(self) -> Iterator[int | None]:
        try:
            dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise IOFailure(f"host-local: cannot open {self._dir}", str(exc)) from exc
        try:
            yield dir_fd
        finally:
            os.close(dir_fd)

    def names(self) -> set[str]:
        """Every file name in the directory (from the index under the lock, else listdir)."""
        if self._held:
            return self._idx().names()
        return self._listdir()

    def _listdir(self) -> set[str]:
        try:
            return set(os.listdir(self._dir))
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise IOFailure(f"host-local: cannot list {self._dir}", str(exc)) from exc

    def _contents(self, names: Iterable[str] | None) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of each address file in ``names`` (default: all).

        Files are opened relative to one directory descriptor: with tens of thousands of
        them, building and resolving a full path per file costs more than the read itself.
        Unreadable files are skipped, as the reference does.
        """
        with self._dir_fd() as dir_fd:
            if dir_fd is None:
                return
            for name in self.names() if names is None else names:
                if _may_be_address(name):
                    data = _read_file(name, dir_fd)
                    if data is not None:
                        yield name, data

    def reservations(self, names: Iterable[str] | None = None) -> list[Reservation]:
        """Every reservation file (of ``names``, default all), read once."""
        found = (Reservation.parse(name, data) for name, data in self._contents(names))
        return [r for r in found if r is not None]

    def _read(self, name: str) -> bytes | None:
        return _read_file(self._file(name))

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, range_id: int) -> bool:
        """Create ``ip``'s file exclusively; False if it exists. Records last_reserved_ip."""
        path = self._file(str(ip))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if self._index is not None:  # a writer that ignored the lock: learn its lease
                self._classify(self._index, str(ip), None)
            return False
        except OSError as exc:
            raise IOFailure(f"host-local: cannot reserve {ip} in {self._dir}", str(exc)) from exc
        content = reservation_bytes(container_id, ifname)
        try:
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            if self._index is not None:
                self._index.leases[str(ip)] = checksum(content.strip())
                self._dirty = True
            self._write(f"{LAST_RESERVED_PREFIX}{range_id}", str(ip).encode())
        except OSError as exc:
            self.release(ip)
            raise IOFailure(f"host-local: cannot reserve {ip} in {self._dir}", str(exc)) from exc
        return True

    def _write(self, name: str, data: bytes) -> None:
        if self._index is not None:
            self._index.extra.add(name)
        fd = os.open(self._file(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def last_reserved(self, range_id: int) -> IPAddress | None:
        """The address last reserved from range set ``range_id``; None if unknown."""
        data = self._read(f"{LAST_RESERVED_PREFIX}{range_id}")
        if data is None:
            return None
        try:
            return canonical_ip(ipaddress.ip_address(data.decode(errors="replace").strip()))
        except ValueError:
            return None  # a torn or foreign file only costs the round-robin position

    def release(self, ip: IPAddress) -> bool:
        """Remove ``ip``'s file; False if it was not there."""
        try:
            os.unlink(self._file(str(ip)))
        except FileNotFoundError:
            released = False
        except OSError as exc:
            # The file stays, so the index keeps it too (its owner's DEL must find it).
            raise IOFailure(f"host-local: cannot release {ip} in {self._dir}", str(exc)) from exc
        else:
            released = True
        if self._index is not None:
            self._index.leases.pop(str(ip), None)
            self._dirty = True
        return released

    def owned(self, container_id: str, ifname: str, names: Iterable[str] | None = None
              ) -> list[Reservation]:
        """The reservations of (container ID, interface), exact or legacy.

        Under the lock, the index names the few files whose checksum matches and only
        those are read; otherwise every file is read. Contents are compared as bytes first:
        only the matches are decoded and parsed. The comparison is the reference's: the
        whole content, stripped, against ``ID\r\nifname`` or against ``ID`` alone.
        """
        wanted = (reservation_bytes(container_id, ifname), container_id.strip().encode())
        if self._held:
            # The index points at the few files whose checksum matches; they are read below.
            likely = self._idx().owners_like({checksum(w) for w in wanted})
            names = likely if names is None else [n for n in likely if n in names]
        found = (Reservation.parse(name, data) for name, data in self._contents(names)
                 if data.strip() in wanted)
        return [r for r in found if r is not None]

    def release_owner(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Release what (container ID, interface) holds; the released addresses.

        Like the reference, legacy ID-only files are released only when no exact
        (ID, interface) file exists, so one interface's DEL does not take a legacy
        address that another interface of the container may be using.
        """
        owned = self.owned(container_id, ifname)
        exact = [r for r in owned if not r.legacy]
        return [r.ip for r in (exact or owned) if self.release(r.ip)]

    def gc(self, valid: set[tuple[str, str]]) -> list[IPAddress]:
        """Release every reservation whose (ID, interface) is not in ``valid``.

        A legacy ID-only file stays if any valid attachment has its container ID.
        """
        valid_ids = {cid for cid, _ in valid}
        stale = [r for r in self.reservations()
                 if not ((r.container_id, r.ifname) in valid
                         or (r.legacy and r.container_id in valid_ids))]
        return [r.ip for r in stale if self.release(r.ip)]

    def writable(self) -> str:
        """Empty if reservations can be written, else the reason (for STATUS)."""
        path = self.path
        while not path.exists() and path.parent != path:
            path = path.parent
        if not path.is_dir():
            return f"{path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            reason = "read-only file system" if _read_only_fs(path) else "permission denied"
            return f"{path} is not writable ({reason})"
        return ""


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return exc.errno == errno.EROFS


def _read_file(path: str, dir_fd: int | None = None) -> bytes | None:
    """A regular file's whole content; None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        data = os.read(fd, _READ_CHUNK)
        if len(data) < _READ_CHUNK:  # a short read of a regular file is its end: one syscall
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:  # e.g. EISDIR: not a reservation
        return None
    finally:
        os.close(fd)
