"""MQTT PUBLISH packets read straight from a receive buffer: the one loop that runs once per
device message on the receiving side, kept apart so that it can be compiled.

:func:`publishes` is plain typed Python. ``make`` (its ``venv`` step, devtools/compile.py)
compiles this module with mypyc into a C extension beside it, which Python imports instead of
this file: ~0.07 µs a packet against ~0.58 as Python, and the receive path's Python work as a
whole 0.35 µs a message against 0.89 (``python -m bench.receive``, 2026-12-05). Where it is
not compiled (no C compiler, ``pip install`` alone) this file runs, with the same answers:
``tests/unit/test_compiled.py`` runs both on generated packets, and fails when the compiled
one is not the one imported.
"""

from __future__ import annotations

Publish = tuple[bytes, bytes, int, int, bool]
"""A PUBLISH read on the fast path: (topic, payload, message id, QoS, retain)."""


def publishes(buf: bytes, pos: int, got: list[Publish]) -> int:
    """Append to ``got`` every complete QoS 0/1 PUBLISH without properties in ``buf`` from
    ``pos`` on (MQTT 5: fixed header, topic, message id, a property length of zero, payload),
    stopping at anything else: another packet, properties, QoS 2, an incomplete or malformed
    packet. Returns where it stopped."""
    end = len(buf)
    while pos < end:
        command = buf[pos]
        if command & 0xF0 != 0x30 or command & 0x06 > 0x02:
            break  # not a PUBLISH, or QoS 2
        length = 0
        mult = 1
        i = pos + 1
        complete = False
        while i < end and i - pos <= 4:
            byte = buf[i]
            length += (byte & 127) * mult
            mult <<= 7
            i += 1
            if byte < 128:
                complete = True
                break
        if not complete:
            break  # incomplete length, or malformed
        stop = i + length
        if stop > end:
            break  # the rest of it is still on its way
        j = i + 2 + (buf[i] << 8 | buf[i + 1]) if i + 2 <= stop else stop + 1
        topic = buf[i + 2 : j]
        qos = command >> 1 & 3
        mid = 0
        if qos:
            mid = buf[j] << 8 | buf[j + 1] if j + 2 <= stop else 0
            j += 2
        if j >= stop or buf[j] != 0:
            break  # properties (paho parses them), or malformed
        pos = stop
        got.append((topic, buf[j + 1 : stop], mid, qos, command & 1 == 1))
    return pos
