"""Pool `gwp eval` reports of one policy run in parts (task subsets, or disjoint seed ranges) into one table.

    python scripts/pool_eval.py study/mt10_ac/eval10a/report.json study/mt10_ac/eval10b/report.json ...

Prints, per task, successes / episodes with the Wilson 95% interval, then the mean over tasks with the pooled
interval (as ``gwp eval`` reports them), and the table row for docs/results.md. Refuses reports of different
checkpoints and an episode (task, seed) counted twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gigaworld_policy.sim.common import wilson_interval


def main(paths: list[str]) -> None:
    tasks: dict[str, dict[int, bool]] = {}
    checkpoints = set()
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        checkpoint = report.get("checkpoint") or Path(path).resolve().parent.parent / "run"
        checkpoints.add(str(Path(checkpoint).resolve()))
        for task, r in report["per_task"].items():
            seen = tasks.setdefault(task, {})
            for seed, ok in zip(r["seeds"], r["episode_success"], strict=True):
                if seed in seen:
                    sys.exit(f"{path}: {task} seed {seed} is in an earlier report too")
                seen[seed] = bool(ok)
    if len(checkpoints) != 1:
        sys.exit(f"reports of different checkpoints: {sorted(checkpoints)}")
    cells, total, n_total = [], 0, 0
    for task, seen in tasks.items():
        k, n = sum(seen.values()), len(seen)
        lo, hi = wilson_interval(k, n)
        print(f"{task:28s} {k:3d}/{n:3d} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]")
        cells.append(f"{k / n:.2f}")
        total, n_total = total + k, n_total + n
    lo, hi = wilson_interval(total, n_total)
    print(f"{'mean':28s} {total:3d}/{n_total:3d} = {total / n_total:.3f} [{lo:.2f}, {hi:.2f}] (pooled)")
    print("| " + " | ".join(cells) + f" | **{total / n_total:.2f}** [{lo:.2f}, {hi:.2f}] |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
