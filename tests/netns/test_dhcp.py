"""dhcp IPAM against a real DHCP server: dnsmasq in its own namespace, the pod on a veth.

The server namespace holds ``srv0`` (10.99.0.1/24) and dnsmasq; its veth peer is ``eth0``
in the pod namespace, as a main plugin would have left it. The daemon runs in-process with
its socket in a temporary directory; ``--max-lease-time`` style capping (Timing) makes the
client renew every couple of seconds although dnsmasq's shortest lease is two minutes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.daemon.dhcp import DaemonOptions, DhcpDaemon
from pycni.ipam.dhcp import Timing
from pycni.testing import (
    PluginCall,
    call_plugin,
    cni_env,
    ip_json,
    ns_run,
    temp_netns,
    wait_for,
)

pytestmark = pytest.mark.netns

if shutil.which("dnsmasq") is None:
    pytest.skip("dnsmasq is not installed (dnsmasq-base)", allow_module_level=True)

TIMING = Timing(timeout=1.0, resend_max=1.0, resend_timeout=6.0, max_lease_time=4.0)


@dataclass
class Lab:
    """A DHCP server namespace, a pod namespace wired to it, and a daemon."""

    server_ns: str
    pod_ns: str
    host_ns: str
    workdir: Path
    daemon: DhcpDaemon | None = None
    dnsmasq: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.workdir / "dhcp.sock")

    @property
    def leasefile(self) -> Path:
        return self.workdir / "dnsmasq.leases"

    def start_dnsmasq(self, *options: str) -> None:
        argv = ["nsenter", f"--net={self.server_ns}", "--", "dnsmasq", "--keep-in-foreground",
                "--conf-file=/dev/null", "--port=0", "--user=root", "--no-ping",
                "--interface=srv0", "--bind-interfaces", "--dhcp-authoritative",
                "--dhcp-range=10.99.0.50,10.99.0.150,255.255.255.0,2m",
                f"--dhcp-leasefile={self.leasefile}", f"--pid-file={self.workdir}/dnsmasq.pid",
                "--log-dhcp", f"--log-facility={self.workdir}/dnsmasq.log", *options]
        errors = self.workdir / "dnsmasq.err"
        with errors.open("wb") as err:
            self.dnsmasq = proc = subprocess.Popen(argv, stderr=err)
        assert wait_for(lambda: "started" in self.log() or proc.poll() is not None,
                        timeout=10), "dnsmasq did not start"
        assert proc.poll() is None, errors.read_text()

    def stop_dnsmasq(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.send_signal(signal.SIGTERM)
            self.dnsmasq.wait(timeout=10)

    def log(self) -> str:
        path = self.workdir / "dnsmasq.log"
        return path.read_text() if path.exists() else ""

    def leases(self) -> dict[str, list[str]]:
        """dnsmasq's lease file: address -> [expiry, mac, address, hostname, client-id]."""
        # dnsmasq rewrites the file in place (truncate, then write): a read can land in
        # between. Take the text once it is whole (ends with a newline), or empty for 0.5 s.
        text = ""
        for _ in range(10):
            text = self.leasefile.read_text() if self.leasefile.exists() else ""
            if text.endswith("\n"):
                break
            time.sleep(0.05)
        return {f[2]: f for f in (line.split() for line in text.splitlines()) if len(f) >= 5}

    def start_daemon(self, timing: Timing = TIMING) -> DhcpDaemon:
        self.daemon = DhcpDaemon(DaemonOptions(socket_path=self.socket,
                                               state_dir=str(self.workdir / "state"),
                                               timing=timing))
        self.daemon.start()
        return self.daemon

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None

    def conf(self, **ipam: Any) -> dict[str, Any]:
        return {"cniVersion": "1.1.0", "name": "lan", "type": "macvlan",
                "ipam": {"type": "dhcp", "daemonSocketPath": self.socket, **ipam}}

    def call(self, command: str, cid: str = "c1", netns: str | None = None,
             conf: dict[str, Any] | None = None) -> PluginCall:
        env = cni_env(command, container_id=cid if command not in ("STATUS", "GC") else "",
                      netns=self.pod_ns if netns is None else netns)
        return call_plugin(self.host_ns, "dhcp", env, conf or self.conf())

    def pod_link(self) -> dict[str, Any]:
        return ip_json(self.pod_ns, "link", "show", "eth0")[0]  # type: ignore[no-any-return]


@pytest.fixture
def lab(host_ns: str, netns: str) -> Iterator[Lab]:
    # A short directory: a unix socket path must fit in 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="pytdhcp"))
    with temp_netns("s") as server_ns:
        lab = Lab(server_ns, netns, host_ns, workdir)
        try:
            ns_run(server_ns, "ip", "link", "add", "srv0", "type", "veth", "peer", "name",
                   "eth0", "netns", Path(netns).name, check=True)
            ns_run(server_ns, "ip", "addr", "add", "10.99.0.1/24", "dev", "srv0", check=True)
            ns_run(server_ns, "ip", "link", "set", "srv0", "up", check=True)
            yield lab
        finally:
            lab.stop_daemon()
            lab.stop_dnsmasq()
            shutil.rmtree(workdir, ignore_errors=True)


ROUTER = "--dhcp-option=option:router,10.99.0.1"
CLASSLESS = ("--dhcp-option=option:classless-static-route,10.200.0.0/16,10.99.0.2,"
             "0.0.0.0/0,10.99.0.1")


def _address(out: dict[str, Any]) -> str:
    return str(out["ips"][0]["address"])


def test_acquire_with_classless_routes(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER, CLASSLESS, "--dhcp-option=option:dns-server,10.99.0.53")
    lab.start_daemon()
    out = lab.call("ADD").ok()
    ip = _address(out).split("/")[0]
    assert _address(out).endswith("/24")
    lease = lab.leases()[ip]
    assert lease[1] == lab.pod_link()["address"]
    # dnsmasq shows the client ID: type 0, then containerID/network/ifname.
    assert lease[4] == "00:" + ":".join(f"{b:02x}" for b in b"c1/lan/eth0")
    assert out["ips"][0]["gateway"] == "10.99.0.1"
    # Option 121 is present, so option 3 adds no route of its own (RFC 3442).
    assert out["routes"] == [{"dst": "10.200.0.0/16", "gw": "10.99.0.2"},
                             {"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
    assert out["dns"] == {"nameservers": ["10.99.0.53"]}
    # ADD again: the same lease, no second DISCOVER.
    assert lab.call("ADD").ok() == out
    assert lab.log().count("DHCPDISCOVER") == 1
    assert lab.call("CHECK", conf={**lab.conf(), "prevResult": out}).status == 0


def test_router_option_gives_default_route_with_priority(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    lab.start_daemon()
    out = lab.call("ADD", conf=lab.conf(priority=20)).ok()
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1", "priority": 20}]
    # A missing namespace or interface is code 3, and no lease is kept for it.
    gone = lab.call("ADD", cid="c2", netns="/run/netns/pyt-gone")
    assert (gone.status, gone.json["code"]) == (1, 3)
    no_link = lab.call("ADD", cid="c3", conf={**lab.conf(), "name": "other"}, netns=lab.host_ns)
    assert (no_link.status, no_link.json["code"]) == (1, 3)
    assert lab.daemon is not None
    assert len(lab.daemon.leases()) == 1


def test_provide_and_request_options(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    lab.start_daemon()
    conf = lab.conf(provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"}],
                    request=[{"skipDefault": True, "option": "subnet-mask"}])
    env = cni_env("ADD", container_id="c1", netns=lab.pod_ns, args="K8S_POD_NAME=web-1")
    out = call_plugin(lab.host_ns, "dhcp", env, conf).ok()
    assert lab.leases()[_address(out).split("/")[0]][3] == "web-1"
    # Only the mask was asked for, and dnsmasq sends only what is asked for.
    assert "routes" not in out


def test_renews_and_releases(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    daemon = lab.start_daemon()
    ip = _address(lab.call("ADD").ok()).split("/")[0]
    first_expiry = int(lab.leases()[ip][0])
    # The daemon trusts the lease for 4 s, so it renews (unicast) every 2 s.
    assert wait_for(lambda: daemon.leases()[0]["renewals"] >= 1, timeout=15)
    assert wait_for(lambda: int(lab.leases()[ip][0]) > first_expiry, timeout=5)
    assert "DHCPREQUEST(srv0) " + ip in lab.log()
    assert lab.call("DEL").status == 0
    assert wait_for(lambda: ip not in lab.leases(), timeout=5)
    assert "DHCPRELEASE(srv0) " + ip in lab.log()
    # DEL is idempotent, also once the pod's namespace is gone.
    assert lab.call("DEL").status == 0
    assert lab.call("DEL", netns="/run/netns/pyt-gone").status == 0


def test_server_vanishes(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    daemon = lab.start_daemon()
    lab.call("ADD").ok()
    assert lab.call("STATUS").status == 0
    lab.stop_dnsmasq()
    # Renewal and rebinding fail, the 4 s lease runs out, the pod's interface goes down.
    assert wait_for(lambda: daemon.leases()[0]["state"] == "expired", timeout=20)
    assert "UP" not in lab.pod_link()["flags"]
    status = lab.call("STATUS")
    assert (status.status, status.json["code"]) == (1, 51)
    check = lab.call("CHECK")
    assert (check.status, check.json["code"]) == (1, 3)
    assert "expired" in check.json["msg"]
    assert lab.call("DEL").status == 0
    assert lab.call("STATUS").status == 0


def test_daemon_restart_keeps_and_releases_the_lease(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    lab.start_daemon()
    out = lab.call("ADD").ok()
    ip = _address(out).split("/")[0]
    lab.stop_daemon()
    assert ip in lab.leases()  # stopping the daemon releases nothing
    daemon = lab.start_daemon()
    assert [lease["address"] for lease in daemon.leases()] == [_address(out)]
    assert lab.call("ADD").ok() == out
    assert wait_for(lambda: daemon.leases()[0]["renewals"] >= 1, timeout=15)
    assert lab.call("DEL").status == 0
    assert wait_for(lambda: ip not in lab.leases(), timeout=5)


def test_gc_releases_stale_attachments(lab: Lab) -> None:
    # Two attachments on one interface: different client IDs, so different leases.
    lab.start_dnsmasq(ROUTER)
    daemon = lab.start_daemon()
    keep = _address(lab.call("ADD", cid="keep").ok()).split("/")[0]
    drop = _address(lab.call("ADD", cid="drop").ok()).split("/")[0]
    assert keep != drop
    gc_conf = {**lab.conf(), "cni.dev/valid-attachments": [{"containerID": "keep",
                                                           "ifname": "eth0"}]}
    assert lab.call("GC", conf=gc_conf).status == 0
    assert [lease["containerID"] for lease in daemon.leases()] == ["keep"]
    assert wait_for(lambda: drop not in lab.leases(), timeout=5)
    assert keep in lab.leases()


def test_no_daemon(lab: Lab) -> None:
    status = lab.call("STATUS")
    assert (status.status, status.json["code"]) == (1, 50)
    add = lab.call("ADD")
    assert (add.status, add.json["code"]) == (1, 11)


def test_cli_daemon(lab: Lab) -> None:
    lab.start_dnsmasq(ROUTER)
    proc = subprocess.Popen([sys.executable, "-m", "pycni.cli", "dhcp", "daemon",
                             "--socket-path", lab.socket, "--state-dir",
                             str(lab.workdir / "state"), "--pidfile",
                             str(lab.workdir / "daemon.pid"), "--timeout", "1",
                             "--resend-timeout", "6"], stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: Path(lab.socket).exists() or proc.poll() is not None,
                        timeout=15)
        assert Path(lab.socket).stat().st_mode & 0o777 == 0o600
        assert (lab.workdir / "daemon.pid").read_text() == str(proc.pid)
        out = lab.call("ADD").ok()
        assert _address(out).split("/")[0] in lab.leases()
        assert lab.call("DEL").status == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert not Path(lab.socket).exists()
