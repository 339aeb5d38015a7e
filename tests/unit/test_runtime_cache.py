"""The result cache: libcni's format and place, atomic writes, tolerant reads."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from pycni.runtime import CACHE_KIND, CachedAttachment, ResultCache, go_json
from pycni.spec import CNIError, IOFailure

RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
          "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
          "dns": {}}


def _entry(**over: object) -> CachedAttachment:
    fields: dict[str, object] = {
        "container_id": "c1", "ifname": "eth0", "network_name": "net1",
        "config": b'{"name":"net1"}', "netns": "/run/netns/x",
        "cni_args": [("IgnoreUnknown", "1")],
        "capability_args": {"portMappings": [{"hostPort": 80}]}, "result": RESULT}
    fields.update(over)
    return CachedAttachment(**fields)  # type: ignore[arg-type]


def test_write_uses_libcni_path_format_and_modes(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    path = cache.write(_entry())
    assert path == str(tmp_path / "results" / "net1-c1-eth0")
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "results").stat().st_mode) == 0o700
    text = Path(path).read_text()
    # Go's struct field order, compact, map keys sorted.
    assert list(json.loads(text)) == ["kind", "containerId", "config", "ifName", "networkName",
                                      "netns", "cniArgs", "capabilityArgs", "result"]
    assert text.startswith('{"kind":"cniCacheV1","containerId":"c1","config":"')
    obj = json.loads(text)
    assert obj["kind"] == CACHE_KIND
    assert base64.b64decode(obj["config"]) == b'{"name":"net1"}'
    assert obj["cniArgs"] == [["IgnoreUnknown", "1"]]
    assert list(obj["result"]) == sorted(obj["result"])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["net1-c1-eth0"]


def test_empty_fields_are_omitted_like_omitempty(tmp_path: Path) -> None:
    obj = _entry(netns="", cni_args=[], capability_args={}, result=None).to_json()
    assert list(obj) == ["kind", "containerId", "config", "ifName", "networkName"]


def test_go_json_escapes_like_encoding_json() -> None:
    assert go_json({"a": "<&>\u2028é"}) == '{"a":"\\u003c\\u0026\\u003e\\u2028é"}'.encode()


def test_round_trip_and_result_conversion(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(_entry())
    back = cache.read("net1", "c1", "eth0")
    assert back == _entry()
    result = cache.result("net1", "c1", "eth0", "0.4.0")
    assert result is not None
    assert result.to_json()["ips"][0]["version"] == "4"
    assert [e.container_id for e in cache.attachments()] == ["c1"]
    cache.delete("net1", "c1", "eth0")
    cache.delete("net1", "c1", "eth0")
    assert cache.read("net1", "c1", "eth0") is None
    assert cache.result("net1", "c1", "eth0", "1.0.0") is None


@pytest.mark.parametrize("content", [
    b"", b"{", b"null", b"[]", b'{"kind": "other"}',
    b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0"}',
    b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "net1",'
    b' "config": "***"}',
    b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "net1",'
    b' "result": {"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]}}',
    b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "net1",'
    b' "result": {"cniVersion": "3.0.0"}}',
    b"[" * 50000,
])
def test_corrupt_cache_is_no_result(tmp_path: Path, content: bytes) -> None:
    cache = ResultCache(str(tmp_path))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net1-c1-eth0").write_bytes(content)
    assert cache.result("net1", "c1", "eth0", "1.0.0") is None


def test_legacy_bare_result_file_is_understood(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net1-c1-eth0").write_text(json.dumps(RESULT))
    result = cache.result("net1", "c1", "eth0", "1.0.0")
    assert result is not None
    assert str(result.ips[0].address) == "10.1.0.5/24"


@pytest.mark.parametrize(("net", "cid", "ifname"), [
    ("../x", "c1", "eth0"), ("net1", "../../etc", "eth0"), ("net1", "c1", "a/b"),
    ("net1", "", "eth0"), ("net1", "c1", ".."),
])
def test_path_components_cannot_escape(tmp_path: Path, net: str, cid: str, ifname: str) -> None:
    with pytest.raises(CNIError):
        ResultCache(str(tmp_path)).path(net, cid, ifname)


def test_attachments_filter_and_skip_junk(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(_entry())
    cache.write(_entry(container_id="c2", network_name="net2"))
    cache.write(_entry(container_id="c1", ifname="net1"))
    (tmp_path / "results" / ".tmp-abc").write_text("{}")
    (tmp_path / "results" / "junk-c1-eth1").write_text("garbage")
    assert len(cache.attachments()) == 3
    assert {(e.network_name, e.ifname) for e in cache.attachments("c1")} == {
        ("net1", "eth0"), ("net1", "net1")}
    assert [e.container_id for e in cache.attachments(network="net2")] == ["c2"]


def test_write_failure_is_io_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(IOFailure) as err:
        ResultCache(str(blocker)).write(_entry())
    assert err.value.code == 5
