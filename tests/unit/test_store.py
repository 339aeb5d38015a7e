"""pycni.store: per-attachment records keep the behaviour they had inside the meta plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.store import RecordStore


def test_save_failure_is_an_oserror_naming_the_record(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = RecordStore(str(blocker / "net1"))
    with pytest.raises(NotADirectoryError) as info:
        store.save("c1", "eth0", {"a": 1})
    assert info.value.filename == str(store.path("c1", "eth0"))


@pytest.mark.parametrize("text", ['{"mtu": NaN}', '{"mtu": 1e999}', '{"mtu": -Infinity}',
                                  "[1]", "{", '"\udcff"', "[" * 100_000])
def test_unreadable_records_load_as_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c1_eth0.json"
    path.write_bytes(text.encode(errors="surrogateescape"))
    assert RecordStore.load(path) == {}


def test_missing_record_loads_as_none(tmp_path: Path) -> None:
    assert RecordStore.load(tmp_path / "nothing.json") is None
    store = RecordStore(str(tmp_path / "net1"))
    store.save("c1", "eth0", {"mtu": 1500, "up": True})
    assert RecordStore.load(store.path("c1", "eth0")) == {"mtu": 1500, "up": True}


def test_a_directory_that_is_a_file_holds_no_records(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = RecordStore(str(blocker))
    assert store.records() == []
    RecordStore.remove(store.path("c1", "eth0"))
    assert blocker.is_file()
