"""The real datastores the cluster tests run against: etcd and kube-apiserver on loopback."""

from __future__ import annotations

import pytest

from pycni.testing import EtcdServer

pytestmark = pytest.mark.cluster


def test_etcd_put_get_through_the_v3_json_gateway(etcd_server: EtcdServer,
                                                  etcd_prefix: str) -> None:
    key = f"{etcd_prefix}subnet/10.244.1.0-24"
    assert etcd_server.get(key) is None
    etcd_server.put(key, '{"node": "a"}')
    assert etcd_server.get(key) == b'{"node": "a"}'
    etcd_server.put(f"{etcd_prefix}other", "x")
    assert etcd_server.get_prefix(etcd_prefix) == {key.encode(): b'{"node": "a"}',
                                                   f"{etcd_prefix}other".encode(): b"x"}


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_etcd_restart_keeps_data(kill: bool) -> None:
    with EtcdServer() as etcd:
        etcd.put("/pyt/persist", "kept")
        url, pid = etcd.url, etcd.pid
        etcd.restart(kill=kill)
        assert etcd.url == url
        assert etcd.pid != pid
        assert etcd.get("/pyt/persist") == b"kept"
        data_dir = etcd.data_dir
    assert not data_dir.exists()
    assert etcd.pid is None
