"""Names of netfilter objects derived from what they belong to (network, container).

The reference plugins name per-attachment chains and rules by a prefix and the first hex
digits of a sha512; both backends of masquerade and portmap use the same scheme, so rules
from the Go plugins and from pycni name the same attachment alike.
"""

from __future__ import annotations

import hashlib


def hash_with_prefix(length: int, prefix: str, to_hash: str) -> str:
    """``prefix`` followed by sha512 hex digits of ``to_hash``, exactly ``length`` long."""
    if len(prefix) >= length or length > 128:
        raise ValueError(f"cannot make a {length}-character name with prefix {prefix!r}")
    return (prefix + hashlib.sha512(to_hash.encode()).hexdigest())[:length]


__all__ = ["hash_with_prefix"]
