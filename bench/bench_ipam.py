"""host-local in a nearly full /16: ADD and DEL latency, pycni in-process against Go.

Run: ``python3 bench/bench_ipam.py [--free N] [--rounds R]``. Fills 10.1.0.0/16 with
reservation files (leaving N addresses free, scattered), then times R ADD+DEL pairs through
pycni in-process and through /usr/lib/cni/host-local. An ADD reads every reservation once
(the duplicate-allocation check, as upstream) and one ``listdir``; the free-address search
is in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from pycni.plugins.ipam.host_local import HostLocal
from pycni.skel import run_plugin_bytes

GO = "/usr/lib/cni/host-local"


def fill(d: Path, free: int) -> None:
    d.mkdir(parents=True)
    hosts = [f"10.1.{n >> 8}.{n & 255}" for n in range(2, 65534)]
    keep_free = set(random.Random(1).sample(hosts, free))  # noqa: S311 - a fixed spread, not a secret
    for i, ip in enumerate(hosts):
        if ip not in keep_free:
            (d / ip).write_bytes(f"{i:064x}\r\neth0".encode())


def env(command: str, cid: str) -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}


def ours(command: str, cid: str, stdin: bytes) -> None:
    status, out = run_plugin_bytes(HostLocal(), env(command, cid), stdin)
    if status:
        raise SystemExit(out.decode())


def go(command: str, cid: str, stdin: bytes) -> None:
    subprocess.run([GO], input=stdin, env={**os.environ, **env(command, cid)},
                   capture_output=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--free", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp) / "full", opts.free)
        stdin = json.dumps({"cniVersion": "1.0.0", "name": "full", "type": "bridge",
                            "ipam": {"type": "host-local", "dataDir": tmp,
                                     "subnet": "10.1.0.0/16"}}).encode()
        impls = [("pycni (in-process)", ours)]
        if os.access(GO, os.X_OK):
            impls.append(("go (exec)", go))
        for name, call in impls:
            add = dele = 0.0
            for i in range(opts.rounds):
                t0 = time.perf_counter()
                call("ADD", f"bench{i}", stdin)
                t1 = time.perf_counter()
                call("DEL", f"bench{i}", stdin)
                add += t1 - t0
                dele += time.perf_counter() - t1
            print(f"{name:20s} /16 with {opts.free} free: ADD {add / opts.rounds * 1000:7.1f} ms"
                  f"   DEL {dele / opts.rounds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
