"""host-local's index of a store notices what the Go plugin wrote between two pycni calls.

pycni keeps an index of each store (in the agent's memory; on disk for big stores, for
standalone calls) so an ADD in a nearly full pool reads only the files it must. The files
stay the truth: whatever Go's host-local reserves or releases between two pycni calls must
show in the next call's duplicate check, its DEL and its choice of a free address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from test_ipam_differential import go as go_plugin
from test_ipam_differential import py

from pycni.testing import cni_env

pytestmark = pytest.mark.differential

#: More leases than the size from which pycni also keeps the index on disk.
BIG = 600


def conf(data_dir: Path, subnet: str = "10.7.0.0/24") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "idxnet", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir), "subnet": subnet}}


def _env(command: str, cid: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env(command, container_id=cid, netns="/var/run/netns/none", ifname="eth0"))
    return env


#: Go's host-local, a fresh process each call.
go = partial(go_plugin, "host-local")
#: In this (long-lived) process, as the agent runs it: the index stays in memory.
agent = partial(py, "host-local")


def standalone(command: str, config: dict[str, Any], cid: str) -> tuple[int, Any]:
    """A fresh process each call: only the on-disk index carries over."""
    code = "from pycni.plugins.ipam.host_local import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(config).encode(),
                          env=_env(command, cid), capture_output=True, timeout=60,
                          check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def ip_of(out: Any) -> str:
    return str(out["ips"][0]["address"]).split("/", 1)[0]


def fill(data_dir: Path, count: int) -> None:
    """``count`` leases of other containers in 10.7.0.0/16, as Go writes them."""
    d = data_dir / "idxnet"
    d.mkdir(parents=True)
    for n in range(2, count + 2):
        (d / f"10.7.{n >> 8}.{n & 255}").write_bytes(f"other{n}\r\neth0".encode())


def test_go_writes_between_two_agent_calls(tmp_path: Path) -> None:
    c = conf(tmp_path)
    status, out = agent("ADD", c, "a")
    assert status == 0, out
    first = ip_of(out)
    # Go releases a's address behind the index's back: a may ADD again.
    assert go("DEL", c, "a")[0] == 0
    status, out = agent("ADD", c, "a")
    assert status == 0, out
    # Go reserves for b: the index must see b's lease (duplicate) and skip its address.
    status, go_out = go("ADD", c, "b")
    assert status == 0, go_out
    status, out = agent("ADD", c, "b")
    assert status != 0, out
    assert "duplicate" in out["msg"], out
    status, out = agent("ADD", c, "c")
    assert status == 0, out
    assert ip_of(out) not in (ip_of(go_out), first)
    # And a DEL through pycni releases what Go reserved.
    assert agent("DEL", c, "b")[0] == 0
    assert not (tmp_path / "idxnet" / ip_of(go_out)).exists()


@pytest.mark.parametrize("call", [agent, standalone], ids=["agent", "standalone"])
def test_go_writes_between_two_calls_on_a_big_store(tmp_path: Path, call: Any) -> None:
    c = conf(tmp_path, "10.7.0.0/16")
    fill(tmp_path, BIG)
    status, out = call("ADD", c, "a")
    assert status == 0, out
    assert call("ADD", c, "a")[0] != 0  # the index knows a's lease
    status, go_out = go("ADD", c, "b")
    assert status == 0, go_out
    status, out = call("ADD", c, "b")
    assert status != 0, out
    assert "duplicate" in out["msg"], out
    assert go("DEL", c, "a")[0] == 0
    status, out = call("ADD", c, "a")
    assert status == 0, out
    assert call("DEL", c, "b")[0] == 0
    assert not (tmp_path / "idxnet" / ip_of(go_out)).exists()


def test_a_damaged_index_file_is_ignored(tmp_path: Path) -> None:
    c = conf(tmp_path, "10.7.0.0/16")
    fill(tmp_path, BIG)
    assert standalone("ADD", c, "a")[0] == 0
    index = next((tmp_path / ".pycni-index").iterdir())
    index.write_bytes(index.read_bytes()[:-7] + b"garbage")
    assert standalone("ADD", c, "a")[0] != 0  # still a duplicate: the files were read
    assert standalone("DEL", c, "a")[0] == 0
    assert standalone("ADD", c, "a")[0] == 0
