"""Which netfilter backend a plugin uses: one decision for portmap, ipMasq and firewall.

The reference plugins prefer iptables (through iptables-legacy or iptables-nft alike) and
fall back to nftables only when iptables cannot be used; a config that names a backend
(``backend``, ``ipMasqBackend``) gets that one. Each caller validates the configured name
itself, so that its error names its own key.
"""

from __future__ import annotations

from . import _nft, _xtables


def iptables_available() -> bool:
    """True if the IPv4 iptables save/restore tools are installed (what our backends run)."""
    return 4 in _xtables.families()


def nftables_available() -> bool:
    """True if nftables can be driven here (libnftables or the ``nft`` executable)."""
    return _nft.available()


def netfilter_backend(configured: str | None = None) -> str:
    """The backend to use: ``configured`` when the config names one, else the default.

    The default is the reference's: ``iptables`` when its tools are installed, ``nftables``
    when only nftables is, and ``iptables`` when neither is (its error then names the
    missing tools).
    """
    if configured:
        return configured
    if not iptables_available() and nftables_available():
        return "nftables"
    return "iptables"
