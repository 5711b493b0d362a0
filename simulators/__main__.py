"""``python -m simulators``: the same as ``jiayuan simulate``."""

from __future__ import annotations

import argparse
import sys

from simulators.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Play the simulated community (gates, smoke detectors, wearables) into MQTT.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
