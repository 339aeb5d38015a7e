"""A ``pycni agent`` process inside a test host namespace, and shims that talk to it.

The agent's plugins act in the namespace the agent runs in, so it is started through
``nsenter`` into ``host_ns``; its socket lives in the test's tmp_path. Shims run through
``nsenter`` too (:func:`pycni.testing.exec_plugin_in`), as a runtime on that host would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pycni.plugins.main.bridge import Bridge
from pycni.skel import CmdArgs
from pycni.spec import Result
from pycni.testing import wait_for

#: Run by an agent started with ``hold_dir``: its bridge is :class:`HeldBridge`.
_HOLDING_AGENT = ("import agent_support; from pycni.invoke import REGISTRY; "
                  "REGISTRY['bridge'] = 'agent_support:HeldBridge'; "
                  "from pycni.cli import main; main()")


class HeldBridge(Bridge):
    """bridge whose ADD, once it has configured everything, waits while the file
    ``$PYT_HOLD_DIR/<container id>.hold`` exists (and says so with ``<id>.held``): a call
    held in flight for as long as a test needs."""

    def add(self, args: CmdArgs) -> Result:
        result = super().add(args)
        hold = Path(os.environ.get("PYT_HOLD_DIR", "/nonexistent"), f"{args.container_id}.hold")
        if hold.exists():
            hold.with_suffix(".held").touch()
            deadline = time.monotonic() + 120
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return result


def install_shims(bin_dir: Path, socket_path: Path) -> Path:
    """``pycni install`` into ``bin_dir`` with the agent socket ``socket_path``."""
    subprocess.run([sys.executable, "-m", "pycni.cli", "install", "--bin-dir", str(bin_dir),
                    "--socket", str(socket_path)], check=True, capture_output=True)
    return bin_dir


class AgentProcess:
    """``pycni agent`` in ``host_ns``; its JSON log goes to ``<run_dir>/agent-N.log``."""

    count = 0

    def __init__(self, host_ns: str, socket_path: Path, *, grace: float = 60,
                 workers: int = 32, hold_dir: Path | None = None,
                 metrics: str = "off", cache_dir: Path | None = None) -> None:
        """``hold_dir``: the agent's bridge ADDs can be held (:class:`HeldBridge`);
        ``metrics``: its ``--metrics-address`` (``127.0.0.1:0``: any port, see
        :attr:`metrics_address`); ``cache_dir``: the result cache its ``/topology`` reads."""
        AgentProcess.count += 1
        self.socket_path = socket_path
        self.log_path = socket_path.parent.parent / f"agent-{AgentProcess.count}.log"
        socket_path.parent.mkdir(mode=0o700, exist_ok=True)
        self._log = self.log_path.open("wb")
        entry = ["-m", "pycni.cli"]
        env = dict(os.environ)
        if hold_dir is not None:
            entry = ["-c", _HOLDING_AGENT]
            env["PYT_HOLD_DIR"] = str(hold_dir)
            env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                                 env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={host_ns}", "--", sys.executable, *entry, "agent",
             "--socket", str(socket_path), "--metrics-address", metrics, "--grace", str(grace),
             "--rollback", "120", "--workers", str(workers), "--log-level", "info",
             *(["--cache-dir", str(cache_dir)] if cache_dir is not None else [])],
            stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        if not wait_for(lambda: self.listening() or self.proc.poll() is not None, timeout=120):
            self.stop()
            raise AssertionError("the agent did not start listening")
        if self.proc.poll() is not None:
            self._log.close()
            raise AssertionError(f"the agent exited: {self.log_path.read_text()}")

    def listening(self) -> bool:
        """The log says the socket is up."""
        return any(r.get("msg") == "listening" for r in self.records())

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of the agent's HTTP endpoint (in its namespace), as it logged it."""
        address = next(r.get("metrics") for r in self.records() if r.get("msg") == "listening")
        assert isinstance(address, str), address
        return address

    def records(self) -> list[dict[str, Any]]:
        """The agent's log records so far."""
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line})
        return out

    def logged(self, msg: str) -> bool:
        """A record with this message was logged."""
        return any(r.get("msg") == msg for r in self.records())

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        """The calls the agent served (optionally of one command)."""
        return [r for r in self.records() if r.get("msg") == "call"
                and (command is None or r.get("command") == command)]

    def terminate(self) -> None:
        """SIGTERM: stop accepting, let running calls finish (up to the grace period)."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to exit; its status."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        """Terminate and wait; kill if it does not go."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
