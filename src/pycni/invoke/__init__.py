"""Finding a plugin and running it, in-process or by exec (libcni's ``pkg/invoke``).

The registry of pycni's plugin types is plain data here; plugin classes (and ``skel``,
which runs them) are imported by name when a type is used, so the runtime, delegation in
``skel``, the shim, the agent and ``testing`` all share this layer without importing each
other. Names are imported from their submodule on first use (see :mod:`pycni._lazy`): the
shim's standalone path loads only the registry.
"""

from .._lazy import lazy_package

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._delegate import delegate, delegate_add
    from ._exec import DEFAULT_TIMEOUT, exec_plugin
    from ._inprocess import REGISTRY, load_plugin, plugin_main, run_in_process
    from ._locate import (
        IN_PROCESS_PREFIX,
        PYCNI_MARKER,
        find_plugin,
        is_pycni_executable,
        locate_plugin,
        run_located,
    )
    from ._serial import KeyedSerial

#: Public name -> the submodule that defines it.
_LAZY = {
    "DEFAULT_TIMEOUT": "_exec",
    "IN_PROCESS_PREFIX": "_locate",
    "KeyedSerial": "_serial",
    "PYCNI_MARKER": "_locate",
    "REGISTRY": "_inprocess",
    "delegate": "_delegate",
    "delegate_add": "_delegate",
    "exec_plugin": "_exec",
    "find_plugin": "_locate",
    "is_pycni_executable": "_locate",
    "load_plugin": "_inprocess",
    "locate_plugin": "_locate",
    "plugin_main": "_inprocess",
    "run_in_process": "_inprocess",
    "run_located": "_locate",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "IN_PROCESS_PREFIX",
    "PYCNI_MARKER",
    "REGISTRY",
    "KeyedSerial",
    "delegate",
    "delegate_add",
    "exec_plugin",
    "find_plugin",
    "is_pycni_executable",
    "load_plugin",
    "locate_plugin",
    "plugin_main",
    "run_in_process",
    "run_located",
]

__getattr__, __dir__ = lazy_package(__name__, _LAZY, __all__)
