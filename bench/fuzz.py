"""Long fuzz profile: ``python bench/fuzz.py --minutes 10`` runs the invariants of tests/test_fuzz.py on
freshly drawn datasets until the time is up, then prints how many cases were tried and how they ended.

Cases are drawn in rounds of ``--round`` examples, each round with its own Hypothesis seed (``--seed``
+ round number), so a run is reproducible from its seed and the time limit is checked between rounds
(never by raising inside a test, which Hypothesis would shrink as a failure). A broken invariant stops
the run; Hypothesis prints the minimal case and the seed to reproduce it."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_fuzz import Planted, check_case, datasets  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round", type=int, default=50, help="examples per Hypothesis round")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # pydicom's length warnings on deliberately over-long values
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    counts: Counter[str] = Counter()
    work = Path(tempfile.mkdtemp(prefix="deidflow-fuzz-"))
    rounds = 0
    while time.monotonic() < deadline:
        round_seed = args.seed + rounds

        @seed(round_seed)
        @settings(max_examples=args.round, deadline=None, database=None,
                  phases=[Phase.generate, Phase.shrink],  # no 'explain': it traces, ~10x slower
                  suppress_health_check=list(HealthCheck))
        @given(case=datasets())
        def run(case: Planted) -> None:
            counts["tried"] += 1
            counts[check_case(case, work, counts["tried"])] += 1
            if counts["tried"] % 500 == 0:
                print(f"  {counts['tried']} cases, {(time.monotonic() - t0) / 60:.1f} min", flush=True)

        try:
            run()
        except Exception as exc:  # a falsified invariant: show it with Hypothesis' minimal case
            print(f"invariant broken in round seed {round_seed} after {counts['tried']} cases: "
                  f"{type(exc).__name__}: {str(exc)[:2000]}")
            for note in getattr(exc, "__notes__", []):
                print(note)
            print(dict(counts))
            return 1
        rounds += 1
    took = (time.monotonic() - t0) / 60
    print(f"cases tried: {counts['tried']} in {took:.1f} min ({rounds} rounds of up to {args.round}, "
          f"seeds {args.seed}..{args.seed + rounds - 1}); " +
          ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "tried"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
