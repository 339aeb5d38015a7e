"""The node agent's fast path against the Go plugins: a bridge + host-local + portmap chain.

Usage (as root): ``python3 bench/bench_agent.py [--rounds 20] [--pods 100] [--cycles 2000]``
(``--cycles 10000`` for the long memory run; ``--skip-memory`` to leave it out).

The chain (bridge with ipMasq, host-local, portmap with one TCP mapping) runs through
pycni's runtime (:class:`pycni.runtime.CNIConfig`, the same code for every implementation)
with three plugin directories: Go's /usr/lib/cni, pycni's shims with a ``pycni agent``
serving them ("agent"), and the same shims without an agent ("standalone": each plugin runs
in its shim). Each implementation gets its own host namespace, the agent runs inside it.

Printed: medians of a single ADD and DEL, the wall time of ``--pods`` pods set up (and torn
down) at once, the agent's RSS when idle and its growth over ``--cycles`` ADD/DEL cycles.
Targets (issue 6): agent ADD <= 1.0x Go, DEL <= 0.5x, standalone ADD <= 3x, burst <= 0.5x,
idle RSS < 60 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from _harness import GO_DIR, install_ours, temp_netns

from pycni.daemon._install import AGENT_ENV
from pycni.host import run_in_netns
from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import NetworkConfigList
from pycni.testing import unique_name, wait_for

IMPLS = ("go", "agent", "standalone")


def chain(bridge: str, data_dir: str, subnet: str = "10.125.0.0/16") -> NetworkConfigList:
    return NetworkConfigList.parse({
        "cniVersion": "1.0.0", "name": "benchnet",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data_dir}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]})


def ports(i: int) -> dict[str, Any]:
    return {"portMappings": [{"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}]}


@contextmanager
def agent_in(host_ns: str, sock: str, extra: Sequence[str] = (),
             entry: Sequence[str] = ("-m", "pycni.cli")) -> Iterator[subprocess.Popen[bytes]]:
    """``pycni agent`` inside ``host_ns`` on ``sock`` (with the options ``extra``; ``entry``:
    how Python starts the CLI), until the block ends."""
    Path(sock).parent.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.Popen(
        ["nsenter", f"--net={host_ns}", "--", sys.executable, *entry, "agent",
         "--socket", sock, "--metrics-address", "off", "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL, env={**os.environ, **AGENT_ENV})  # as the unit runs it
    try:
        if not wait_for(lambda: Path(sock).exists() or proc.poll() is not None, timeout=60):
            raise RuntimeError("the agent did not start")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def agent_pid(proc: subprocess.Popen[bytes]) -> int:
    """The agent's own pid (nsenter execs it, so the same process)."""
    return proc.pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Bench:
    """One implementation's host namespace, runtime and plugin directory."""

    def __init__(self, stack: ExitStack, impl: str, bin_dir: str, tmp: str) -> None:
        self.impl = impl
        self.host = stack.enter_context(temp_netns("h"))
        self.net = chain(unique_name("br"), f"{tmp}/{impl}-ipam")
        self.cni = CNIConfig([bin_dir], f"{tmp}/{impl}-cache")
        self.agent: subprocess.Popen[bytes] | None = None
        self.idle_rss = 0.0
        if impl == "agent":
            self.agent = stack.enter_context(agent_in(self.host, f"{tmp}/run/agent.sock"))
            self.idle_rss = rss_mb(self.agent.pid)  # started, warm imports, no call yet

    def rt(self, i: int, netns: str) -> RuntimeConf:
        return RuntimeConf(f"bench{i}", netns, "eth0", capability_args=ports(i))

    def add(self, i: int, netns: str) -> float:
        start = time.perf_counter()
        run_in_netns(self.host, self.cni.add_network_list, self.net, self.rt(i, netns))
        return time.perf_counter() - start

    def delete(self, i: int, netns: str) -> float:
        start = time.perf_counter()
        run_in_netns(self.host, self.cni.delete_network_list, self.net, self.rt(i, netns))
        return time.perf_counter() - start


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def single(benches: dict[str, Bench], rounds: int) -> dict[str, dict[str, float]]:
    """Median ADD and DEL per implementation (round 0, which creates the bridge, dropped)."""
    out: dict[str, dict[str, float]] = {}
    for impl, b in benches.items():
        adds, dels = [], []
        for i in range(rounds + 1):
            with temp_netns("c") as ns:
                t_add = b.add(i, ns)
                t_del = b.delete(i, ns)
            if i:
                adds.append(t_add)
                dels.append(t_del)
        out[impl] = {"ADD": median_ms(adds), "DEL": median_ms(dels)}
    return out


def burst(benches: dict[str, Bench], pods: int) -> dict[str, dict[str, float]]:
    """Wall time of ``pods`` ADDs started at once, then of their DELs."""
    out: dict[str, dict[str, float]] = {}
    for impl, b in benches.items():
        with ExitStack() as stack:
            nss = [stack.enter_context(temp_netns("c")) for _ in range(pods)]

            def timed(fn: Callable[[int, str], float], nss: list[str] = nss) -> float:
                start = time.perf_counter()
                with ThreadPoolExecutor(pods) as pool:
                    list(pool.map(lambda i: fn(1000 + i, nss[i]), range(pods)))
                return time.perf_counter() - start

            out[impl] = {"ADD": timed(b.add) * 1000, "DEL": timed(b.delete) * 1000}
    return out


def memory(b: Bench, cycles: int, parallel: int = 8) -> tuple[float, float, float]:
    """(RSS now, after a 100-cycle warm-up, after ``cycles`` more ADD/DEL cycles), MB."""
    assert b.agent is not None
    pid = agent_pid(b.agent)
    idle = rss_mb(pid)

    def cycle(i: int) -> None:
        with temp_netns("c") as ns:
            b.add(5000 + i % 1000 + 1000 * (i % parallel), ns)
            b.delete(5000 + i % 1000 + 1000 * (i % parallel), ns)

    def run(n: int) -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(cycle, range(n)))

    run(100)
    warm = rss_mb(pid)
    run(cycles)
    return idle, warm, rss_mb(pid)


def table(title: str, rows: dict[str, dict[str, float]], targets: dict[str, str]) -> str:
    lines = [title, f"{'operation':<12}{'go ms':>10}{'agent ms':>10}{'ratio':>8}"
             f"{'alone ms':>10}{'ratio':>8}   target"]
    for op in ("ADD", "DEL"):
        go = rows["go"][op]
        cells = "".join(f"{rows[i][op]:>10.1f}{rows[i][op] / go:>7.2f}x"
                        for i in ("agent", "standalone") if i in rows)
        lines.append(f"{op:<12}{go:>10.1f}{cells}   {targets.get(op, '')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    opts = parser.parse_args()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pytbench"))
        ours = f"{tmp}/bin"
        Path(f"{tmp}/run").mkdir(mode=0o700)
        install_ours_with_socket(ours, f"{tmp}/run/agent.sock")
        alone = f"{tmp}/bin-alone"
        install_ours_with_socket(alone, f"{tmp}/none/agent.sock")
        dirs = {"go": GO_DIR, "agent": ours, "standalone": alone}
        benches = {impl: Bench(stack, impl, dirs[impl], tmp) for impl in IMPLS}
        print(f"chain: bridge (ipMasq) + host-local + portmap, cniVersion 1.0.0; "
              f"pid {os.getpid()}", flush=True)
        print(table(f"single pod, median of {opts.rounds}", single(benches, opts.rounds),
                    {"ADD": "agent <= 1.0x, standalone <= 3x", "DEL": "agent <= 0.5x"}),
              flush=True)
        if not opts.skip_burst:
            rows = burst({k: v for k, v in benches.items() if k != "standalone"}, opts.pods)
            print(table(f"{opts.pods} pods at once, wall time", rows,
                        {"ADD": "agent <= 0.5x", "DEL": "agent <= 0.5x"}), flush=True)
        if not opts.skip_memory:
            before, warm, after = memory(benches["agent"], opts.cycles)
            print(f"agent RSS: idle after start {benches['agent'].idle_rss:.1f} MB "
                  f"(target < 60), after the runs above {before:.1f} MB, after 100 more "
                  f"cycles {warm:.1f} MB, after {opts.cycles} more ADD/DEL cycles "
                  f"{after:.1f} MB (growth {after - warm:+.1f} MB)")


def install_ours_with_socket(bin_dir: str, sock: str) -> None:
    """``pycni install`` with the agent socket ``sock``."""
    with contextlib.suppress(FileExistsError):
        Path(bin_dir).mkdir()
    subprocess.run([sys.executable, "-m", "pycni.cli", "install", "--bin-dir", bin_dir,
                    "--socket", sock], check=True, capture_output=True)


__all__ = ["agent_in", "install_ours", "rss_mb"]

if __name__ == "__main__":
    main()
