"""The DHCP client, lease keeper and daemon against a scripted in-memory server."""

from __future__ import annotations

import ipaddress
import json
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.daemon.dhcp import DaemonOptions, DhcpDaemon
from pycni.ipam.dhcp import (
    Attachment,
    DhcpClient,
    LeaseKeeper,
    LeaseStore,
    LinkGone,
    Message,
    State,
    Timing,
    call_daemon,
)
from pycni.ipam.dhcp import _packet as p
from pycni.plugins.ipam.dhcp import Dhcp
from pycni.skel import run_plugin_bytes
from pycni.spec import CNIError, IOFailure, TryAgainLater
from pycni.testing import unix_exchange_as_nobody, wait_for

IP = ipaddress.IPv4Address
SERVER_MAC = bytes.fromhex("020000000001")
CLIENT_MAC = bytes.fromhex("020000000002")
FAST = Timing(timeout=0.3, resend_max=0.5, resend_timeout=1.0)


class FakeServer:
    """A DHCP server in memory: answers DISCOVER and REQUEST, records what it got."""

    def __init__(self, *, lease_time: int = 60, routes: bytes | None = None,
                 router: str | None = "10.0.0.1") -> None:
        self.ip = IP("10.0.0.1")
        self.lease_time = lease_time
        self.routes = routes
        self.router = router
        self.next_host = 50
        self.leases: dict[bytes, IP] = {}
        self.got: list[tuple[Message, IP, IP, bytes]] = []
        self.alive = True
        self.nak = False

    def of_type(self, mtype: int) -> list[tuple[Message, IP, IP, bytes]]:
        return [g for g in self.got if g[0].message_type == mtype]

    def answer(self, msg: Message, src: IP, dst: IP, dst_mac: bytes) -> Message | None:
        self.got.append((msg, src, dst, dst_mac))
        if not self.alive:
            return None
        cid = msg.options.get(p.OPT_CLIENT_ID, b"")
        mtype = msg.message_type
        if mtype == p.RELEASE:
            self.leases.pop(cid, None)
            return None
        if mtype == p.DISCOVER:
            if cid not in self.leases:
                self.leases[cid] = IP(f"10.0.0.{self.next_host}")
                self.next_host += 1
            return self._reply(msg, p.OFFER, self.leases[cid])
        if mtype == p.REQUEST:
            wanted = msg.ciaddr if msg.ciaddr != p.ANY else IP(
                msg.options.get(p.OPT_REQUESTED_IP, bytes(4)))
            if self.nak:
                return self._reply(msg, p.NAK, p.ANY)
            self.leases[cid] = wanted
            return self._reply(msg, p.ACK, wanted)
        return None

    def _reply(self, msg: Message, mtype: int, yiaddr: IP) -> Message:
        opts = {p.OPT_MESSAGE_TYPE: bytes((mtype,)), p.OPT_SERVER_ID: self.ip.packed}
        if mtype != p.NAK:
            opts[p.OPT_LEASE_TIME] = p.encode_seconds(self.lease_time)
            opts[p.OPT_SUBNET_MASK] = IP("255.255.255.0").packed
            if self.router:
                opts[p.OPT_ROUTER] = IP(self.router).packed
            if self.routes is not None:
                opts[p.OPT_CLASSLESS_ROUTES] = self.routes
            opts[p.OPT_DNS] = IP("10.0.0.53").packed
            opts[p.OPT_DOMAIN_NAME] = b"pod.test"
        return Message(op=p.BOOTREPLY, xid=msg.xid, yiaddr=yiaddr, chaddr=msg.chaddr,
                       options=opts)


class FakeTransport:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.inbox: list[Message] = []

    def send(self, msg: Message, *, src: IP, dst: IP, dst_mac: bytes) -> None:
        # Through the wire format, as a real server would read it.
        reply = self.server.answer(Message.decode(msg.encode()), src, dst, dst_mac)
        if reply is not None:
            self.inbox.append(Message.decode(reply.encode()))

    def recv(self, timeout: float) -> tuple[Message, bytes] | None:
        if self.inbox:
            return self.inbox.pop(0), SERVER_MAC
        time.sleep(timeout)
        return None

    def close(self) -> None:
        pass


class FakeLink:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.gone = False
        self.downs = 0

    def open(self) -> tuple[FakeTransport, bytes]:
        if self.gone:
            raise LinkGone("interface 'eth0' not found")
        return FakeTransport(self.server), CLIENT_MAC

    def set_down(self) -> None:
        self.downs += 1


def _client(server: FakeServer, timing: Timing = FAST) -> tuple[DhcpClient, FakeLink]:
    link = FakeLink(server)
    return DhcpClient(link, "c1/lan/eth0", {p.OPT_PARAMETER_LIST: bytes((1, 3, 121))},
                      timing), link


def _keeper(server: FakeServer, netns: str = "/") -> tuple[LeaseKeeper, FakeLink]:
    client, link = _client(server)
    keeper = LeaseKeeper(Attachment("c1", "lan", "eth0", netns), client.acquire(), client)
    return keeper, link


# -- the exchanges -------------------------------------------------------------------------

def test_acquire_option_121_wins_over_router() -> None:
    routes = p.encode_classless_routes([(ipaddress.IPv4Network("10.200.0.0/16"),
                                         IP("10.0.0.2")),
                                        (ipaddress.IPv4Network("10.7.0.0/24"), p.ANY)])
    server = FakeServer(routes=routes)
    client, _ = _client(server)
    lease = client.acquire()
    assert str(lease.address) == "10.0.0.50/24"
    out = lease.result(priority=7).to_json("1.1.0")
    assert out["ips"] == [{"address": "10.0.0.50/24", "gateway": "10.0.0.1"}]
    assert out["routes"] == [{"dst": "10.200.0.0/16", "gw": "10.0.0.2", "priority": 7},
                             {"dst": "10.7.0.0/24", "priority": 7, "scope": 253}]
    assert out["dns"] == {"nameservers": ["10.0.0.53"], "domain": "pod.test"}
    discover, src, dst, dst_mac = server.of_type(p.DISCOVER)[0]
    assert (src, dst, dst_mac) == (p.ANY, p.BROADCAST, b"\xff" * 6)
    assert discover.options[p.OPT_CLIENT_ID] == b"\0c1/lan/eth0"
    assert discover.options[p.OPT_PARAMETER_LIST] == bytes((1, 3, 121))
    assert discover.chaddr == CLIENT_MAC
    request = server.of_type(p.REQUEST)[0][0]
    assert request.options[p.OPT_REQUESTED_IP] == IP("10.0.0.50").packed
    assert request.options[p.OPT_SERVER_ID] == server.ip.packed
    assert request.xid == discover.xid


def test_acquire_router_gives_default_route() -> None:
    lease = _client(FakeServer())[0].acquire()
    assert [r.to_json("1.1.0") for r in lease.routes()] == [{"dst": "0.0.0.0/0",
                                                             "gw": "10.0.0.1"}]


def test_acquire_gives_up_when_no_server_answers() -> None:
    server = FakeServer()
    server.alive = False
    with pytest.raises(TryAgainLater) as err:
        _client(server)[0].acquire()
    assert err.value.code == 11
    assert len(server.of_type(p.DISCOVER)) >= 1


def test_lease_times_follow_rfc_defaults_and_cap() -> None:
    ack = FakeServer(lease_time=100)._reply(Message(), p.ACK, IP("10.0.0.9"))
    from pycni.ipam.dhcp import Lease

    lease = Lease.from_ack(ack, SERVER_MAC, 1000.0)
    assert (lease.renew_at, lease.rebind_at, lease.expires_at) == (1050.0, 1087.5, 1100.0)
    capped = Lease.from_ack(ack, SERVER_MAC, 1000.0, max_lease_time=10)
    assert (capped.renew_at, capped.rebind_at, capped.expires_at) == (1005.0, 1008.75, 1010.0)
    ack.options[p.OPT_RENEWAL_TIME] = p.encode_seconds(20)
    ack.options[p.OPT_REBINDING_TIME] = p.encode_seconds(30)
    lease = Lease.from_ack(ack, SERVER_MAC, 1000.0)
    assert (lease.renew_at, lease.rebind_at) == (1020.0, 1030.0)
    del ack.options[p.OPT_SUBNET_MASK]
    with pytest.raises(CNIError, match="subnet-mask"):
        Lease.from_ack(ack, SERVER_MAC, 1000.0)


# -- the keeper ----------------------------------------------------------------------------

def test_renews_unicast_at_t1() -> None:
    server = FakeServer(lease_time=1)
    keeper, _ = _keeper(server)
    first = keeper.lease.expires_at
    keeper.start()
    try:
        assert wait_for(lambda: keeper.renewals >= 2, timeout=10)
    finally:
        keeper.stop(release=False)
    assert keeper.lease.expires_at > first
    renew, src, dst, dst_mac = server.of_type(p.REQUEST)[1]
    assert renew.ciaddr == IP("10.0.0.50")
    assert (src, dst, dst_mac) == (IP("10.0.0.50"), server.ip, SERVER_MAC)
    assert p.OPT_SERVER_ID not in renew.options
    assert p.OPT_REQUESTED_IP not in renew.options


def _until_expired(**server_state: bool) -> tuple[LeaseKeeper, FakeLink, FakeServer]:
    """Acquire a 1 s lease, change the server (``alive``/``nak``), run until it expires."""
    server = FakeServer(lease_time=1)
    keeper, link = _keeper(server)
    vars(server).update(server_state)
    keeper.start()
    try:
        assert wait_for(lambda: keeper.state is State.EXPIRED, timeout=10)
    finally:
        keeper.stop(release=True)
    assert link.downs == 1
    assert not server.of_type(p.RELEASE)  # nothing to release once expired
    return keeper, link, server


def test_server_vanishes_rebinds_then_expires_and_takes_link_down() -> None:
    keeper, _, server = _until_expired(alive=False)
    assert "ran out" in keeper.reason
    after = [g for g in server.got if g[0].message_type == p.REQUEST][1:]
    assert any(dst == server.ip for _, _, dst, _ in after)  # renewing: unicast
    assert any(dst == p.BROADCAST for _, _, dst, _ in after)  # rebinding: broadcast


def test_nak_on_renewal_expires_the_lease() -> None:
    keeper, _, _ = _until_expired(nak=True)
    assert "refused" in keeper.reason


def test_stop_with_release_sends_dhcprelease() -> None:
    server = FakeServer()
    keeper, _ = _keeper(server)
    keeper.start()
    keeper.stop(release=True)
    release, src, dst, dst_mac = server.of_type(p.RELEASE)[0]
    assert release.ciaddr == IP("10.0.0.50")
    assert release.options[p.OPT_SERVER_ID] == server.ip.packed
    assert release.options[p.OPT_CLIENT_ID] == b"\0c1/lan/eth0"
    assert (src, dst, dst_mac) == (IP("10.0.0.50"), server.ip, SERVER_MAC)
    assert not server.leases


def test_link_gone_forgets_the_lease() -> None:
    server = FakeServer(lease_time=1)
    keeper, link = _keeper(server)
    gone: list[LeaseKeeper] = []
    keeper._on_gone = gone.append
    link.gone = True
    keeper.start()
    assert wait_for(lambda: gone == [keeper], timeout=10)
    keeper.stop(release=True)
    assert link.downs == 0


# -- the daemon ----------------------------------------------------------------------------

@pytest.fixture
def pod(tmp_path: Path) -> str:
    """A path standing in for the pod's netns (the daemon only checks that it exists)."""
    path = tmp_path / "netns"
    path.touch()
    return str(path)


def _daemon(tmp_path: Path, server: FakeServer, timing: Timing = FAST) -> DhcpDaemon:
    opts = DaemonOptions(socket_path=str(tmp_path / "dhcp.sock"),
                         state_dir=str(tmp_path / "leases"), timing=timing)
    return DhcpDaemon(opts, link_factory=lambda _netns, _ifname: FakeLink(server))


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def daemon(tmp_path: Path, server: FakeServer) -> Iterator[DhcpDaemon]:
    d = _daemon(tmp_path, server)
    yield d
    d.close()


def _conf(**extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "lan", "type": "macvlan",
            "ipam": {"type": "dhcp", "priority": 5}, **extra}


def _req(command: str, netns: str, cid: str = "c1", **conf: Any) -> dict[str, Any]:
    return {"command": command, "containerID": cid, "netns": netns, "ifname": "eth0",
            "args": "", "config": _conf(**conf)}


def test_daemon_add_is_idempotent_and_del_releases(daemon: DhcpDaemon, server: FakeServer,
                                                   pod: str) -> None:
    first = daemon.handle(_req("ADD", pod))["result"]
    assert first["ips"][0]["address"] == "10.0.0.50/24"
    assert first["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "priority": 5}]
    assert daemon.handle(_req("ADD", pod))["result"] == first
    assert len(server.of_type(p.DISCOVER)) == 1
    assert daemon.handle(_req("CHECK", pod, prevResult=first)) == {}
    assert len(list(daemon.store.load())) == 1
    assert daemon.handle(_req("DEL", pod)) == {}
    assert len(server.of_type(p.RELEASE)) == 1
    assert daemon.handle(_req("DEL", pod)) == {}
    assert len(server.of_type(p.RELEASE)) == 1
    assert daemon.leases() == []
    assert list(daemon.store.load()) == []


def test_daemon_check_failures(daemon: DhcpDaemon, pod: str) -> None:
    with pytest.raises(CNIError) as err:
        daemon.handle(_req("CHECK", pod))
    assert err.value.code == 3
    daemon.handle(_req("ADD", pod))
    other = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.99/24"}]}
    with pytest.raises(CNIError, match="not in prevResult"):
        daemon.handle(_req("CHECK", pod, prevResult=other))


def test_daemon_expired_lease_fails_check_and_status(tmp_path: Path, pod: str) -> None:
    server = FakeServer(lease_time=1)
    d = _daemon(tmp_path, server)
    try:
        d.handle(_req("ADD", pod))
        assert d.handle(_req("STATUS", "")) == {}
        server.alive = False
        assert wait_for(lambda: d.leases()[0]["state"] == "expired", timeout=10)
        with pytest.raises(CNIError) as err:
            d.handle(_req("STATUS", ""))
        assert err.value.code == 51
        with pytest.raises(CNIError, match="expired") as err:
            d.handle(_req("CHECK", pod))
        assert err.value.code == 3
        # The record says expired, for a restarted daemon too.
        assert [r.state for r in d.store.load()] == [State.EXPIRED]
        # A new ADD of the same attachment starts over once a server is back.
        server.alive = True
        assert d.handle(_req("ADD", pod))["result"]["ips"][0]["address"] == "10.0.0.50/24"
        assert d.handle(_req("STATUS", "")) == {}
    finally:
        d.close()


def test_daemon_gc_releases_attachments_not_valid(daemon: DhcpDaemon, server: FakeServer,
                                                  pod: str) -> None:
    daemon.handle(_req("ADD", pod, cid="keep"))
    daemon.handle(_req("ADD", pod, cid="drop"))
    other = dict(_req("ADD", pod, cid="drop"))
    other["config"] = {**other["config"], "name": "other"}
    daemon.handle(other)
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert daemon.handle(_req("GC", "", **{"cni.dev/valid-attachments": valid})) == {}
    left = sorted((lease["network"], lease["containerID"]) for lease in daemon.leases())
    assert left == [("lan", "keep"), ("other", "drop")]
    assert len(server.of_type(p.RELEASE)) == 1


def test_daemon_gc_reads_the_legacy_attachments_key(daemon: DhcpDaemon, server: FakeServer,
                                                   pod: str) -> None:
    """GC stdin with only ``cni.dev/attachments`` (the spec's first spelling) keeps those."""
    daemon.handle(_req("ADD", pod, cid="keep"))
    daemon.handle(_req("ADD", pod, cid="drop"))
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert daemon.handle(_req("GC", "", **{"cni.dev/attachments": valid})) == {}
    assert [lease["containerID"] for lease in daemon.leases()] == ["keep"]
    assert len(server.of_type(p.RELEASE)) == 1


def test_daemon_gc_without_attachments_is_an_error(daemon: DhcpDaemon, server: FakeServer,
                                                    pod: str) -> None:
    """A GC that names no valid attachments releases nothing: "nothing is valid" is unsafe."""
    daemon.handle(_req("ADD", pod))
    with pytest.raises(CNIError, match=r"cni\.dev/valid-attachments") as err:
        daemon.handle(_req("GC", ""))
    assert err.value.code == 7
    assert len(daemon.leases()) == 1
    assert not server.of_type(p.RELEASE)


def test_daemon_restart_keeps_the_lease(tmp_path: Path, server: FakeServer, pod: str) -> None:
    d1 = _daemon(tmp_path, server)
    result = d1.handle(_req("ADD", pod))["result"]
    d1.close()
    assert not server.of_type(p.RELEASE)  # shutdown does not release
    d2 = _daemon(tmp_path, server)
    d2.start()
    try:
        assert [lease["address"] for lease in d2.leases()] == ["10.0.0.50/24"]
        assert d2.handle(_req("ADD", pod))["result"] == result
        d2.handle(_req("DEL", pod))
        assert len(server.of_type(p.RELEASE)) == 1
    finally:
        d2.close()


def test_restart_reboots_a_lease_that_ran_out(tmp_path: Path, server: FakeServer,
                                              pod: str) -> None:
    d1 = _daemon(tmp_path, server)
    d1.handle(_req("ADD", pod))
    d1.close()
    store = LeaseStore(tmp_path / "leases")
    [record] = store.load()
    record.lease.expires_at = record.lease.rebind_at = record.lease.renew_at = time.time() - 1
    store.save(record)
    d2 = _daemon(tmp_path, server)
    d2.start()
    try:
        assert wait_for(lambda: d2.leases()[0]["renewals"] == 1, timeout=10)
        reboot = server.of_type(p.REQUEST)[-1][0]
        assert reboot.ciaddr == p.ANY
        assert reboot.options[p.OPT_REQUESTED_IP] == IP("10.0.0.50").packed
        assert d2.leases()[0]["state"] == "bound"
    finally:
        d2.close()


def test_restart_drops_leases_of_vanished_pods(tmp_path: Path, server: FakeServer,
                                               pod: str) -> None:
    d1 = _daemon(tmp_path, server)
    d1.handle(_req("ADD", pod))
    d1.close()
    Path(pod).unlink()
    d2 = _daemon(tmp_path, server)
    d2.start()
    try:
        assert d2.leases() == []
        assert list(d2.store.load()) == []
    finally:
        d2.close()


def test_daemon_socket_is_root_only_and_exclusive(tmp_path: Path, daemon: DhcpDaemon,
                                                  server: FakeServer, pod: str) -> None:
    daemon.start()
    sock = tmp_path / "dhcp.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    reply = call_daemon(str(sock), _req("ADD", pod))
    assert reply["result"]["ips"][0]["address"] == "10.0.0.50/24"
    with pytest.raises(CNIError) as err:
        call_daemon(str(sock), {"command": "ADD", "config": {"name": "x"}})
    assert err.value.code == 7
    second = _daemon(tmp_path, server)
    try:
        with pytest.raises(IOFailure, match="another DHCP daemon"):
            second.start()
    finally:
        second.close()  # its lease keepers would live on and draw from `random` later
    daemon.close()
    assert not sock.exists()




def test_daemon_refuses_non_root_peers(server: FakeServer, pod: str) -> None:
    """Even through a socket file others may open, only root is served (SO_PEERCRED)."""
    run_dir = Path(tempfile.mkdtemp(prefix="pyt", dir="/tmp"))
    run_dir.chmod(0o755)  # nobody must reach the socket for the kernel check to matter
    opts = DaemonOptions(socket_path=str(run_dir / "dhcp.sock"),
                         state_dir=str(run_dir / "leases"), timing=FAST)
    d = DhcpDaemon(opts, link_factory=lambda _netns, _ifname: FakeLink(server))
    try:
        d.start()
        (run_dir / "dhcp.sock").chmod(0o666)
        answer = unix_exchange_as_nobody(str(run_dir / "dhcp.sock"),
                                         json.dumps(_req("ADD", pod)).encode())
        err = json.loads(answer)["error"]
        assert err["code"] == 5
        assert "only root may use this socket" in err["msg"]
        assert "uid 65534" in err["msg"]
        assert d.leases() == []
        assert not server.of_type(p.DISCOVER)
    finally:
        d.close()
        shutil.rmtree(run_dir)


def _plugin(command: str, sock: str, netns: str = "/run/netns/none") -> tuple[int, Any]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
    conf = {"cniVersion": "1.1.0", "name": "lan", "type": "dhcp",
            "ipam": {"type": "dhcp", "daemonSocketPath": sock}}
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    status, out = run_plugin_bytes(Dhcp(), env, json.dumps(conf).encode())
    return status, json.loads(out) if out else None


def test_plugin_without_daemon(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    assert _plugin("STATUS", sock)[1]["code"] == 50
    assert _plugin("ADD", sock)[1]["code"] == 11
    assert _plugin("CHECK", sock)[1]["code"] == 11
    assert _plugin("DEL", sock) == (0, None)  # nothing can be released; DEL must not wedge


def test_plugin_through_daemon(tmp_path: Path, daemon: DhcpDaemon, pod: str) -> None:
    daemon.start()
    sock = str(tmp_path / "dhcp.sock")
    status, out = _plugin("ADD", sock, pod)
    assert status == 0
    assert out["ips"] == [{"address": "10.0.0.50/24", "gateway": "10.0.0.1"}]
    assert _plugin("CHECK", sock, pod) == (0, None)
    assert _plugin("STATUS", sock) == (0, None)
    assert _plugin("GC", sock) == (0, None)
    assert daemon.leases() == []
    assert _plugin("CHECK", sock, pod)[1]["code"] == 3
    assert Path(pod).exists()


def test_lease_store_keeps_a_100_kb_container_id(tmp_path: Path, server: FakeServer,
                                                pod: str) -> None:
    long_id = "c" + "0123456789abcdef" * 6400
    d1 = _daemon(tmp_path, server)
    try:
        d1.handle(_req("ADD", pod, cid=long_id))
    finally:
        d1.close()
    [record] = LeaseStore(tmp_path / "leases").load()
    assert record.attachment.container_id == long_id
    d2 = _daemon(tmp_path, server)
    d2.start()
    try:
        assert [lease["containerID"] for lease in d2.leases()] == [long_id]
        d2.handle(_req("DEL", pod, cid=long_id))
        assert LeaseStore(tmp_path / "leases").load() == []
    finally:
        d2.close()
