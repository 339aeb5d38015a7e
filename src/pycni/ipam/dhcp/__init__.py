"""DHCP for pod interfaces: the client state machine, its wire format and its lease store.

The pieces, bottom up:

- :mod:`._packet`: DHCP messages and options as bytes (no I/O);
- :mod:`._transport`: a packet socket opened inside the pod's namespace;
- :mod:`._client`: the exchanges (acquire, renew, rebind, reboot, release) and :class:`Lease`;
- :mod:`._keeper`: one thread per lease renewing at T1, rebinding at T2, expiring;
- :mod:`._store`: lease records on disk, for a daemon restart;
- :mod:`._config`: the ``ipam`` section (socket path, ``request``/``provide``, ``priority``);
- :mod:`._protocol`: the plugin <-> daemon messages over the unix socket.

The daemon itself (the socket server and the lease table) is :mod:`pycni.daemon.dhcp`; the
plugin is :mod:`pycni.plugins.ipam.dhcp`.
"""

from ._client import DhcpClient, Lease, Nak, Timing
from ._config import (
    DEFAULT_REQUEST,
    DEFAULT_SOCKET_PATH,
    OPTION_NAMES,
    DhcpIpamConfig,
    client_id,
    parse_option,
)
from ._keeper import Attachment, LeaseKeeper, State
from ._packet import Message
from ._protocol import MAX_MESSAGE, DaemonUnreachable, call_daemon, error_reply, read_all
from ._store import DEFAULT_STATE_DIR, LeaseRecord, LeaseStore
from ._transport import Link, LinkGone, NetnsLink, PacketTransport, Transport

__all__ = [
    "DEFAULT_REQUEST",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_STATE_DIR",
    "MAX_MESSAGE",
    "OPTION_NAMES",
    "Attachment",
    "DaemonUnreachable",
    "DhcpClient",
    "DhcpIpamConfig",
    "Lease",
    "LeaseKeeper",
    "LeaseRecord",
    "LeaseStore",
    "Link",
    "LinkGone",
    "Message",
    "Nak",
    "NetnsLink",
    "PacketTransport",
    "State",
    "Timing",
    "Transport",
    "call_daemon",
    "client_id",
    "error_reply",
    "parse_option",
    "read_all",
]
