"""``jiayuan rules check FILE...``: validate rule files and say what is wrong, file by file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from rules.model import builtin_pack, read_rule_files

__all__ = ["check_files", "main"]


def check_files(paths: Iterable[str | Path]) -> tuple[int, list[str]]:
    """(number of valid rules, error lines) over ``paths``; duplicate ids across files count."""
    results = read_rule_files(paths)
    return sum(len(r.rules) for r in results), [e for r in results for e in r.errors]


def main(paths: list[str]) -> int:
    """Check ``paths`` (the built-in pack when empty): ``OK: N rules in FILE`` on stdout per good
    file, errors on stderr; 0 when every file is valid, else 1."""
    results = read_rule_files(paths or [builtin_pack()])
    for res in results:
        if res.errors:
            for line in res.errors:
                print(line, file=sys.stderr)
        else:
            print(f"OK: {len(res.rules)} rules in {res.path}")
    bad = sum(1 for r in results if r.errors)
    if bad:
        errors = sum(len(r.errors) for r in results)
        print(f"{errors} error(s) in {bad} file(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
