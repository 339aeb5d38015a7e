"""Traffic that runs across a change and reports what the change cost it.

:class:`LiveTraffic` keeps a ping at a fixed interval (default 10 ms) and one TCP connection
(a small echo server in the destination namespace, a client sending a numbered message every
interval) going between test namespaces while a test or benchmark changes the network, then
reports the pings lost, the longest run of lost pings (the gap) and whether the TCP
connection survived with every message echoed in order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_SERVER = r"""
import socket, sys
v6 = ":" in sys.argv[2]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
while True:
    data = c.recv(65536)
    if not data:
        break
    c.sendall(data)
"""

_CLIENT = r"""
import json, os, socket, sys, time
host, port, interval, stop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
c = socket.create_connection((host, port), timeout=5)
print("ready", flush=True)
sent = echoed = 0; buf = b""; error = ""; slowest = 0.0
try:
    while not os.path.exists(stop):
        t0 = time.monotonic()
        c.sendall(b"%08d" % sent); sent += 1
        while len(buf) < 8:
            chunk = c.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        while len(buf) >= 8:
            if int(buf[:8]) != echoed:
                raise ValueError(f"echo out of order: {buf[:8]!r} for {echoed}")
            echoed += 1; buf = buf[8:]
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(interval)
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"sent": sent, "echoed": echoed, "error": error, "slowest": slowest}))
"""


@dataclass
class PingStats:
    """One ping run: sent, answered, and the longest run of unanswered sequence numbers."""

    source: str
    sent: int = 0
    received: int = 0
    longest_gap: int = 0

    @property
    def lost(self) -> int:
        """Pings without an answer."""
        return self.sent - self.received


@dataclass
class TrafficReport:
    """What the traffic saw across the change."""

    interval: float
    pings: list[PingStats] = field(default_factory=list)
    tcp_sent: int = 0
    tcp_echoed: int = 0
    tcp_error: str = ""
    tcp_slowest: float = 0.0

    @property
    def tcp_survived(self) -> bool:
        """The connection carried every message, in order, to the end."""
        return not self.tcp_error and self.tcp_sent > 0 and self.tcp_sent == self.tcp_echoed

    def summary(self) -> str:
        """One line per measurement."""
        lines = [f"ping from {p.source}: {p.sent} sent, {p.lost} lost, longest gap "
                 f"{p.longest_gap} pings ({p.longest_gap * self.interval * 1000:.0f} ms)"
                 for p in self.pings]
        lines.append(f"tcp: {self.tcp_sent} sent, {self.tcp_echoed} echoed, slowest round "
                     f"trip {self.tcp_slowest * 1000:.0f} ms, "
                     + ("survived" if self.tcp_survived else f"BROKEN ({self.tcp_error})"))
        return "\n".join(lines)


def _ns(netns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


class LiveTraffic:
    """Ping from each of ``ping_from`` to ``target`` and one TCP flow from ``tcp_from`` to a
    server in ``target_netns``; use as a context manager around the change, then
    :meth:`stop` for the report."""

    def __init__(self, target: str, target_netns: str, *, ping_from: list[str],
                 tcp_from: str, workdir: Path, port: int = 5201, interval: float = 0.01) -> None:
        self.target, self.target_netns = target, target_netns
        self.ping_from, self.tcp_from = ping_from, tcp_from
        self.stop_file = workdir / "stop-traffic"
        self.port, self.interval = port, interval
        self._procs: list[subprocess.Popen[str]] = []
        self._pings: list[tuple[str, subprocess.Popen[str]]] = []
        self._server: subprocess.Popen[str] | None = None
        self._client: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the server, the client and the pings; return once all are running."""
        self.stop_file.unlink(missing_ok=True)
        # Each process is listed as it starts: a failure to start kills those already up.
        self._server = subprocess.Popen(
            _ns(self.target_netns, sys.executable, "-c", _SERVER, str(self.port),
                self.target), stdout=subprocess.PIPE, text=True)
        self._procs.append(self._server)
        self._ready(self._server)
        self._client = subprocess.Popen(
            _ns(self.tcp_from, sys.executable, "-c", _CLIENT, self.target, str(self.port),
                str(self.interval), str(self.stop_file)), stdout=subprocess.PIPE, text=True)
        self._procs.append(self._client)
        self._ready(self._client)
        for source in self.ping_from:
            proc = subprocess.Popen(
                _ns(source, "ping", "-n", "-i", str(self.interval), "-W", "1", self.target),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._pings.append((source, proc))
            self._procs.append(proc)
        time.sleep(0.3)  # a steady state before the change

    @staticmethod
    def _ready(proc: subprocess.Popen[str]) -> None:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the traffic helper did not start")

    def stop(self, settle: float = 1.0) -> TrafficReport:
        """Let the traffic run ``settle`` seconds more, stop it and report."""
        time.sleep(settle)
        report = TrafficReport(self.interval)
        for source, proc in self._pings:
            proc.send_signal(2)  # SIGINT: ping prints its statistics
            out, _ = proc.communicate(timeout=10)
            seqs = sorted({int(m) for m in re.findall(r"icmp_seq=(\d+) ttl", out)})
            # The last ping may still be in flight when ping stops: count up to the last
            # answered one.
            stats = PingStats(Path(source).name, max(seqs, default=0), len(seqs))
            expected = list(range(1, stats.sent + 1))
            run = longest = 0
            answered = set(seqs)
            for seq in expected:
                run = 0 if seq in answered else run + 1
                longest = max(longest, run)
            stats.longest_gap = longest
            report.pings.append(stats)
        self.stop_file.touch()
        if self._client is not None:
            out, _ = self._client.communicate(timeout=15)
            last = (out.strip().splitlines() or ["{}"])[-1]
            data = json.loads(last) if last.startswith("{") else {"error": out[-200:]}
            report.tcp_sent = int(data.get("sent", 0))
            report.tcp_echoed = int(data.get("echoed", 0))
            report.tcp_error = str(data.get("error", ""))
            report.tcp_slowest = float(data.get("slowest", 0))
        self.close()
        return report

    def close(self) -> None:
        """Kill whatever still runs (the server, after a failure everything)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs = []

    def __enter__(self) -> LiveTraffic:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
