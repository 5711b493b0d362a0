"""The ingest pipeline's own CPU per message, the journal left out: decode, the split into
readings and dead letters, acknowledging, counting (the metrics) and handing on — what
``Pipeline.process`` spends around ``Journal.write_batch``, which a stand-in answers at once.

``python -m bench.pipeline [--batch 1000] [--dead 0.01]`` prints ``pipeline_us=X decode_us=Y``
(best of 5 runs, in CPU time: the machine is shared); ``X - Y`` is the pipeline without decode.
"""

from __future__ import annotations

import argparse
import logging
import queue
import time
from collections.abc import Iterable, Sequence

from bench.decode import NOW, POISON, TYPICAL
from ingest.journal import BatchResult
from ingest.listener import Inbound
from ingest.payloads import DeadLetter, Reading, decode
from ingest.pipeline import Pipeline


class _NoJournal:
    """Takes every batch at once: every reading new, nothing written anywhere."""

    def write_batch(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> BatchResult:
        return BatchResult(list(readings), 0, len(dead), 0.0)


def _ack(batch: Iterable[Inbound]) -> None:
    pass


def _batch(size: int, dead: float) -> list[Inbound]:
    every = round(1 / dead) if dead > 0 else 0
    out = []
    for i in range(size):
        poison = every and i % every == every - 1
        topic, payload = POISON[i % len(POISON)] if poison else TYPICAL[i % len(TYPICAL)]
        out.append(Inbound(topic, payload, i, 1, False, NOW))
    return out


def _best(fn: object, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--dead", type=float, default=0.01, help="share of poison messages")
    a = ap.parse_args()
    logging.getLogger("ingest").setLevel(logging.ERROR)  # the dead letters' warnings
    batch = _batch(a.batch, a.dead)
    p = Pipeline(queue.Queue(), _NoJournal(), _ack, lambda readings: None)  # type: ignore[arg-type]
    n = a.batch * a.batches

    def pipeline() -> None:
        for _ in range(a.batches):
            p.process(batch)

    def decoding() -> None:
        for _ in range(a.batches):
            for m in batch:
                decode(m.topic, m.payload, m.received)

    print(f"pipeline_us={_best(pipeline, n):.2f} decode_us={_best(decoding, n):.2f}")


if __name__ == "__main__":
    main()
