"""Finding a plugin and running it, in-process or by exec (libcni's ``pkg/invoke``).

The registry of pycni's plugin types is plain data here; plugin classes (and ``skel``,
which runs them) are imported by name when a type is used, so the runtime, delegation in
``skel``, the shim, the agent and ``testing`` all share this layer without importing each
other. The public names are listed once, as the imports under ``if TYPE_CHECKING:``
below, and imported from their submodule on first use (:func:`pycni._lazy.lazy_init`): the
shim's standalone path loads only the registry.
"""
# mypy: implicit-reexport
# ruff: noqa: F401

from .._lazy import lazy_init

# A plain constant rather than typing's: importing typing costs a plugin start ~10 ms.
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
        is_trace_record,
        read_trace_file,
        read_trace_lines,
        redact,
        set_trace_sink,
        trace_chain,
        trace_file,
    )

__getattr__, __dir__, __all__ = lazy_init(__name__, __file__)
