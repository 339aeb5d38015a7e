"""Many host-local processes, Go's and ours, allocating on one network at the same time.

Every call is a separate process, as a runtime would start them; the network directory's
``lock`` file is the only thing that keeps them apart.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.testing import GO_PLUGIN_DIR, cni_env

pytestmark = pytest.mark.integration

ADDS = 200


@pytest.fixture
def runner(tmp_path: Path) -> str:
    """A pycni host-local executable (what ``pycni install`` writes, minus the install)."""
    path = tmp_path / "bin" / "host-local"
    path.parent.mkdir()
    # The venv's interpreter path, not its realpath: the base interpreter does not see the
    # venv's packages (MACHINE.md), and pycni is installed only there.
    path.write_text(f"#!{sys.executable}\n# pycni-plugin: host-local\n"
                    "from pycni.invoke import plugin_main\n\nplugin_main('host-local')\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def go_host_local() -> str:
    exe = str(Path(GO_PLUGIN_DIR) / "host-local")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{exe} is not installed (containernetworking-plugins)")
    return exe


def _caller(conf: dict[str, Any]) -> Callable[[str, str, str], tuple[int, Any]]:
    stdin = json.dumps(conf).encode()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}

    def run(exe: str, command: str, cid: str) -> tuple[int, Any]:
        env = {**base, **cni_env(command, container_id=cid, netns="/var/run/netns/none")}
        proc = subprocess.run([exe], input=stdin, env=env, capture_output=True, timeout=120,
                              check=False)
        out = json.loads(proc.stdout) if proc.stdout.strip() else proc.stderr.decode()
        return proc.returncode, out

    return run


def test_concurrent_adds_from_go_and_pycni(tmp_path: Path, runner: str,
                                          go_host_local: str) -> None:
    conf = {"cniVersion": "1.0.0", "name": "busy", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(tmp_path / "state"),
                     "ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.1.0/25"}],
                                [{"subnet": "fd00:1::/64"}]]}}
    run = _caller(conf)
    exes = [runner if i % 2 else go_host_local for i in range(ADDS)]
    cids = [f"{'py' if i % 2 else 'go'}-{i}" for i in range(ADDS)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda i: run(exes[i], "ADD", cids[i]), range(ADDS)))
    failed = [(cids[i], r) for i, r in enumerate(results) if r[0] != 0]
    assert not failed, failed[:3]

    addrs = [ip["address"].split("/")[0] for _, res in results for ip in res["ips"]]
    assert len(addrs) == 2 * ADDS
    assert len(set(addrs)) == len(addrs), "an address was handed out twice"
    d = tmp_path / "state" / "busy"
    for cid, (_, res) in zip(cids, results, strict=True):
        for ip in res["ips"]:
            assert (d / ip["address"].split("/")[0]).read_bytes() == f"{cid}\r\neth0".encode()

    # Tear down crosswise: Go releases pycni's attachments and pycni releases Go's.
    with ThreadPoolExecutor(max_workers=32) as pool:
        other = {runner: go_host_local, go_host_local: runner}
        dels = list(pool.map(lambda i: run(other[exes[i]], "DEL", cids[i]), range(ADDS)))
    assert all(status == 0 for status, _ in dels), [r for r in dels if r[0]][:3]
    assert sorted(p.name for p in d.iterdir()) == ["last_reserved_ip.0", "last_reserved_ip.1",
                                                   "lock"]
