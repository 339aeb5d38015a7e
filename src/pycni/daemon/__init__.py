"""The node agent: serves CNI calls from the plugin shims in one warm process.

:class:`Agent` listens on a unix socket (``pycni agent``); :mod:`pycni.shim` is what the
installed plugin executables run. ``pycni install`` writes both halves
(:func:`install_plugins` and :func:`install_unit`).
"""

from ._agent import PER_CONTAINER, Agent, AgentConfig, AgentError, Call, run_agent
from ._cluster import ClusterCollector, ClusterRunner
from ._install import (
    DEFAULT_METRICS,
    DEFAULT_UNIT_DIR,
    UNIT_NAME,
    InstallError,
    import_paths,
    install_plugins,
    install_unit,
    interpreter,
    pycni_executable,
    shim_script,
    unit_text,
)
from ._log import JSONFormatter
from ._log import configure as configure_logging
from ._metrics import Metrics, parse_address
from ._topology import GraphError, Topology, node_topology, render_html, render_svg, to_dot
from ._trace import TraceRing

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_UNIT_DIR",
    "PER_CONTAINER",
    "UNIT_NAME",
    "Agent",
    "AgentConfig",
    "AgentError",
    "Call",
    "ClusterCollector",
    "ClusterRunner",
    "GraphError",
    "InstallError",
    "JSONFormatter",
    "Metrics",
    "Topology",
    "TraceRing",
    "configure_logging",
    "import_paths",
    "install_plugins",
    "install_unit",
    "interpreter",
    "node_topology",
    "parse_address",
    "pycni_executable",
    "render_html",
    "render_svg",
    "run_agent",
    "shim_script",
    "to_dot",
    "unit_text",
]
