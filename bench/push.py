"""HTTP push through the real service: how long a platform waits for its answer (which comes
only after the journal commit, fsync included), and how many pushed messages a second the
service journals.

``python -m bench.push [--pushes 300] [--bodies 40] [--threads 8]`` starts its own Mosquitto and
``jiayuan run`` in a temporary directory and prints
``push_p50_ms=X push_p99_ms=Y push_msgs_per_s=N``: the first two over ``--pushes`` sequential
pushes of one fall each, the last over ``--threads`` platforms each pushing ``--bodies`` bodies of
100 telemetry messages at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from devtools.broker import Broker
from devtools.launch import ServiceProcess


def _body(prefix: str, n: int) -> bytes:
    return json.dumps(
        [
            {
                "message_id": f"{prefix}-{i}",
                "topic": f"community/y/wearable/bp-{i % 50}/telemetry",
                "payload": {"heart_rate": 60 + i % 40, "steps": i, "worn": True},
            }
            for i in range(n)
        ]
    ).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.push")
    ap.add_argument("--pushes", type=int, default=300)
    ap.add_argument("--bodies", type=int, default=40)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jiayuan-bench-push-") as tmp:
        work = Path(tmp)
        (work / "integrations.yaml").write_text(
            'integrations:\n  - id: bench\n    devices: ["*"]\n'
        )
        broker = Broker(work / "mosquitto").start()
        svc = ServiceProcess(work / "service", broker, integrations=work / "integrations.yaml")
        svc.start()
        try:
            token = (
                subprocess.run(
                    [sys.executable, "-m", "jiayuan.cli", "push", "token", "bench"],
                    env=svc.env,
                    check=True,
                    capture_output=True,
                )
                .stdout.decode()
                .strip()
            )
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            url = f"{svc.url}/api/push/bench"
            waits = []
            with httpx.Client(headers=headers, timeout=30) as c:
                for i in range(args.pushes):
                    fall = {
                        "message_id": f"fall-{i}",
                        "topic": f"community/y/wearable/bf-{i}/event",
                        "payload": {"event": "fall"},
                    }
                    t0 = time.perf_counter()
                    c.post(url, content=json.dumps(fall)).raise_for_status()
                    waits.append(time.perf_counter() - t0)
            waits.sort()
            p50 = statistics.median(waits) * 1000
            p99 = waits[min(len(waits) - 1, round(0.99 * len(waits)))] * 1000

            def platform(k: int) -> None:
                with httpx.Client(headers=headers, timeout=60) as c:
                    for b in range(args.bodies):
                        c.post(url, content=_body(f"p{k}-{b}", 100)).raise_for_status()

            threads = [threading.Thread(target=platform, args=(k,)) for k in range(args.threads)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = args.threads * args.bodies * 100 / (time.perf_counter() - t0)
        finally:
            svc.stop()
            broker.stop()
    print(f"push_p50_ms={p50:.1f} push_p99_ms={p99:.1f} push_msgs_per_s={rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
