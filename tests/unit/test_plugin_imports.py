"""A plugin process loads only what its call needs: the bridge/ptp common path (links,
addresses, routes through host's own rtnetlink codec) without pyroute2, netfilter or
socket.py, which cost a standalone call tens of milliseconds of start-up."""

from __future__ import annotations

import subprocess
import sys

# What a bridge or ptp ADD/DEL without ipMasq runs through: the plugin modules and the host
# functions on its path (imported by name, as the lazy host package would on first use).
_COMMON_PATH = """
import sys
import pycni.plugins.main.bridge, pycni.plugins.main.ptp
from pycni import host
for name in ("ensure_bridge", "attach_port", "create_veth", "delete_link_with_addresses",
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
    out = subprocess.run([sys.executable, "-I", "-c", _COMMON_PATH], capture_output=True,
                         text=True, check=True).stdout.split()
    assert [m for m in _HEAVY if m in out] == []
