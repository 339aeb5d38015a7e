"""The node agent's fast path against the Go plugins, measured in the same run.

Usage (as root)::

    python3 bench/bench_agent.py --chain plain [--rounds 20] [--pods 100] [--cycles 2000]
    python3 bench/bench_agent.py --chain portmap [--backend iptables|nftables] ...

    python3 bench/bench_agent.py --tracemalloc --cycles 10000

``--chain plain`` is bridge + host-local with ipMasq off (what most pods use);
``--chain portmap`` is bridge (ipMasq) + host-local + portmap with one TCP mapping;
``--backend`` picks pycni's masquerade and portmap backend (``iptables``, the reference's
default, or ``nftables``). The Go side always uses iptables: Debian's Go plugins (1.1.1)
have no nftables backend.
``--cycles 10000`` for the long memory run; ``--skip-memory``/``--skip-burst`` leave
those out. ``--tracemalloc`` runs only the memory measure, with the agent in a child
process of the bench (in its own host namespace) driven over its socket by the shim's own
client code from threads of that process: its RSS over ``--cycles`` cycles after a warm-up,
then tracemalloc snapshots diffed over as many more: the Python allocations that grew,
by line.

The chain runs through pycni's runtime (:class:`pycni.runtime.CNIConfig`, the same code for
every implementation) with three plugin directories: Go's /usr/lib/cni, pycni's shims with a
``pycni agent`` serving them ("agent"), and the same shims without an agent ("standalone":
each plugin runs in its shim). Each implementation gets its own host namespace, the agent
runs inside it.

Printed: for single pods, the rounds are interleaved (each round runs every implementation,
in a rotating order) so machine noise hits all alike; the medians, the median of the
per-round ratios to Go with their spread (25th-75th percentile), and the CPU time per call
(the plugin processes', plus the agent's own for "agent"). Then the wall time of ``--pods``
pods set up (and torn down) at once (``--burst-runs`` alternating runs: median ratio and
range), and the agent's RSS when idle and its growth over ``--cycles`` ADD/DEL cycles.
Targets (issue 12), plain: agent ADD <= 1.0x Go, DEL <= 0.8x, standalone ADD <= 3x,
100 pods at once <= 0.8x; portmap: agent ADD <= 0.5x, DEL <= 0.3x; idle RSS < 60 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
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


def chain(bridge: str, data_dir: str, kind: str = "portmap",
          subnet: str = "10.125.0.0/16", backend: str | None = None) -> NetworkConfigList:
    """``plain``: bridge + host-local, no masquerade; ``portmap``: + ipMasq and portmap
    (with ``backend`` for both when given; None: the plugins' default, iptables)."""
    plugins: list[dict[str, Any]] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": kind != "plain",
         "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data_dir}}]
    if kind != "plain":
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        if backend is not None:
            plugins[0]["ipMasqBackend"] = backend
            plugins[1]["backend"] = backend
    return NetworkConfigList.parse({"cniVersion": "1.0.0", "name": "benchnet",
                                    "plugins": plugins})


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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Bench:
    """One implementation's host namespace, runtime and plugin directory."""

    def __init__(self, stack: ExitStack, impl: str, bin_dir: str, tmp: str,
                 kind: str = "portmap", *, backend: str = "iptables") -> None:
        self.impl = impl
        self.host = stack.enter_context(temp_netns("h"))
        # Go 1.1.1 knows only iptables: its configs name no backend.
        self.net = chain(unique_name("br"), f"{tmp}/{impl}-ipam", kind,
                         backend=None if impl == "go" else backend)
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

    def cpu(self) -> float:
        """Seconds of CPU so far of this process's children (plugins, shims) and the agent."""
        return cpu_seconds(self.agent.pid if self.agent is not None else 0)


def cpu_seconds(agent_pid: int = 0) -> float:
    """Seconds of CPU so far of this process's children (plugins, shims), plus the agent's
    (``agent_pid``, a process that is not our waited-for child yet) when given."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = 0.0
    if agent_pid:
        fields = Path(f"/proc/{agent_pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return usage.ru_utime + usage.ru_stime + own


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Row:
    """Per-implementation samples of one operation, and ratios to Go per round."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, float] = {}
        self.calls = 0

    def median(self, impl: str) -> float:
        return statistics.median(self.times[impl]) * 1000

    def ratios(self, impl: str) -> list[float]:
        return [a / g for a, g in zip(self.times[impl], self.times["go"], strict=True)]


def single(benches: dict[str, Bench], rounds: int) -> dict[str, Row]:
    """ADD then DEL of one pod, each round through every implementation in a rotating order
    (round 0, which creates the bridges, is dropped)."""
    rows = {"ADD": Row(), "DEL": Row()}
    impls = list(benches)
    for i in range(rounds + 1):
        order = impls[i % len(impls):] + impls[:i % len(impls)]
        for impl in order:
            b = benches[impl]
            with temp_netns("c") as ns:
                c0 = b.cpu()
                t_add = b.add(i, ns)
                c1 = b.cpu()
                t_del = b.delete(i, ns)
                c2 = b.cpu()
            if i:
                for op, t, c in (("ADD", t_add, c1 - c0), ("DEL", t_del, c2 - c1)):
                    rows[op].times.setdefault(impl, []).append(t)
                    rows[op].cpu[impl] = rows[op].cpu.get(impl, 0.0) + c
    for row in rows.values():
        row.calls = rounds
    return rows


def burst(benches: dict[str, Bench], pods: int, runs: int) -> dict[str, Row]:
    """Wall time of ``pods`` ADDs started at once, then of their DELs; ``runs`` runs with the
    implementations alternating."""
    rows = {"ADD": Row(), "DEL": Row()}
    impls = list(benches)
    for run in range(runs):
        order = impls if run % 2 == 0 else impls[::-1]
        for impl in order:
            b = benches[impl]
            with ExitStack() as stack:
                nss = [stack.enter_context(temp_netns("c")) for _ in range(pods)]

                def timed(fn: Callable[[int, str], float], nss: list[str] = nss) -> float:
                    start = time.perf_counter()
                    with ThreadPoolExecutor(pods) as pool:
                        list(pool.map(lambda i: fn(1000 + i, nss[i]), range(pods)))
                    return time.perf_counter() - start

                c0 = b.cpu()
                t_add = timed(b.add)
                c1 = b.cpu()
                t_del = timed(b.delete)
                c2 = b.cpu()
            for op, t, c in (("ADD", t_add, c1 - c0), ("DEL", t_del, c2 - c1)):
                rows[op].times.setdefault(impl, []).append(t)
                rows[op].cpu[impl] = rows[op].cpu.get(impl, 0.0) + c
    for row in rows.values():
        row.calls = runs * pods
    return rows


def memory(b: Bench, cycles: int, parallel: int = 8) -> tuple[float, float, float]:
    """(RSS now, after a 100-cycle warm-up, after ``cycles`` more ADD/DEL cycles), MB."""
    assert b.agent is not None
    pid = b.agent.pid  # nsenter execs the agent: the same process
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


_TRACE_CHILD = """
import contextlib, gc, json, queue, sys, threading, tracemalloc, _socket
from concurrent.futures import ThreadPoolExecutor
from pycni.daemon import Agent, AgentConfig
from pycni.shim import forward
from pycni.testing import temp_netns

sock_path, data_dir, bridge, cycles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
agent = Agent(AgentConfig(socket_path=sock_path, metrics_address=None))
agent.start()
conf = json.dumps({"cniVersion": "1.0.0", "name": "memnet", "type": "bridge", "bridge": bridge,
                   "isGateway": True, "ipam": {"type": "host-local", "subnet": "10.126.0.0/16",
                                               "dataDir": data_dir}}).encode()

def call(command, cid, netns):
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.connect(sock_path)
    env = {b"CNI_COMMAND": command, b"CNI_CONTAINERID": cid.encode(), b"CNI_NETNS": netns.encode(),
           b"CNI_IFNAME": b"eth0", b"CNI_PATH": b"/nonexistent"}
    try:
        kind, parts = forward(sock, "bridge", env, conf)
    finally:
        sock.close()
    if kind != "ok" or parts[0] != b"0":
        raise SystemExit(f"{command} {cid}: {kind} {parts}")

# Eight container namespaces, reused (a DEL leaves one as it found it): the measure is the
# agent's, and creating 10,000 namespaces on a loaded machine times out now and then.
stack = contextlib.ExitStack()
free = queue.Queue()
for n in range(8):
    free.put((n, stack.enter_context(temp_netns("c"))))

def cycle(i):
    n, ns = free.get()
    try:
        call(b"ADD", f"mem{n}", ns)
        call(b"DEL", f"mem{n}", ns)
    finally:
        free.put((n, ns))

def run(count, start):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(cycle, range(start, start + count)))

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

idle = rss()
run(200, 0)
# Traced from here: what the cycles allocate and still hold at the end (after a collection,
# so garbage in reference cycles that the collector frees anyway does not count).
gc.collect()
warm_rss = rss()
# RSS alone first (tracemalloc's own traces would count in it), then the traced cycles.
run(cycles, 200)
gc.collect()
end_rss = rss()
tracemalloc.start(1)
warm = tracemalloc.take_snapshot()
run(cycles, 200 + cycles)
gc.collect()
end = tracemalloc.take_snapshot()
agent.shutdown(grace=10)
stack.close()
# The bench's own side (unique_name's record of the names it issued) is not the agent's.
ours = tracemalloc.Filter(False, "*/pycni/testing/*")
stats = end.filter_traces([ours]).compare_to(warm.filter_traces([ours]), "lineno")
grown = sum(s.size_diff for s in stats)
print(f"in-process agent: RSS {idle:.1f} MB before any call, {warm_rss:.1f} MB after 200 "
      f"warm-up cycles, {end_rss:.1f} MB after {cycles} more (growth "
      f"{end_rss - warm_rss:+.1f} MB); tracemalloc over {cycles} further cycles: "
      f"{grown / 1e6:+.2f} MB net (target < 5 MB); largest changes by line:")
for s in stats[:8]:
    print(f"  {s.size_diff / 1e3:+9.1f} kB {s.count_diff:+6d} blocks  {s.traceback[0]}")
"""


def memory_traced(tmp: str, cycles: int) -> None:
    """The agent's call path ``cycles`` times under tracemalloc (see ``--tracemalloc``)."""
    with temp_netns("h") as host:
        subprocess.run(["nsenter", f"--net={host}", "--", sys.executable, "-c", _TRACE_CHILD,
                        f"{tmp}/run/mem.sock", f"{tmp}/mem-ipam", unique_name("br"),
                        str(cycles)], check=True, env={**os.environ, **AGENT_ENV})


def table(title: str, rows: dict[str, Row], targets: dict[str, str]) -> str:
    """Medians, the median per-round ratio to Go [25th-75th percentile], CPU ms per call."""
    impls = [i for i in IMPLS if i in rows["ADD"].times]
    head = f"{'':<5}{'go ms':>8}{'cpu':>6}"
    for impl in impls[1:]:
        head += f"{impl + ' ms':>14}{'cpu':>6}{'ratio [p25-p75]':>22}"
    lines = [title, head + "   target"]
    for op, row in rows.items():
        cells = f"{op:<5}{row.median('go'):>8.1f}{row.cpu['go'] / row.calls * 1000:>6.1f}"
        for impl in impls[1:]:
            r = row.ratios(impl)
            spread = f"{statistics.median(r):.2f}x [{pct(r, .25):.2f}-{pct(r, .75):.2f}]"
            cells += (f"{row.median(impl):>14.1f}{row.cpu[impl] / row.calls * 1000:>6.1f}"
                      f"{spread:>22}")
        lines.append(f"{cells}   {targets.get(op, '')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-standalone", action="store_true")
    parser.add_argument("--burst-runs", type=int, default=3)
    parser.add_argument("--chain", choices=("plain", "portmap"), default="plain")
    parser.add_argument("--backend", choices=("iptables", "nftables"), default="iptables",
                        help="pycni's masquerade/portmap backend (Go always uses iptables)")
    parser.add_argument("--tracemalloc", action="store_true")
    opts = parser.parse_args()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pytbench"))
        if opts.tracemalloc:
            Path(f"{tmp}/run").mkdir(mode=0o700)
            memory_traced(tmp, opts.cycles)
            return
        ours = f"{tmp}/bin"
        Path(f"{tmp}/run").mkdir(mode=0o700)
        install_ours_with_socket(ours, f"{tmp}/run/agent.sock")
        alone = f"{tmp}/bin-alone"
        install_ours_with_socket(alone, f"{tmp}/none/agent.sock")
        dirs = {"go": GO_DIR, "agent": ours, "standalone": alone}
        impls = [i for i in IMPLS if not (opts.skip_standalone and i == "standalone")]
        benches = {impl: Bench(stack, impl, dirs[impl], tmp, opts.chain, backend=opts.backend)
                   for impl in impls}
        plain = opts.chain == "plain"
        name = ("bridge + host-local" if plain else
                f"bridge (ipMasq) + host-local + portmap, pycni backend {opts.backend}, "
                "Go backend iptables (Go 1.1.1 has no nftables backend)")
        print(f"chain: {name}, cniVersion 1.0.0; pid {os.getpid()}", flush=True)
        targets = ({"ADD": "agent <= 1.0x, standalone <= 3x", "DEL": "agent <= 0.8x"} if plain
                   else {"ADD": "agent <= 0.5x", "DEL": "agent <= 0.3x"})
        print(table(f"single pod, {opts.rounds} interleaved rounds", single(benches, opts.rounds),
                    targets), flush=True)
        if not opts.skip_burst:
            rows = burst({k: v for k, v in benches.items() if k != "standalone"}, opts.pods,
                         opts.burst_runs)
            goal = ("agent <= 0.8x" if plain else
                    f"agent <= {'0.3' if opts.backend == 'iptables' else '0.15'}x "
                    f"({opts.backend})")
            print(table(f"{opts.pods} pods at once, wall time, {opts.burst_runs} runs", rows,
                        {"ADD": goal, "DEL": goal}), flush=True)
        if not opts.skip_memory and "agent" in benches:
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
