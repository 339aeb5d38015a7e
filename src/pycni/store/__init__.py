"""State on disk, at the bottom of the house: atomic writes, name fitting, per-attachment records.

Nothing here knows CNI: failures are ``OSError`` and each caller says what they mean.
:func:`atomic_write` replaces a file so a reader sees the old or the new one, never half;
:func:`fit_name` keeps a file name keyed by a container ID within ``NAME_MAX``;
:class:`RecordStore` keeps one JSON record per (container ID, interface) in a directory.
"""

from ._files import HASH_MARK, HASHED_PREFIX_BYTES, NAME_MAX, atomic_write, fit_name, is_hashed
from ._records import RecordStore

__all__ = [
    "HASHED_PREFIX_BYTES",
    "HASH_MARK",
    "NAME_MAX",
    "RecordStore",
    "atomic_write",
    "fit_name",
    "is_hashed",
]
