"""Long fuzz profile: ``python bench/fuzz.py --minutes 10`` runs the invariants of tests/test_fuzz.py on
freshly drawn datasets until the time is up, then prints how many cases were tried and how they ended."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_fuzz import Planted, check_case, datasets  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.minutes * 60
    counts: Counter[str] = Counter()
    work = Path(tempfile.mkdtemp(prefix="deidflow-fuzz-"))

    class TimeUp(Exception):
        pass

    @settings(max_examples=10**9, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=datasets())
    def run(case: Planted) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        counts["tried"] += 1
        counts[check_case(case, work, counts["tried"])] += 1

    try:
        run()
    except TimeUp:
        pass
    except Exception as exc:  # a falsified invariant: hypothesis printed the minimal case
        print(f"invariant broken after {counts['tried']} cases: {type(exc).__name__}")
        print(dict(counts))
        return 1
    print(f"cases tried: {counts['tried']} in {args.minutes} min; " +
          ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "tried"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
