"""A device's partition: a stable hash of its id, the same in every process and release.

Python's ``hash()`` of a string changes from one process to the next (PYTHONHASHSEED), so it
cannot place a device: BLAKE2b's first eight bytes do. The number of partitions is fixed for an
installation (the leases table's rows): more partitions than instances, so that a dead
instance's share spreads over all the others; 64 is plenty for tens of instances.
"""

from __future__ import annotations

import hashlib

DEFAULT_PARTITIONS = 64


def partition_of(device_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition, 0 to ``partitions - 1``, of ``device_id``."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions
