"""Pool `gwp eval` reports of one policy run in parts (task subsets, or disjoint seed ranges) into one table.

    python scripts/pool_eval.py study/mt10_ac/eval10a/report.json study/mt10_ac/eval10b/report.json ...

Prints, per task, successes / episodes with the Wilson 95% interval, then the mean over tasks with the pooled
interval (as ``gwp eval`` reports them), and the table row for docs/results.md. Refuses reports of different
checkpoints and an episode (task, seed) counted twice.

    python scripts/pool_eval.py A_REPORTS... --paired B_REPORTS...

compares two runs on the episodes (task, seed) both were evaluated on: per task and in all, how many succeed
in both, only in A, only in B, and the exact two-sided McNemar p-value (a binomial test on the discordant
episodes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gigaworld_policy.sim.common import wilson_interval


def _checkpoint(path: str, report: dict) -> str:
    if "pooled_from" in report:  # a --save record: its checkpoint path is from the machine it was run on
        return report["checkpoint"]
    checkpoint = report.get("checkpoint") or Path(path).resolve().parent.parent / "run"
    return str(Path(checkpoint).resolve())


def load(paths: list[str]) -> dict[str, dict[int, bool]]:
    """task -> {eval seed: success}, from the reports of one checkpoint."""
    tasks: dict[str, dict[int, bool]] = {}
    checkpoints = set()
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        if "per_task" not in report:
            sys.exit(f"{path}: no 'per_task' field; not a gwp eval report.json or a --save record")
        checkpoints.add(_checkpoint(path, report))
        for task, r in report["per_task"].items():
            seen = tasks.setdefault(task, {})
            for seed, ok in zip(r["seeds"], r["episode_success"], strict=True):
                if seed in seen:
                    sys.exit(f"{path}: {task} seed {seed} is in an earlier report too")
                seen[seed] = bool(ok)
    if len(checkpoints) != 1:
        sys.exit(f"reports of different checkpoints: {sorted(checkpoints)}")
    return tasks


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the discordant episodes as fair coin flips."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def paired(a_paths: list[str], b_paths: list[str]) -> None:
    a, b = load(a_paths), load(b_paths)
    totals = [0, 0, 0, 0]
    for task in a:
        seeds = sorted(set(a[task]) & set(b.get(task, {})))
        both = sum(a[task][s] and b[task][s] for s in seeds)
        only_a = sum(a[task][s] and not b[task][s] for s in seeds)
        only_b = sum(b[task][s] and not a[task][s] for s in seeds)
        print(f"{task:28s} {len(seeds):3d} episodes: both {both:3d}, only A {only_a:3d}, only B {only_b:3d}, "
              f"p = {mcnemar_p(only_a, only_b):.2g}")
        totals = [t + v for t, v in zip(totals, (len(seeds), both, only_a, only_b))]
    n, both, only_a, only_b = totals
    if n == 0:
        sys.exit("the two runs share no evaluated episode (task, seed)")
    print(f"{'all':28s} {n:3d} episodes: A {both + only_a}, B {both + only_b}; both {both}, only A {only_a}, "
          f"only B {only_b}; exact McNemar p = {mcnemar_p(only_a, only_b):.2g}")


def save(paths: list[str], tasks: dict[str, dict[int, bool]], out: Path) -> None:
    """The pooled per-episode outcomes, in the report schema, with where each part came from and how the
    checkpoint was made (``training``: its config and its run's provenance.json, see gigaworld_policy.provenance;
    None when the checkpoint is not on this machine)."""
    parts = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        parts.append({"report": path, "git_commit": report.get("git_commit"), "env": report.get("env"),
                      "replan_every": report.get("replan_every"), "ensemble_coef": report.get("ensemble_coef"),
                      "noise_scale": report.get("noise_scale"), "num_steps": report.get("num_steps"),
                      "latency_ms_median": report.get("latency_ms", {}).get("median")})
    per_task = {}
    for task, seen in tasks.items():
        seeds = sorted(seen)
        per_task[task] = {"seeds": seeds, "episode_success": [seen[s] for s in seeds],
                          "successes": sum(seen.values()), "episodes": len(seeds)}
    with open(paths[0]) as f:
        checkpoint = _checkpoint(paths[0], json.load(f))
    from gigaworld_policy.checkpoint import CheckpointError  # imports torch: only --save pays for it
    from gigaworld_policy.provenance import describe_checkpoint

    try:  # how the checkpoint was made (config, data and its collection, commits): the record outlives the run
        training = describe_checkpoint(checkpoint)
    except CheckpointError as e:
        print(f"note: the record says nothing of how the checkpoint was made ({e})", file=sys.stderr)
        training = None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": checkpoint, "pooled_from": parts, "per_task": per_task,
                               "training": training}) + "\n")
    print(f"wrote {out}")


def main(paths: list[str], save_to: Path | None = None) -> None:
    tasks = load(paths)
    if save_to is not None:
        save(paths, tasks, save_to)
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="report.json files of one checkpoint (A)")
    parser.add_argument("--paired", nargs="+", metavar="REPORT", help="report.json files of another checkpoint (B)")
    parser.add_argument("--save", type=Path, metavar="JSON", help="also write the pooled per-episode outcomes here")
    args = parser.parse_args()
    if args.paired and args.save:
        parser.error("--save pools one run; it does not go with --paired")
    if args.paired:
        paired(args.reports, args.paired)
    else:
        main(args.reports, args.save)
