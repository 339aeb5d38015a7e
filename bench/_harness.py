"""Shared benchmark harness: sandbox namespaces, plugin executables, timing and ratios.

Every benchmark runs pycni's executables (written by ``pycni install``) and the Go reference
plugins (``/usr/lib/cni``) in the same run, on the same sandbox, and reports ratios. Plugins
run with a test "host" namespace as their host side, entered with ``nsenter`` for both
implementations, so the sandbox costs the same on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.testing import cni_env, temp_netns

GO_DIR = "/usr/lib/cni"


def install_ours(bin_dir: str) -> None:
    """Write pycni's plugin executables into ``bin_dir`` with ``pycni install``."""
    pycni = Path(sys.executable).parent / "pycni"
    subprocess.run([str(pycni), "install", "--bin-dir", bin_dir], check=True,
                   capture_output=True)


@contextmanager
def plugin_dirs() -> Iterator[dict[str, str]]:
    """{"go": /usr/lib/cni, "pycni": a temp dir with our executables}."""
    tmp = tempfile.mkdtemp(prefix="pytbench")
    try:
        install_ours(tmp)
        yield {"go": GO_DIR, "pycni": tmp}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_plugin(host_ns: str, bin_dir: str, plugin: str, command: str, conf: dict[str, Any],
               *, container_id: str, netns: str, ifname: str = "eth0", args: str = ""
               ) -> tuple[float, bytes]:
    """Run one call; return (seconds of wall time, stdout); raise on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env(command, container_id=container_id, netns=netns, ifname=ifname,
                       path=bin_dir, args=args))
    data = json.dumps(conf).encode()
    argv = ["nsenter", f"--net={host_ns}", "--", str(Path(bin_dir) / plugin)]
    start = time.perf_counter()
    proc = subprocess.run(argv, input=data, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{bin_dir}/{plugin} {command} failed: {proc.stdout!r} {proc.stderr!r}")
    return elapsed, proc.stdout


@dataclass
class Samples:
    """Timings of one (implementation, operation) pair."""

    values: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.values) * 1000


def report(title: str, rows: dict[str, dict[str, Samples]]) -> str:
    """A table of medians for go and pycni per operation, with the ratio pycni/go."""
    lines = [title, f"{'operation':<28}{'go ms':>10}{'pycni ms':>10}{'ratio':>8}"]
    for op, by_impl in rows.items():
        go, ours = by_impl["go"].median_ms, by_impl["pycni"].median_ms
        lines.append(f"{op:<28}{go:>10.1f}{ours:>10.1f}{ours / go:>7.1f}x")
    return "\n".join(lines)


__all__ = ["GO_DIR", "Samples", "install_ours", "plugin_dirs", "report", "run_plugin",
           "temp_netns"]
