"""A plugin process loads only what its call needs: the bridge/ptp common path (links,
addresses, routes through host's own rtnetlink codec) without pyroute2, netfilter or
socket.py, which cost a standalone call tens of milliseconds of start-up."""

from __future__ import annotations

import subprocess
import sys

from pycni.daemon import import_paths


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh isolated interpreter (``-I``, and ``flags``); it must succeed."""
    return subprocess.run([sys.executable, "-I", *flags, "-c", code], capture_output=True,
                          text=True, check=True)

# What a bridge or ptp ADD/DEL without ipMasq runs through: the plugin modules and the host
# functions on its path (imported by name, as the lazy host package would on first use).
_COMMON_PATH = """
import sys
import pycni.plugins.main.bridge, pycni.plugins.main.ptp
from pycni import host
for name in ("ensure_bridge", "attach_port", "create_veth", "read_for_delete",
             "delete_veth_peer",
             "configure_iface", "ensure_gateway_address", "add_route", "wait_oper_up",
             "require_link", "set_link_up", "enable_forwarding", "sysctl_try_set", "enter"):
    getattr(host, name)
print(" ".join(sorted(sys.modules)))
"""

#: Modules the common path must not load (each costs a plugin start milliseconds).
_HEAVY = ("pyroute2.iproute", "pyroute2.netlink", "asyncio", "pycni.host.netfilter.masq",
          "pycni.host.netfilter._backend", "pycni.host._rules", "socket", "selectors",
          "secrets")


def test_the_common_path_loads_no_pyroute2_netfilter_or_socket_module() -> None:
    out = _python(_COMMON_PATH).stdout.split()
    assert [m for m in _HEAVY if m in out] == []


# What a standalone shim loads for a bridge + host-local call: the shim defers ``inspect``
# (dataclasses imports it only for classes without a docstring), then runs the plugin.
_STANDALONE = """
import sys
from pycni._lazy import defer_modules
defer_modules("inspect")
from pycni.invoke import REGISTRY, plugin_main, run_in_process, load_plugin
load_plugin("bridge"), load_plugin("host-local")
import pycni.skel, pycni.ipam
""" + _COMMON_PATH

#: Loaded by none of it: inspect's own imports, logging (only for a crash or pyroute2),
#: subprocess (only to exec a plugin), the conflist model (only runtimes and GC use it).
_STANDALONE_HEAVY = ("ast", "dis", "tokenize", "logging", "traceback", "subprocess",
                     "pycni.spec._conflist")


def test_a_standalone_call_loads_no_inspect_logging_or_subprocess() -> None:
    out = _python(_STANDALONE).stdout.split()
    assert [m for m in _STANDALONE_HEAVY if m in out] == []


# The same, as the shim runs it: ``-IS`` (no site, whose .pth hooks import re, typing...),
# pycni's directories put on sys.path by hand.
_SHIM_PATH = """
import sys
sys.path[:0] = {paths!r}
from pycni.invoke import load_plugin
load_plugin("bridge"), load_plugin("host-local")
import pycni.skel, pycni.ipam
""" + _COMMON_PATH

#: Not loaded by the shim's path at all: the value classes are plain __slots__ classes
#: (pycni._record), not dataclasses, and typing is imported only under TYPE_CHECKING; paths
#: are strings (pycni._pathstr), not pathlib (with fnmatch, urllib.parse, ntpath); ctypes
#: only on the first netns switch; the netns worker's queues are _queue's.
#: pyroute2's stand-in is a meta-path finder (no importlib.util, no search for pyroute2 on a
#: call that never imports it).
_SHIM_HEAVY = ("dataclasses", "typing", "inspect", "copy", "pathlib", "fnmatch",
               "urllib.parse", "ntpath", "ctypes", "queue", "importlib.util", "pyroute2")


def test_a_standalone_call_creates_no_dataclass_and_loads_no_typing() -> None:
    paths = import_paths()  # what `pycni install` writes into the shim
    out = _python(_SHIM_PATH.format(paths=paths), "-S").stdout.split()
    assert "pycni.plugins.ipam.host_local" in out
    assert [m for m in _SHIM_HEAVY if m in out] == []


# Every regular expression compiled or used while the shim's path loads, beyond json's own
# (re._compile: what re.compile, re.match, re.sub... all go through).
_COMPILED = """
import re, sys
compiled = []
real = re._compile
re._compile = lambda pattern, flags: (compiled.append(pattern), real(pattern, flags))[1]
import json
del compiled[:]
""" + _SHIM_PATH.replace("print(", "print(compiled) or (")


def test_a_standalone_call_compiles_no_regular_expression_at_import() -> None:
    # The spec's name rule, the MAC rule and the trace's secret hints are hand-written
    # checks; the trace's redaction patterns are compiled on first use.
    out = _python(_COMPILED.format(paths=import_paths()), "-S").stdout
    assert out.splitlines()[0] == "[]"


def test_a_deferred_module_still_works() -> None:
    code = ("from pycni._lazy import defer_modules; defer_modules('inspect'); import inspect;"
            "import dataclasses\n"
            "@dataclasses.dataclass\nclass NoDoc:\n    x: int = 1\n"
            "print(NoDoc.__doc__, inspect.isclass(NoDoc))")
    out = _python(code).stdout
    assert out.strip() == "NoDoc(x: int = 1) True"


def test_pyroute2_logs_one_line_once_it_is_imported() -> None:
    # Plugin.main puts the hook in place; the first import of logging (here pyroute2's)
    # sets the handler.
    code = ("import sys; from pycni.skel import quiet_library_logs;"
            "quiet_library_logs(); assert 'logging' not in sys.modules;"
            "import pyroute2.netlink.exceptions, logging;"
            "logging.getLogger('pyroute2.x').warning('Traceback:\\n  frame\\nValueError: big')")
    err = _python(code).stderr
    assert err == "pyroute2.x: warning: ValueError: big\n"


def test_pyroute2_loads_its_submodules_without_its_init_until_a_package_name_is_used() -> None:
    code = ("import sys, pycni.host\n"
            "assert 'pyroute2' not in sys.modules\n"
            "import pyroute2.netlink\n"
            "print('pyroute2.ndb' in sys.modules)\n"  # the real __init__ imports NDB
            "from pyroute2 import IPRoute\n"
            "import pyroute2\n"
            "print('pyroute2.ndb' in sys.modules, IPRoute.__name__, bool(pyroute2.__version__))")
    out = _python(code).stdout.split()
    assert out == ["False", "True", "IPRoute", "True"]


# A traced call with the CNI_ARGS every runtime sets (and a config without secrets).
_TRACED = """
from pycni.invoke import call_record
env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
       "K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc"}
rec = call_record("bridge", env, b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}', 0,
                  b'{"cniVersion":"1.0.0"}', started=0.0, seconds=0.0, source="standalone")
print(compiled, rec["args"] == env["CNI_ARGS"])
"""


def test_tracing_a_typical_call_compiles_no_redaction_pattern() -> None:
    # The shim's path, then the trace record of its call (the last line printed).
    out = _python(_COMPILED.format(paths=import_paths()) + _TRACED, "-S").stdout
    assert out.splitlines()[-1] == "[] True"


def test_pyroute2_logs_one_line_in_a_standalone_shim_call() -> None:
    # The shim runs the call itself (no agent): a plugin there that loads pyroute2, which
    # logs a traceback's text, prints its last line only, as the plugin executable does.
    # (Through pycni.host's stand-in for pyroute2, which skips the NullHandler its own
    # __init__ would add: with nothing set up, logging's last resort prints it all.)
    code = ("import sys, pycni.host, pycni.invoke, pycni.shim\n"
            "assert 'logging' not in sys.modules\n"
            "def run(plugin_type, environ, stdin):\n"
            "    import pyroute2.netlink.exceptions, logging\n"
            "    msg = 'Traceback:\\n  frame\\nValueError: big'\n"
            "    logging.getLogger('pyroute2.x').warning(msg)\n"
            "    return 0, b''\n"
            "pycni.invoke.run_in_process = run\n"
            "pycni.shim.run_standalone('bridge', [], b'{}')\n")
    err = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=False, env={"CNI_COMMAND": "ADD"}).stderr
    assert err == "pyroute2.x: warning: ValueError: big\n"


def test_the_pyroute2_finder_leaves_meta_path_alone_for_imports_under_way() -> None:
    # importlib walks the live sys.meta_path list. Another thread's first import of pyroute2
    # (simulated by the finder ``Other``, between two finders of this import) must not shift
    # the list under this walk: ``Serves``, the finder that has the module, would be skipped.
    code = ("import sys, pycni.host\n"
            "from importlib.machinery import ModuleSpec\n"
            "class Other:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'pytprobe':\n"
            "            import pyroute2.netlink\n"
            "class Loader:\n"
            "    def create_module(self, spec): return None\n"
            "    def exec_module(self, module): module.found = True\n"
            "class Serves:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        return ModuleSpec(name, Loader()) if name == 'pytprobe' else None\n"
            "finders = len(sys.meta_path)\n"
            "sys.meta_path[1:1] = [Other(), Serves()]\n"  # after the pyroute2 finder
            "import pytprobe\n"
            "print(pytprobe.found, 'pyroute2.netlink' in sys.modules,"
            " len(sys.meta_path) == finders + 2)")
    out = _python(code).stdout.split()
    assert out == ["True", "True", "True"]
