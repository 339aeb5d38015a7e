"""Netfilter: the one nft driver, the one xtables runner, the default backend, and their users.

* nftables goes through libnftables' JSON API (``nft -j -f -`` when the library is missing):
  :func:`nft_json`, :class:`NftError`.
* iptables goes through its executables, the nat table in save/restore batches.
* :func:`netfilter_backend` picks ``iptables`` or ``nftables`` as the reference plugins do,
  for each of the three backend families below.
* :mod:`.masq` (``ipMasq``), :mod:`.portmap` (host port DNAT) and :mod:`.firewall` (forward
  filter) are each a Protocol with an ``iptables`` and an ``nftables`` implementation and a
  ``BACKENDS`` registry; the bridge's MAC spoof check is nftables only.

Names are imported from their submodule on first use, as in :mod:`pycni.host`.
"""

from __future__ import annotations

from ..._lazy import lazy_package

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import firewall, masq, portmap
    from ._backend import netfilter_backend
    from ._listing import RuleLine, rules_mentioning
    from ._nft import NftError, nft_json
    from ._spoofcheck import setup_spoofcheck, spoofcheck_present, teardown_spoofcheck

#: Public name -> the submodule that defines it (the three subpackages load by their name).
_LAZY = {
    "NftError": "_nft",
    "RuleLine": "_listing",
    "rules_mentioning": "_listing",
    "netfilter_backend": "_backend",
    "nft_json": "_nft",
    "setup_spoofcheck": "_spoofcheck",
    "spoofcheck_present": "_spoofcheck",
    "teardown_spoofcheck": "_spoofcheck",
}

__all__ = [
    "NftError",
    "RuleLine",
    "firewall",
    "masq",
    "netfilter_backend",
    "nft_json",
    "portmap",
    "rules_mentioning",
    "setup_spoofcheck",
    "spoofcheck_present",
    "teardown_spoofcheck",
]

__getattr__, __dir__ = lazy_package(__name__, _LAZY, __all__)
