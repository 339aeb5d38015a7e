"""Netfilter: the one nft driver, the one xtables runner, the default backend, and their users.

* nftables goes through libnftables' JSON API (``nft -j -f -`` when the library is missing):
  :func:`nft_json`, :class:`NftError`.
* iptables goes through its executables, the nat table in save/restore batches.
* Concurrent calls' nat-table and nftables writes in one namespace are merged into one
  transaction per burst (:mod:`pycni.host._burst`); :func:`nat_counters` and
  :func:`nft_counters` tell how (as :class:`pycni.host.BurstCounters`).
* :func:`netfilter_backend` picks ``iptables`` or ``nftables`` as the reference plugins do,
  for each of the three backend families below.
* :mod:`.masq` (``ipMasq``), :mod:`.portmap` (host port DNAT) and :mod:`.firewall` (forward
  filter) are each a Protocol with an ``iptables`` and an ``nftables`` implementation and a
  ``BACKENDS`` registry; the bridge's MAC spoof check is nftables only.

The public names are listed once, as the imports under ``if TYPE_CHECKING:`` below, and
imported from their submodule on first use, as in :mod:`pycni.host`.
"""
# mypy: implicit-reexport
# ruff: noqa: F401

from ..._lazy import lazy_init

# A plain constant rather than typing's: importing typing costs a plugin start ~10 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import firewall, masq, portmap
    from ._backend import netfilter_backend
    from ._listing import RuleLine, rules_mentioning
    from ._nft import NftError, nft_counters, nft_json
    from ._spoofcheck import setup_spoofcheck, spoofcheck_present, teardown_spoofcheck
    from ._xtables import nat_counters

__getattr__, __dir__, __all__ = lazy_init(__name__, __file__)
