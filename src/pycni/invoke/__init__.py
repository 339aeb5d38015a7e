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
    from ._trace import (
        DEFAULT_TRACE_FILE,
        MAX_RECORD,
        REDACTED,
        append_to_file,
        assign_chains,
        call_record,
        encode_record,
        read_trace_file,
        read_trace_lines,
        redact,
        set_trace_sink,
        trace_chain,
        trace_file,
    )

#: Public name -> the submodule that defines it.
_LAZY = {
    "DEFAULT_TIMEOUT": "_exec",
    "DEFAULT_TRACE_FILE": "_trace",
    "MAX_RECORD": "_trace",
    "REDACTED": "_trace",
    "encode_record": "_trace",
    "append_to_file": "_trace",
    "assign_chains": "_trace",
    "call_record": "_trace",
    "read_trace_file": "_trace",
    "read_trace_lines": "_trace",
    "redact": "_trace",
    "set_trace_sink": "_trace",
    "trace_chain": "_trace",
    "trace_file": "_trace",
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
    "DEFAULT_TRACE_FILE",
    "IN_PROCESS_PREFIX",
    "MAX_RECORD",
    "PYCNI_MARKER",
    "REDACTED",
    "REGISTRY",
    "KeyedSerial",
    "append_to_file",
    "assign_chains",
    "call_record",
    "delegate",
    "delegate_add",
    "encode_record",
    "exec_plugin",
    "find_plugin",
    "is_pycni_executable",
    "load_plugin",
    "locate_plugin",
    "plugin_main",
    "read_trace_file",
    "read_trace_lines",
    "redact",
    "run_in_process",
    "run_located",
    "set_trace_sink",
    "trace_chain",
    "trace_file",
]

__getattr__, __dir__ = lazy_package(__name__, _LAZY, __all__)
