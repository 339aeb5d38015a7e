"""Files and rule comments keyed by a container ID, with IDs far longer than NAME_MAX.

The spec sets no limit on CNI_CONTAINERID (the reference accepts 100 KB); a file name holds at
most 255 bytes and an iptables comment 255. Short keys keep the Go plugins' and libcni's
names; longer ones are hashed (see ``pycni.store.fit_name``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.host.netfilter.firewall import Attachment
from pycni.host.netfilter.firewall import nftables as fw_nft
from pycni.host.netfilter.masq import chain_comment, chain_name
from pycni.host.netfilter.portmap.iptables import dnat_comment
from pycni.runtime import CachedAttachment, ResultCache
from pycni.store import NAME_MAX, RecordStore, _files, atomic_write, fit_name

#: 100 KB, a valid container ID.
LONG_ID = "c" + "0123456789abcdef" * 6400
ID_CHARS = st.text("abcdefABC0123456789_.-", min_size=1, max_size=600)


def test_short_names_are_kept_as_they_are() -> None:
    assert fit_name("net1-c1-eth0") == "net1-c1-eth0"
    assert fit_name("c1_eth0", ".json") == "c1_eth0.json"
    exact = "x" * (NAME_MAX - 5)
    assert fit_name(exact, ".json") == exact + ".json"


def test_long_names_keep_a_prefix_and_hash_the_whole_name() -> None:
    name = f"net1-{LONG_ID}-eth0"
    digest = hashlib.sha256(name.encode()).hexdigest()
    assert fit_name(name) == name[:128] + "~" + digest
    assert fit_name(name, ".json") == name[:128] + "~" + digest + ".json"
    assert fit_name(name, limit=127) == name[:62] + "~" + digest


@given(ID_CHARS, ID_CHARS)
def test_fit_name_fits_is_stable_and_tells_names_apart(a: str, b: str) -> None:
    for name in (a, b):
        assert len(fit_name(name, ".json").encode()) <= NAME_MAX
        assert fit_name(name, ".json") == fit_name(name, ".json")
    if a != b:
        assert fit_name(a, ".json") != fit_name(b, ".json")


def test_atomic_write_takes_a_name_of_name_max_bytes(tmp_path: Path) -> None:
    target = tmp_path / ("y" * NAME_MAX)
    atomic_write(target, b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_result_cache_stores_a_100_kb_container_id(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    entry = CachedAttachment(container_id=LONG_ID, ifname="eth0", network_name="net1",
                             config=b"{}", result={"cniVersion": "1.0.0"})
    path = cache.write(entry)
    assert Path(path).name == fit_name(f"net1-{LONG_ID}-eth0")
    assert cache.read("net1", LONG_ID, "eth0") == entry
    assert cache.read("net1", LONG_ID[:-1], "eth0") is None
    assert [e.container_id for e in cache.attachments(container_id=LONG_ID)] == [LONG_ID]
    assert cache.attachments(container_id=LONG_ID[:-1]) == []
    cache.delete("net1", LONG_ID, "eth0")
    assert list(Path(cache.results_dir).iterdir()) == []


def test_result_cache_keeps_libcni_names_for_short_ids(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    path = cache.write(CachedAttachment(container_id="c1", ifname="eth0", network_name="net1",
                                        config=b"{}"))
    assert Path(path).name == "net1-c1-eth0"


def test_record_store_with_a_100_kb_container_id(tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "net1"))
    store.save(LONG_ID, "eth0", {"containerID": LONG_ID})
    store.save(LONG_ID[:-1], "eth0", {"containerID": LONG_ID[:-1]})
    assert RecordStore.load(store.path(LONG_ID, "eth0")) == {"containerID": LONG_ID}
    assert len(store.records()) == 2
    assert store.path("c1", "eth0").name == "c1_eth0.json"  # the Go plugins' name


def test_record_store_prune_removes_only_an_empty_directory(tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "net1"))
    store.prune()  # nothing there: fine
    store.save("c1", "eth0", {})
    store.prune()
    assert store.records() == [store.path("c1", "eth0")]
    RecordStore.remove(store.path("c1", "eth0"))
    store.prune()
    assert not store.directory.exists()


def test_record_store_save_retries_when_the_directory_vanishes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """A concurrent DEL/GC may prune the directory between its mkdir and the write."""
    store = RecordStore(str(tmp_path / "net1"))
    real = _files.tempfile.mkstemp
    calls = []

    def racing_mkstemp(**kwargs: str) -> tuple[int, str]:
        calls.append(kwargs)
        if len(calls) == 1:
            store.prune()  # what the other plugin's DEL does at this moment
        return real(**kwargs)

    monkeypatch.setattr(_files.tempfile, "mkstemp", racing_mkstemp)
    store.save("c1", "eth0", {"ok": True})
    assert RecordStore.load(store.path("c1", "eth0")) == {"ok": True}
    assert len(calls) == 2


def test_iptables_comments_fit_and_keep_short_ids_whole() -> None:
    assert chain_comment("net1", "c1") == 'name: "net1" id: "c1"'
    assert dnat_comment("net1", "c1") == 'dnat name: "net1" id: "c1"'
    # The reference passes the whole masquerade comment and iptables keeps its first 255
    # bytes; for portmap it cuts to 253 bytes + "..." and iptables keeps 255 of those.
    assert chain_comment("net1", LONG_ID) == f'name: "net1" id: "{LONG_ID}'[:255]
    assert dnat_comment("net1", LONG_ID) == f'dnat name: "net1" id: "{LONG_ID}'[:253] + ".."
    assert chain_name("net1", LONG_ID) != chain_name("net1", LONG_ID[:-1])


def test_nftables_firewall_comment_tells_long_ids_apart() -> None:
    def comment(cid: str) -> str:
        return fw_nft.owner_comment(Attachment("net1", cid, "eth0", ()))

    assert comment("c1") == "c1/eth0"
    assert len(comment(LONG_ID).encode()) <= 127
    assert comment(LONG_ID) != comment(LONG_ID[:-1])
