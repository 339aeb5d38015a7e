"""What ``pycni install`` writes: plugin executables (the shim) and the agent's systemd unit."""

from __future__ import annotations

import site
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import shim
from ..invoke import PYCNI_MARKER

#: The unit ``pycni install --agent`` writes, and deploy/pycni-agent.service.
UNIT_NAME = "pycni-agent.service"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_METRICS = "127.0.0.1:9655"
#: Environment the unit gives the agent (see the unit's comment).
AGENT_ENV = {"MALLOC_ARENA_MAX": "2"}

# No sandboxing options: the plugins create links, enter namespaces (setns needs
# CAP_SYS_ADMIN), write sysctls and netfilter rules, and read /run/netns and /proc/<pid>/ns
# paths a runtime hands them. Restart=always is safe because a stopping agent lets
# in-flight calls finish and shims run calls themselves while none listens.
_UNIT_TEMPLATE = """\
[Unit]
Description=pycni node agent (serves CNI plugin calls for the pycni plugin executables)
Documentation=https://www.cni.dev/docs/spec/
After=network-pre.target
Before=containerd.service crio.service kubelet.service

[Service]
Type=notify
NotifyAccess=main
# Worker threads would each get a malloc arena (8 per core): two keep RSS flat under bursts.
Environment=MALLOC_ARENA_MAX=2
ExecStart=@PYCNI@ agent --socket @SOCKET@ --metrics-address @METRICS@
KillSignal=SIGTERM
# The agent waits up to --grace (30 s) for in-flight calls after SIGTERM, then up to
# --rollback (8 s) for ADDs it cut off to be undone.
TimeoutStopSec=40
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def import_paths() -> list[str]:
    """``sys.path`` entries a ``-IS`` interpreter needs to import pycni and its dependencies.

    Without ``site`` the interpreter knows only the standard library: add the directory
    pycni is imported from (an editable install's ``src``, or site-packages) and this
    interpreter's site-packages (pyroute2, ...). Computed at install time, embedded in the
    shim, so start-up never scans for them.
    """
    pkg_root = str(Path(shim.__file__).resolve().parent.parent)
    out = [pkg_root]
    for path in site.getsitepackages():
        if path not in out:
            out.append(path)
    return out


def shim_script(plugin_type: str, python: str, *, socket_path: str = shim.DEFAULT_SOCKET,
                paths: Sequence[str] | None = None,
                deadlines: tuple[float, float, float] | None = None) -> str:
    """The text of the executable for ``plugin_type``: shebang, marker, a call to the shim.

    ``-IS`` is one shebang argument (Linux passes everything after the interpreter as one):
    isolated mode (no PYTHON* variables, no user site) and no ``site`` import. The shim is
    imported from pycni's own directory, so it runs from its cached bytecode: embedding
    its source here would cost a ~2 ms compile on every call. ``deadlines`` (connect, ack,
    call seconds) replace the shim's defaults.
    """
    if paths is None:
        paths = import_paths()
    extra = f", {tuple(deadlines)!r}" if deadlines is not None else ""
    return (f"#!{python} -IS\n"
            f"{PYCNI_MARKER.decode()} {plugin_type}\n"
            f"# Written by pycni install: forwards the call to the pycni agent on the socket\n"
            f"# below, or runs the plugin itself when no agent listens (see pycni/shim.py).\n"
            f"import sys\n"
            f"sys.path.insert(0, {paths[0]!r})\n"
            f"from pycni.shim import main\n"
            f"main({plugin_type!r}, {socket_path!r}, {list(paths)!r}{extra})\n")


def unit_text(pycni_exe: str = "/usr/local/bin/pycni", *,
              socket_path: str = shim.DEFAULT_SOCKET, metrics: str = DEFAULT_METRICS) -> str:
    """The systemd unit running ``pycni agent``; with the defaults, deploy/pycni-agent.service."""
    return (_UNIT_TEMPLATE.replace("@PYCNI@", pycni_exe)
            .replace("@SOCKET@", socket_path)
            .replace("@METRICS@", metrics))


def pycni_executable() -> str:
    """The ``pycni`` console script next to this interpreter (what the unit runs)."""
    candidate = Path(sys.executable).parent / "pycni"
    return str(candidate if candidate.exists() else Path(sys.argv[0]).absolute())


__all__ = ["AGENT_ENV", "DEFAULT_METRICS", "DEFAULT_UNIT_DIR", "UNIT_NAME", "import_paths",
           "pycni_executable", "shim_script", "unit_text"]
