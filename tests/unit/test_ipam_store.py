"""The host-local disk store: the reference's exact bytes, legacy files, release and GC."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import stat
import subprocess
from pathlib import Path

import pytest

from pycni.ipam import DiskStore, Reservation, reservation_bytes
from pycni.spec import IOFailure

IP = ipaddress.ip_address


def ls(path: Path) -> list[str]:
    """The names in a directory, sorted."""
    return sorted(p.name for p in Path(path).iterdir())


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore("net1", str(tmp_path))


def test_reserve_writes_the_reference_format(store: DiskStore, tmp_path: Path) -> None:
    with store.locked():
        assert store.reserve(IP("10.1.0.2"), "cid1", "eth0", 0)
        assert store.reserve(IP("2001:db8::2"), "cid1", "eth0", 1)
        assert not store.reserve(IP("10.1.0.2"), "cid2", "eth0", 0)
    d = tmp_path / "net1"
    assert ls(d) == ["10.1.0.2", "2001:db8::2", "last_reserved_ip.0",
                                     "last_reserved_ip.1", "lock"]
    assert (d / "10.1.0.2").read_bytes() == b"cid1\r\neth0"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.1.0.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"2001:db8::2"
    assert stat.S_IMODE((d / "10.1.0.2").stat().st_mode) == 0o644
    assert stat.S_IMODE((d / "lock").stat().st_mode) == 0o750 & ~_umask()
    assert (d / "lock").read_bytes() == b""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_container_id_is_trimmed_like_go() -> None:
    assert reservation_bytes(" abc ", "eth1") == b"abc\r\neth1"


def test_lock_excludes_another_open_file_description(store: DiskStore) -> None:
    with store.locked():
        fd = os.open(store.path / "lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(store.path / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once released
    finally:
        os.close(fd)


def _write(store: DiskStore, name: str, data: bytes) -> None:
    store.path.mkdir(parents=True, exist_ok=True)
    (store.path / name).write_bytes(data)


def test_release_owner_exact_then_legacy(store: DiskStore) -> None:
    _write(store, "10.1.0.2", b"cid\r\neth0")
    _write(store, "10.1.0.3", b"cid\r\neth1")
    _write(store, "10.1.0.4", b"cid")  # legacy: container ID only
    with store.locked():
        assert store.release_owner("cid", "eth0") == [IP("10.1.0.2")]
        # No exact match left for eth0: the legacy file of this container goes.
        assert store.release_owner("cid", "eth0") == [IP("10.1.0.4")]
        assert store.release_owner("cid", "eth0") == []
        assert ls(store.path) == ["10.1.0.3", "lock"]


def test_non_address_files_are_never_reservations(store: DiskStore) -> None:
    # A container ID may look like an address; last_reserved_ip.0 must not match it.
    _write(store, "last_reserved_ip.0", b"10.1.0.9")
    _write(store, "notes.txt", b"10.1.0.9")
    with store.locked():
        assert store.release_owner("10.1.0.9", "eth0") == []
        assert store.gc(set()) == []
    assert ls(store.path) == ["last_reserved_ip.0", "lock", "notes.txt"]


def test_gc_keeps_valid_and_legacy_of_valid_ids(store: DiskStore) -> None:
    _write(store, "10.1.0.2", b"keep\r\neth0")
    _write(store, "10.1.0.3", b"keep\r\neth1")
    _write(store, "10.1.0.4", b"gone\r\neth0")
    _write(store, "10.1.0.5", b"keep")
    _write(store, "10.1.0.6", b"gone")
    _write(store, "last_reserved_ip.0", b"10.1.0.6")
    with store.locked():
        released = store.gc({("keep", "eth0")})
    assert sorted(map(str, released)) == ["10.1.0.3", "10.1.0.4", "10.1.0.6"]
    assert ls(store.path) == ["10.1.0.2", "10.1.0.5", "last_reserved_ip.0",
                                              "lock"]


def test_parse_reservations() -> None:
    assert Reservation.parse("lock", b"") is None
    r = Reservation.parse("10.1.0.2", b"abc\r\neth0\n")
    assert r is not None
    assert (r.container_id, r.ifname, r.legacy) == ("abc", "eth0", False)
    legacy = Reservation.parse("2001:db8::2", b"abc")
    assert legacy is not None
    assert legacy.legacy
    assert legacy.owned_by("abc", "eth7")
    assert not legacy.owned_by("abcd", "eth7")


def test_last_reserved_tolerates_garbage(store: DiskStore) -> None:
    assert store.last_reserved(0) is None
    _write(store, "last_reserved_ip.0", b"not an ip")
    assert store.last_reserved(0) is None
    _write(store, "last_reserved_ip.0", b"10.1.0.7")
    assert store.last_reserved(0) == IP("10.1.0.7")


def test_unwritable_data_dir_is_an_io_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = DiskStore("net1", str(blocker))
    assert "not a directory" in store.writable()
    with pytest.raises(IOFailure, match="net1"), store.locked():
        pass


def test_writable_walks_up_to_an_existing_parent(tmp_path: Path) -> None:
    store = DiskStore("net1", str(tmp_path / "a" / "b"))
    assert store.writable() == ""
    assert not (tmp_path / "a").exists()  # STATUS does not create anything


def test_the_in_memory_indexes_are_bounded() -> None:
    from pycni.ipam._index import Index, _Memory

    def index(leases: int) -> Index:
        return Index((0, 0, 0, 0), {f"10.0.{n >> 8}.{n & 255}": 0 for n in range(leases)},
                     set(), exact=True)

    memory = _Memory(size=3, leases=100)
    for n in range(5):
        memory.put(f"/s{n}", index(10))
    assert len(memory) == 3
    assert memory.get("/s0") is None
    assert memory.get("/s4") is not None
    memory.put("/big", index(95))  # over the lease budget with the others: they go first
    assert memory.get("/big") is not None
    assert memory.get("/s4") is None
    memory.put("/huge", index(101))  # larger than the whole budget: not kept at all
    assert memory.get("/huge") is None


def test_the_index_file_round_trips_and_refuses_damage() -> None:
    from pycni.ipam._index import Index, decode, encode

    idx = Index((1, 2, 3, 4), {"10.0.0.2": 5, "2001:db8::2": 7},
                {"lock", "last_reserved_ip.0", "odd\nname"}, exact=True)
    back = decode(encode(idx))
    assert back is not None
    assert (back.stamp, back.leases, back.exact) == (idx.stamp, idx.leases, True)
    assert back.extra == {"lock", "last_reserved_ip.0"}  # a name with a separator is skipped
    data = encode(idx)
    for bad in (data[:-1], data.replace(b"10.0.0.2", b"10.0.0.9"), b"", b"pycni\n1 2\n"):
        assert decode(bad) is None


def test_the_store_directory_is_made_as_pathlib_made_it(tmp_path: Path) -> None:
    # Parents with the default mode, the network's directory 0755; an existing one is fine.
    with DiskStore("net1", str(tmp_path / "ours" / "a" / "b")).locked():
        pass
    (tmp_path / "ref" / "a" / "b" / "net1").mkdir(mode=0o755, parents=True, exist_ok=True)
    for sub in ("a", "a/b", "a/b/net1"):
        assert (tmp_path / "ours" / sub).stat().st_mode == (tmp_path / "ref" / sub).stat().st_mode
    with DiskStore("net1", str(tmp_path / "ours" / "a" / "b")).locked():
        pass
    assert sorted(p.name for p in (tmp_path / "ours" / "a" / "b" / "net1").iterdir()) == ["lock"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs CAP_LINUX_IMMUTABLE (root)")
def test_a_lease_that_cannot_be_unlinked_stays_in_the_index(store: DiskStore) -> None:
    # The index must not forget a file that is still there: the owner's next DEL finds its
    # lease through the index.
    _write(store, "10.1.0.2", b"cid\r\neth0")
    lease = store.path / "10.1.0.2"
    with store.locked():
        pass
    # The directory's stamp in the past: the index kept in memory counts as exact (no
    # listing to catch up with what it may have missed in the same clock tick).
    os.utime(store.path, (1e9, 1e9))
    with store.locked():
        assert [r.ip for r in store.owned("cid", "eth0")] == [IP("10.1.0.2")]
    subprocess.run(["chattr", "+i", str(lease)], check=True)  # unlink: EPERM, even for root
    try:
        with pytest.raises(IOFailure, match=r"cannot release 10\.1\.0\.2"), store.locked():
            store.release_owner("cid", "eth0")
    finally:
        subprocess.run(["chattr", "-i", str(lease)], check=True)
    with store.locked():
        assert store.release_owner("cid", "eth0") == [IP("10.1.0.2")]
    assert ls(store.path) == ["lock"]
