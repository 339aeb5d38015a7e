"""One default netfilter backend for portmap, ipMasq and firewall: the reference's choice.

iptables when its tools are installed, nftables when only nftables is (or when the config
says so), iptables when neither is (its error then names the missing tools). The probes are
replaced at the tool level: which save/restore pairs exist, whether nftables can be driven.
"""

from __future__ import annotations

import json

import pytest

from pycni.host import netfilter_backend
from pycni.host.netfilter import _backend, _nft, _xtables, masq
from pycni.plugins.meta.firewall import _backend as firewall_backend
from pycni.plugins.meta.portmap import PortMapConfig
from pycni.skel import CmdArgs
from pycni.spec import NetworkConfig

TOOLS = [  # (iptables tools installed, nftables usable, default)
    (True, True, "iptables"),
    (True, False, "iptables"),
    (False, True, "nftables"),
    (False, False, "iptables"),
]


@pytest.fixture(params=TOOLS, ids=["both", "iptables-only", "nftables-only", "neither"])
def tools(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pretend the given tools are installed; the default backend that follows."""
    have_ipt, have_nft, expected = request.param
    monkeypatch.setattr(_xtables, "families", lambda: [4, 6] if have_ipt else [])
    monkeypatch.setattr(_nft, "available", lambda: have_nft)
    return str(expected)


def _firewall_args(extra: dict[str, object]) -> CmdArgs:
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "firewall", **extra})
    return CmdArgs(command="ADD", container_id="c", netns="", ifname="eth0", args="",
                   path=(), stdin=stdin.encode(), conf=NetworkConfig.parse(stdin.encode()))


def test_default_follows_the_installed_tools(tools: str) -> None:
    assert netfilter_backend() == tools
    assert netfilter_backend(None) == tools
    assert netfilter_backend("") == tools


@pytest.mark.parametrize("configured", ["iptables", "nftables"])
def test_a_configured_backend_wins(tools: str, configured: str) -> None:
    del tools
    assert netfilter_backend(configured) == configured


def test_every_user_gets_the_same_default(tools: str) -> None:
    assert masq.resolve_backend(None) == tools
    assert PortMapConfig.load({"type": "portmap"}, {}).backend == tools
    assert type(firewall_backend(_firewall_args({}))).__name__.lower().startswith(tools)
    # podman writes "backend": "" for firewall: no backend.
    assert type(firewall_backend(_firewall_args({"backend": ""}))).__name__.lower() \
        .startswith(tools)


@pytest.mark.parametrize("configured", ["iptables", "nftables"])
def test_every_user_honours_the_configured_backend(tools: str, configured: str) -> None:
    del tools
    assert masq.resolve_backend(configured) == configured
    assert PortMapConfig.load({"type": "portmap", "backend": configured}, {}).backend \
        == configured
    fw = firewall_backend(_firewall_args({"backend": configured}))
    assert type(fw).__name__.lower().startswith(configured)


def test_probes_look_at_the_real_tools() -> None:
    assert _backend.iptables_available() == (4 in _xtables.families())
    assert _backend.nftables_available() == _nft.available()
