"""Cluster backends: how a node reaches the other nodes' pod subnets.

- ``vxlan`` (:class:`VxlanBackend`): a VXLAN overlay in flannel's layout;
- ``host-gw`` (:class:`HostGwBackend`): plain routes via the peers' underlay addresses.

The agent builds one with :func:`load_backend` from the config's ``"backend"`` object,
calls :meth:`~Backend.setup` with the :class:`LocalNode`, publishes the returned peer data
through its datastore, calls :meth:`~Backend.reconcile` with the datastore's peers on every
update and on a timer, and :meth:`~Backend.teardown` when it is uninstalled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...spec import InvalidNetworkConfig
from ._base import Backend, LocalNode, ReconcileReport, check_options
from .hostgw import HostGwBackend
from .vxlan import VxlanBackend

#: The backends by their ``type`` name.
BACKENDS: dict[str, type[VxlanBackend] | type[HostGwBackend]] = {
    "host-gw": HostGwBackend,
    "vxlan": VxlanBackend,
}

#: flannel's spelling of the backend keys (etcd's network config holds them so).
_FLANNEL_KEYS = {"Type": "type", "VNI": "vni", "Port": "port"}


def load_backend(options: Mapping[str, Any] | str) -> Backend:
    """The backend a config's ``"backend"`` selects: a name or ``{"type": name, ...}``.

    flannel's spelling (``{"Type": "vxlan", "VNI": 1, "Port": 8472}``) is read too.
    Raises InvalidNetworkConfig naming the field for an unknown type, an option of another
    backend, an unknown option or a bad value.
    """
    if isinstance(options, str):
        options = {"type": options}
    if not isinstance(options, Mapping):
        raise InvalidNetworkConfig(
            f'invalid "backend": expected an object like {{"type": "vxlan"}}, '
            f"got {options!r}")
    options = {_FLANNEL_KEYS.get(k, k): v for k, v in options.items()}
    name = options.get("type", "vxlan")
    if name not in BACKENDS:
        valid = ", ".join(f'"{n}"' for n in sorted(BACKENDS))
        raise InvalidNetworkConfig(
            f'invalid "backend.type": expected one of {valid}, got {name!r}')
    cls = BACKENDS[name]
    check_options(name, options, cls.options,
                  {n: c.options for n, c in BACKENDS.items() if n != name})
    return cls.from_options(options)

__all__ = [
    "BACKENDS",
    "Backend",
    "HostGwBackend",
    "LocalNode",
    "ReconcileReport",
    "VxlanBackend",
    "load_backend",
]
