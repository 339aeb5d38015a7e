"""host-local where it needs privileges: a read-only dataDir, and a run in a host namespace.

The read-only case mounts a read-only tmpfs inside a private mount namespace (``unshare``),
so the machine's mounts are never touched; root ignores permission bits, so a chmod would
not do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.spec import ErrorCode
from pycni.testing import call_plugin, cni_env

pytestmark = pytest.mark.netns

_IN_RO_MOUNT = """
import json, subprocess, sys
from pycni.plugins.ipam.host_local import HostLocal
from pycni.skel import run_plugin_bytes

ro, conf = sys.argv[1], sys.argv[2].encode()
subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "pytro", ro], check=True)
out = {}
for command in ("STATUS", "ADD"):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    status, stdout = run_plugin_bytes(HostLocal(), env, conf)
    out[command] = [status, json.loads(stdout)]
print(json.dumps(out))
"""


def test_read_only_data_dir(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    conf = {"cniVersion": "1.1.0", "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(ro),
                     "ranges": [[{"subnet": "10.1.0.0/24"}]]}}
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c",
         _IN_RO_MOUNT, str(ro), json.dumps(conf)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    status, err = out["STATUS"]
    assert (status, err["code"]) == (1, ErrorCode.PLUGIN_NOT_AVAILABLE)
    assert "read-only" in err["details"]
    status, err = out["ADD"]
    assert (status, err["code"]) == (1, ErrorCode.IO_FAILURE)
    assert "net1" in err["msg"]


def test_runs_in_a_host_namespace(host_ns: str, tmp_path: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(tmp_path),
                     "ranges": [[{"subnet": "10.1.0.0/24"}]]}}
    env = cni_env("ADD", container_id="c1", netns="/var/run/netns/none")
    result = call_plugin(host_ns, "host-local", env, conf).ok()
    assert result["ips"] == [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}]
    assert call_plugin(host_ns, "host-local", {**env, "CNI_COMMAND": "DEL"}, conf).status == 0
    assert sorted(p.name for p in (tmp_path / "net1").iterdir()) == ["last_reserved_ip.0", "lock"]
