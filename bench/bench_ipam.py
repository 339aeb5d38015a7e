"""host-local in a nearly full /16: ADD and DEL through the agent and standalone, against Go.

Run (as root): ``python3 bench/bench_ipam.py [--free N] [--rounds R]``.

Fills three copies of 10.1.0.0/16 with reservation files (65,532 hosts, ``--free`` of them
left free, scattered; 64-hex container IDs as runtimes use), one per implementation: Go's
``/usr/lib/cni/host-local``, pycni's ``host-local`` shim served by a ``pycni agent``
("agent"), and the same shim without an agent ("standalone"). Every call is an exec of the
executable (inside the agent's network namespace, where the shim hands calls to the agent),
as a runtime makes it. Round 0 (the first call on each copy: Go and a cold
pycni both read every lease; pycni then has its index) is printed apart; then ``--rounds``
interleaved rounds (every implementation each round, in a rotating order) of one ADD and its
DEL. Printed: medians, the median of the per-round ratios to Go with the 25th-75th
percentile spread, and CPU ms per call (the processes', plus the agent's own).
Targets (issue 12): ADD agent <= 0.1x Go, standalone <= 0.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from _harness import GO_DIR, temp_netns
from bench_agent import IMPLS, Row, agent_in, cpu_seconds, install_ours_with_socket, table

HOSTS = 65532


def fill(d: Path, free: int) -> None:
    """Reservations for every host of 10.1.0.0/16 but ``free`` scattered ones."""
    d.mkdir(parents=True)
    keep_free = set(random.Random(1).sample(range(2, HOSTS + 2), free))  # noqa: S311 - a fixed spread
    for n in range(2, HOSTS + 2):
        if n not in keep_free:
            (d / f"10.1.{n >> 8}.{n & 255}").write_bytes(f"{n:064x}\r\neth0".encode())


class Impl:
    """One implementation: its executable and its own copy of the store."""

    def __init__(self, name: str, exe: str, data_dir: str, host_ns: str,
                 agent_pid: int = 0) -> None:
        self.name = name
        self.exe = exe
        # Every call runs in the agent's namespace: the agent serves only callers in its own
        # (others run standalone), and Go pays the same nsenter.
        self.argv = ["nsenter", f"--net={host_ns}", "--", exe]
        self.agent_pid = agent_pid
        self.stdin = json.dumps({"cniVersion": "1.0.0", "name": "full", "type": "bridge",
                                 "ipam": {"type": "host-local", "dataDir": data_dir,
                                          "subnet": "10.1.0.0/16"}}).encode()

    def call(self, command: str, cid: str) -> float:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
                    "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(self.exe).parent)})
        start = time.perf_counter()
        proc = subprocess.run(self.argv, input=self.stdin, env=env, capture_output=True,
                              check=False)
        took = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{self.name} {command}: {proc.stdout!r} {proc.stderr!r}")
        return took

    def cpu(self) -> float:
        return cpu_seconds(self.agent_pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--free", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pytbench"))
        Path(f"{tmp}/run").mkdir(mode=0o700)
        install_ours_with_socket(f"{tmp}/bin", f"{tmp}/run/agent.sock")
        install_ours_with_socket(f"{tmp}/bin-alone", f"{tmp}/none/agent.sock")
        for impl in IMPLS:
            fill(Path(tmp) / impl / "full", opts.free)
        host = stack.enter_context(temp_netns("h"))
        agent = stack.enter_context(agent_in(host, f"{tmp}/run/agent.sock"))
        impls = [Impl("go", f"{GO_DIR}/host-local", f"{tmp}/go", host),
                 Impl("agent", f"{tmp}/bin/host-local", f"{tmp}/agent", host, agent.pid),
                 Impl("standalone", f"{tmp}/bin-alone/host-local", f"{tmp}/standalone", host)]
        print(f"host-local, 10.1.0.0/16 with {HOSTS - opts.free} leases ({opts.free} free)")
        cold = {i.name: i.call("ADD", f"cold{0:060x}") for i in impls}
        for i in impls:
            i.call("DEL", f"cold{0:060x}")
        print("first ADD (cold: every lease read) ms: "
              + ", ".join(f"{k} {v * 1000:.0f}" for k, v in cold.items()))
        rows = {"ADD": Row(), "DEL": Row()}
        for rnd in range(opts.rounds):
            order = impls[rnd % 3:] + impls[:rnd % 3]
            for impl in order:
                cid = f"bench{rnd:059x}"  # not a fill ID (those are all hex)
                for op, row in rows.items():
                    c0 = impl.cpu()
                    row.times.setdefault(impl.name, []).append(impl.call(op, cid))
                    row.cpu[impl.name] = row.cpu.get(impl.name, 0.0) + impl.cpu() - c0
        for row in rows.values():
            row.calls = opts.rounds
        print(table(f"{opts.rounds} interleaved rounds", rows,
                    {"ADD": "agent <= 0.1x, standalone <= 0.5x"}), flush=True)

if __name__ == "__main__":
    main()
