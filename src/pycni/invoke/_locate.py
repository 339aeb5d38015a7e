"""Finding what runs a plugin type: an executable in CNI_PATH, or pycni's class in-process.

libcni finds an executable in the search path and execs it. pycni also has the plugin
classes at hand, and running one in-process is the same code and on-disk state without an
interpreter start per call. :func:`locate_plugin` decides which, :func:`run_located` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .._pathstr import join_path
from ..spec import CNIError, PluginNotFound, decode_json
from ._exec import DEFAULT_TIMEOUT, exec_plugin
from ._inprocess import REGISTRY, run_in_process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    #: When :func:`locate_plugin` picks the in-process class over the search path.
    InProcess = Literal["never", "fallback", "prefer"]

#: The first line of every executable ``pycni install`` writes carries this marker.
PYCNI_MARKER = b"# pycni-plugin:"
#: The location :func:`locate_plugin` gives a pycni type that is to run in-process.
IN_PROCESS_PREFIX = "pycni-builtin:"

def find_plugin(name: str, paths: Iterable[str]) -> str:
    """The first executable called ``name`` in ``paths``; names with a separator are rejected."""
    if not name or os.sep in name or "\x00" in name or name in (".", ".."):
        raise PluginNotFound(f"invalid plugin name {name!r}", "a plugin type is a bare file name")
    searched = [p for p in paths if p]
    for directory in searched:
        candidate = join_path(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PluginNotFound(f'failed to find plugin "{name}" in path {searched}')


def is_pycni_executable(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an executable ``pycni install`` wrote (it has the marker)."""
    # A plain fd: open() adds fstat, isatty, lseek and a read to EOF to the three calls this
    # needs, on every delegation to an IPAM plugin.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = os.read(fd, 512)
    except OSError:
        return False
    finally:
        os.close(fd)
    return PYCNI_MARKER in head


def locate_plugin(plugin_type: str, paths: Iterable[str], *,
                  in_process: InProcess = "fallback") -> str:
    """What runs ``plugin_type``: an executable from ``paths``, or :data:`IN_PROCESS_PREFIX`
    and the type for pycni's class in this process. PluginNotFound when neither.

    ``in_process``: ``"never"`` (executables only); ``"fallback"``, a pycni type missing from
    ``paths`` runs in-process (``pycni run`` before ``pycni install``); ``"prefer"``, also when
    the executable found is one pycni installed (a pycni plugin delegating to its IPAM).
    """
    ours = in_process != "never" and plugin_type in REGISTRY
    try:
        path = find_plugin(plugin_type, paths)
    except PluginNotFound:
        if ours:
            return IN_PROCESS_PREFIX + plugin_type
        raise
    if ours and in_process == "prefer" and is_pycni_executable(path):
        return IN_PROCESS_PREFIX + plugin_type
    return path


def run_located(location: str, env: Mapping[str, str], stdin: bytes, *,
                timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Run what :func:`locate_plugin` found with the CNI_* variables ``env``; its stdout, or
    the CNIError it reported. ``timeout`` bounds an exec (an in-process call has none)."""
    if location.startswith(IN_PROCESS_PREFIX):
        plugin_type = location.removeprefix(IN_PROCESS_PREFIX)
        status, out = run_in_process(plugin_type, env, stdin)
        if status != 0:
            raise CNIError.from_json(decode_json(out, f'error from plugin "{plugin_type}"'))
        return out
    return exec_plugin(location, env, stdin, timeout=timeout)
