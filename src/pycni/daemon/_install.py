"""What ``pycni install`` does: write the plugin executables (the shim) and the agent's unit.

:func:`install_plugins` writes one executable per plugin type, :func:`install_unit` the
systemd unit; the command only parses its options and calls them. Files are replaced
atomically: a plugin being exec'd right now keeps its old inode, and no runtime ever sees a
half-written file (or gets ETXTBSY from us).
"""

from __future__ import annotations

import site
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import shim
from ..invoke import PYCNI_MARKER, REGISTRY
from ..store import atomic_write

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


class InstallError(Exception):
    """A directory or file ``pycni install`` needs could not be made; the message names it."""


def interpreter() -> str:
    """The interpreter binary for plugin shebangs: never a version-manager shim.

    ``sys.executable`` is the binary itself even when started through a pyenv shim; its
    symlinks are resolved, except inside a virtualenv whose ``bin/python`` link is what
    makes the venv's packages visible.
    """
    exe = Path(sys.executable).absolute()
    if sys.prefix != sys.base_prefix:
        return str(exe)
    return str(exe.resolve())


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


def _mkdir(directory: str | Path) -> None:
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"cannot create {directory}: {exc.strerror}") from exc


def _write(dest: Path, text: str, mode: int) -> None:
    try:
        atomic_write(dest, text.encode(), mode=mode)
    except OSError as exc:
        raise InstallError(f"cannot write {dest}: {exc.strerror}") from exc


def install_plugins(bin_dir: str | Path, *, replace: Callable[[Path], bool],
                    socket_path: str = shim.DEFAULT_SOCKET, python: str | None = None,
                    written: Callable[[Path], object] = lambda _path: None) -> list[str]:
    """Write an executable for every pycni plugin type into ``bin_dir``, in name order.

    A file already there is replaced only if ``replace(path)`` says so. ``written`` is told
    each path as soon as it is in place; returns the types left alone. ``python``: the
    shebang's interpreter (default :func:`interpreter`). InstallError names what failed.
    """
    target = Path(bin_dir)
    python = python or interpreter()
    _mkdir(bin_dir)
    skipped = []
    for plugin_type in sorted(REGISTRY):
        dest = target / plugin_type
        if dest.exists() and not replace(dest):
            skipped.append(plugin_type)
            continue
        _write(dest, shim_script(plugin_type, python, socket_path=socket_path), 0o755)
        written(dest)
    return skipped


def install_unit(unit_dir: str | Path = DEFAULT_UNIT_DIR, *,
                 socket_path: str = shim.DEFAULT_SOCKET) -> Path:
    """Write the agent's systemd unit (:func:`unit_text`) into ``unit_dir``; its path.

    The unit is not enabled or started. InstallError names what failed.
    """
    _mkdir(unit_dir)
    unit = Path(unit_dir) / UNIT_NAME
    _write(unit, unit_text(pycni_executable(), socket_path=socket_path), 0o644)
    return unit


__all__ = ["AGENT_ENV", "DEFAULT_METRICS", "DEFAULT_UNIT_DIR", "UNIT_NAME", "InstallError",
           "import_paths", "install_plugins", "install_unit", "interpreter", "pycni_executable",
           "shim_script", "unit_text"]
