"""IP masquerade (source NAT) for the bridge and ptp plugins' ``ipMasq``.

Two backends write the reference plugins' rule layouts: ``iptables`` (a ``CNI-<hash>`` chain
per attachment in the ``nat`` table, via iptables-restore) and ``nftables`` (rules in
``inet cni_plugins_masquerade``, via libnftables' JSON API). The config key
``ipMasqBackend`` picks one; without it the reference default applies: iptables, unless only
nftables is available. Teardown and GC look in both, so switching backends leaks nothing.

Every function acts on the calling thread's network namespace (the plugin's host netns).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ....spec import InvalidNetworkConfig, KernelError
from .._backend import netfilter_backend
from ._base import IPInterface, MasqBackend, chain_comment, chain_name
from .iptables import IPTablesMasq
from .nftables import NFTablesMasq

#: The masquerade backends by their ``ipMasqBackend`` name.
BACKENDS: dict[str, type[MasqBackend]] = {
    "iptables": IPTablesMasq,
    "nftables": NFTablesMasq,
}


def resolve_backend(requested: str | None) -> str:
    """The backend to use for an ``ipMasqBackend`` value (None or "" for the default).

    The default is :func:`~pycni.host.netfilter_backend`'s (the reference's: iptables unless
    only nftables is installed). An unknown name is an InvalidNetworkConfig naming the valid
    ones.
    """
    if requested and requested not in BACKENDS:
        valid = ", ".join(f'"{name}"' for name in sorted(BACKENDS))
        raise InvalidNetworkConfig(
            f"ipMasqBackend {requested!r} is not supported (valid: {valid})")
    return netfilter_backend(requested)


def setup_ip_masq(backend: str | None, network: str, container_id: str, ifname: str,
                  ips: Sequence[IPInterface]) -> None:
    """Masquerade traffic from ``ips`` leaving their subnets, for one attachment.

    ``backend`` is an ``ipMasqBackend`` value (see :func:`resolve_backend`). Calling it again
    replaces the attachment's rules. Raises KernelError naming the table/chain on failure.
    """
    BACKENDS[resolve_backend(backend)]().setup(network, container_id, ifname, list(ips))


def _in_every_backend(action: str, call: str, *args: object) -> None:
    errors = []
    for name, cls in sorted(BACKENDS.items()):
        if not cls.available():
            continue
        try:
            getattr(cls(), call)(*args)
        except KernelError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise KernelError(f"failed to {action}", "; ".join(errors))


def teardown_ip_masq(backend: str | None, network: str, container_id: str, ifname: str,
                     ips: Sequence[IPInterface] | None = None) -> None:
    """Remove one attachment's masquerade rules from both backends; idempotent.

    ``ips`` is accepted for symmetry but not needed: rules are found by their
    network/container/ifname identity, so a DEL without a prevResult or netns still cleans
    up. ``backend`` is validated only; both backends are cleaned in case it changed.
    """
    del ips
    resolve_backend(backend)
    _in_every_backend(f"remove masquerading for container {container_id!r} "
                      f"({ifname}) on network {network!r}",
                      "teardown", network, container_id, ifname)


def gc_ip_masq(network: str, valid: Iterable[tuple[str, str]]) -> None:
    """Remove masquerade rules of ``network`` whose (container id, ifname) is not in ``valid``."""
    _in_every_backend(f"garbage-collect masquerading of network {network!r}",
                      "gc", network, frozenset(valid))


__all__ = [
    "BACKENDS",
    "IPTablesMasq",
    "MasqBackend",
    "NFTablesMasq",
    "chain_comment",
    "chain_name",
    "gc_ip_masq",
    "resolve_backend",
    "setup_ip_masq",
    "teardown_ip_masq",
]
