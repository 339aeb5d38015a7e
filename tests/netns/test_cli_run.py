"""The pycni command in a sandbox: run inside the test host namespace with the Go plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.host import list_netns, netns_path
from pycni.testing import ip_json, ns_run, unique_name

pytestmark = [pytest.mark.netns, pytest.mark.integration]


def _pycni(host_ns: str, tmp_path: Path, *argv: str, cni_path: str, **env: str
           ) -> subprocess.CompletedProcess[str]:
    """``pycni ARGV`` with ``host_ns`` as the node's namespace."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": cni_path,
                "NETCONFPATH": str(tmp_path / "net.d"),
                "PYCNI_CACHE_DIR": str(tmp_path / "cache"), **env}
    return subprocess.run(["nsenter", f"--net={host_ns}", "--", sys.executable, "-m",
                           "pycni.cli", *argv], capture_output=True, text=True, env=full_env,
                          timeout=120, check=False)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-pyt.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "pytnet", "plugins": [
            {"type": "bridge", "bridge": unique_name("br"), "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                      "ranges": [[{"subnet": "10.124.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    return conf


def test_run_shows_loopback_and_the_network_address(host_ns: str, tmp_path: Path,
                                                    conf_dir: Path, go_plugins: str) -> None:
    name = unique_name("run")
    out = _pycni(host_ns, tmp_path, "run", "--netns-name", name, "--", "ip", "addr",
                 cni_path=go_plugins)
    assert out.returncode == 0, out.stderr
    assert "1: lo: <LOOPBACK,UP,LOWER_UP>" in out.stdout
    assert "inet 127.0.0.1/8" in out.stdout
    assert "inet 10.124.0.2/24" in out.stdout
    assert "eth0@" in out.stdout
    # Everything is torn down: namespace, lease, cache entries.
    assert name not in list_netns()
    leases = [p.name for p in (tmp_path / "ipam" / "pytnet").iterdir() if p.name[0].isdigit()]
    assert leases == []
    assert list((tmp_path / "cache" / "results").iterdir()) == []


def test_run_exits_with_the_command_status(host_ns: str, tmp_path: Path, conf_dir: Path,
                                           go_plugins: str) -> None:
    out = _pycni(host_ns, tmp_path, "run", "--netns-name", unique_name("run"), "--",
                 "sh", "-c", "exit 7", cni_path=go_plugins)
    assert out.returncode == 7
    missing = _pycni(host_ns, tmp_path, "run", "--netns-name", unique_name("run"), "--",
                     "pyt-no-such-command", cni_path=go_plugins)
    assert missing.returncode == 127
    assert "command not found" in missing.stderr


def test_run_fails_cleanly_when_setup_fails(host_ns: str, tmp_path: Path, conf_dir: Path,
                                           go_plugins: str) -> None:
    (conf_dir / "20-broken.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "pytbroken",
         "plugins": [{"type": "loopback"}, {"type": "pyt-no-such-plugin"}]}))
    name = unique_name("run")
    out = _pycni(host_ns, tmp_path, "run", "--net", "pytbroken", "--netns-name", name, "--",
                 "true", cni_path=go_plugins)
    assert out.returncode != 0
    assert "failed to find plugin" in out.stderr
    assert name not in list_netns()


def test_cnitool_style_add_check_del(host_ns: str, netns: str, tmp_path: Path,
                                    conf_dir: Path, go_plugins: str) -> None:
    caps = json.dumps({"portMappings": [{"hostPort": 18081, "containerPort": 80,
                                         "protocol": "tcp"}]})
    add = _pycni(host_ns, tmp_path, "add", "pytnet", netns, cni_path=go_plugins,
                 CAP_ARGS=caps, CNI_ARGS="IgnoreUnknown=1")
    assert add.returncode == 0, add.stderr
    result = json.loads(add.stdout)
    assert result["ips"][0]["address"] == "10.124.0.2/24"
    addrs = ip_json(netns, "addr", "show", "eth0")[0]["addr_info"]
    assert any(a["local"] == "10.124.0.2" for a in addrs)
    # Go portmap 1.1.1's CHECK fails whenever it has port mappings (it looks for the IPv4
    # rules in the IPv6 table), so CHECK runs without CAP_ARGS.
    check = _pycni(host_ns, tmp_path, "check", "pytnet", netns, "--json", cni_path=go_plugins)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["ok"] is True
    status = _pycni(host_ns, tmp_path, "status", "pytnet", "--json", cni_path=go_plugins)
    assert json.loads(status.stdout)["available"] is True
    delete = _pycni(host_ns, tmp_path, "del", "pytnet", netns, cni_path=go_plugins,
                    CAP_ARGS=caps)
    assert delete.returncode == 0, delete.stderr
    assert list((tmp_path / "cache" / "results").iterdir()) == []


def test_gc_removes_attachments_of_gone_namespaces(host_ns: str, netns: str, tmp_path: Path,
                                                   conf_dir: Path, go_plugins: str) -> None:
    assert _pycni(host_ns, tmp_path, "add", "pytnet", netns, cni_path=go_plugins
                  ).returncode == 0
    gc = _pycni(host_ns, tmp_path, "gc", "pytnet", cni_path=go_plugins)
    assert gc.returncode == 0, gc.stderr
    assert list((tmp_path / "cache" / "results").iterdir()) == []
    leases = [p.name for p in (tmp_path / "ipam" / "pytnet").iterdir() if p.name[0].isdigit()]
    assert leases == []


def test_netns_commands(tmp_path: Path) -> None:
    name = unique_name("cli")
    try:
        add = subprocess.run([sys.executable, "-m", "pycni.cli", "netns", "add", name],
                             capture_output=True, text=True, check=False)
        assert add.returncode == 0, add.stderr
        assert add.stdout.strip() == netns_path(name)
        listed = subprocess.run([sys.executable, "-m", "pycni.cli", "netns", "list"],
                                capture_output=True, text=True, check=True)
        assert name in listed.stdout.split()
        again = subprocess.run([sys.executable, "-m", "pycni.cli", "netns", "add", name],
                               capture_output=True, text=True, check=False)
        assert again.returncode == 1
        assert "already exists" in again.stderr
    finally:
        subprocess.run([sys.executable, "-m", "pycni.cli", "netns", "del", name], check=True)
    assert name not in list_netns()


def test_demo_two_pods_ping_on_the_builtin_network(host_ns: str, tmp_path: Path) -> None:
    # No config and no plugin executables: the built-in network runs pycni's own plugins.
    bridge = unique_name("br")
    # A new namespace copies the root namespace's ip_forward (MACHINE.md): compare, not assume.
    forward = ns_run(host_ns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    out = _pycni(host_ns, tmp_path, "demo", "--bridge", bridge, "--subnet",
                 "10.125.0.0/24", "--data-dir", str(tmp_path / "ipam"), "--prefix",
                 unique_name("dm"), "--count", "1", cni_path=str(tmp_path / "empty"))
    assert out.returncode == 0, out.stderr
    assert "10.125.0.2/24" in out.stdout
    assert "10.125.0.3/24" in out.stdout
    assert "1 received" in out.stdout
    assert "torn down" in out.stdout
    assert list((tmp_path / "cache" / "results").iterdir()) == []
    # What the network's first ADD left on the node is gone too: the demo brought it.
    assert [link["ifname"] for link in ip_json(host_ns, "link", "show")] == ["lo"]
    assert ns_run(host_ns, "nft", "list", "ruleset").stdout.strip() == ""
    assert ns_run(host_ns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == forward
    assert not (tmp_path / "ipam" / "pycni").exists()
