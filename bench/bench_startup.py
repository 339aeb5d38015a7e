"""Start-up cost of the plugin shim against a bare interpreter and the Go loopback plugin.

Usage (as root): ``python3 bench/bench_startup.py [--runs 50]``

Each command answers (or is) a VERSION call; wall time and CPU time (user + system of the
child) are medians over ``--runs``. Every command runs through ``nsenter`` into a test
namespace where the agent listens (the shim only talks to an agent in its own namespace),
so ``nsenter /bin/true`` is printed as the floor all of them share.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import GO_DIR, temp_netns
from bench_agent import agent_in, install_ours_with_socket

from pycni.daemon import interpreter


def measure(argv: list[str], runs: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms) of running ``argv`` with CNI_COMMAND=VERSION."""
    env = {**os.environ, "CNI_COMMAND": "VERSION"}
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pytbench") as tmp, temp_netns("h") as ns:
        sock = f"{tmp}/run/agent.sock"
        install_ours_with_socket(f"{tmp}/bin", sock)
        install_ours_with_socket(f"{tmp}/bin-alone", f"{tmp}/none/agent.sock")
        enter = ["nsenter", f"--net={ns}", "--"]
        rows = {"nsenter /bin/true (floor)": [*enter, "/bin/true"],
                "python -I -S -c pass": [*enter, interpreter(), "-I", "-S", "-c", "pass"],
                "go loopback VERSION": [*enter, f"{GO_DIR}/loopback"],
                "shim standalone VERSION": [*enter, f"{tmp}/bin-alone/loopback"]}
        results = {name: measure(argv, opts.runs) for name, argv in rows.items()}
        with agent_in(ns, sock):
            results["shim via agent VERSION"] = measure([*enter, f"{tmp}/bin/loopback"],
                                                        opts.runs)
    floor = results["nsenter /bin/true (floor)"]
    bare = results["python -I -S -c pass"]
    go = results["go loopback VERSION"]
    print(f"start-up, median of {opts.runs} (interpreter {interpreter()}; "
          f"{Path(interpreter()).name})")
    print(f"{'command':<28}{'wall ms':>9}{'cpu ms':>8}{'cpu-floor':>10}"
          f"{'vs bare':>9}{'vs go':>8}")
    for name, (wall, cpu) in results.items():
        own = cpu - floor[1]
        print(f"{name:<28}{wall:>9.1f}{cpu:>8.1f}{own:>10.1f}"
              f"{own / max(bare[1] - floor[1], 1e-3):>8.2f}x"
              f"{wall / go[0]:>7.2f}x")


if __name__ == "__main__":
    main()
