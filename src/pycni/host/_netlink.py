"""The one hand-written netlink encoder: attributes, and a raw socket for one request.

For the few messages pyroute2 cannot encode (IFLA_MACVLAN_BC_QUEUE_LEN in 0.9) or cannot
send cheaply (ctnetlink: importing pyroute2's conntrack module costs about 250 ms, most of
a plugin call). Everything else goes through pyroute2 (:func:`~pycni.host.links.rtnl`).
The socket is made in the calling thread, so inside ``NetNS.call`` it talks to that
thread's namespace.
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py (and selectors) cost a start ~3 ms
import errno
import os
import struct
from collections.abc import Iterator

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000

_NLMSGHDR = struct.Struct("=IHHII")
#: MSG_TRUNC: recv returns the datagram's real length, also when it did not fit.
_TRUNC = 0x20
#: One datagram's most: the kernel sizes a dump's parts by the largest buffer a reader has
#: offered, at most 32 KiB (netlink_recvmsg caps max_recvmsg_len), and a single answer
#: (one link without its VF list, an address, a route) is a few KiB.
_BUFSIZE = 32768
#: Receive buffers reused by every socket and thread, so a request allocates none.
_buffers: list[bytearray] = []
_KEEP_BUFFERS = 32


def nlattr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nlattrs(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(type without flags, payload, the whole attribute) for each attribute in ``data``."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length], data[offset:offset + length]
        offset += (length + 3) & ~3


def message(msg_type: int, flags: int, payload: bytes, seq: int = 1) -> bytes:
    """One netlink message: the nlmsghdr (``flags`` as given) and ``payload``."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


class NetlinkSocket:
    """A raw netlink socket: one request at a time, replies until DONE or the ACK.

    Small on purpose (a few messages per plugin call); errors come back as OSError.
    """

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes) -> list[bytes]:
        """Send one message; return the payloads of the replies (dump parts or the answer)."""
        self.seq += 1
        self.sock.send(message(msg_type, NLM_F_REQUEST | flags, payload, self.seq))
        # One recv per datagram into a pooled buffer (a peek for the size and a recv of that
        # size was two system calls); only the bodies are copied out. A fresh buffer per
        # request would be the malloc churn that fragmented glibc's arenas (the agent's RSS
        # crept over thousands of ADD/DEL cycles with no Python object leaking).
        try:
            buf = _buffers.pop()
        except IndexError:
            buf = bytearray(_BUFSIZE)
        try:
            return self._replies(buf, flags)
        finally:
            if len(_buffers) < _KEEP_BUFFERS:
                _buffers.append(buf)

    def _replies(self, buf: bytearray, flags: int) -> list[bytes]:
        replies: list[bytes] = []
        view = memoryview(buf)
        while True:
            size = self.sock.recv_into(buf, _BUFSIZE, _TRUNC)
            if size > _BUFSIZE:
                raise OSError(errno.EMSGSIZE, f"netlink reply of {size} bytes is larger than "
                                              f"the {_BUFSIZE} bytes expected, and was lost")
            offset = 0
            while offset + _NLMSGHDR.size <= size:
                length, kind, _, seq, _ = _NLMSGHDR.unpack_from(buf, offset)
                if length < _NLMSGHDR.size:
                    return replies
                body = bytes(view[offset + _NLMSGHDR.size:min(offset + length, size)])
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_DONE:
                    return replies
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return replies  # the ACK
                replies.append(body)
                if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                    return replies  # a plain request has exactly one answer
