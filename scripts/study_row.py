"""One row of the simulation study (issue 8, docs/results.md), one command: collect the demonstrations
(when the data folder does not exist yet), train, evaluate in closed loop in parallel calls, pool.

    python scripts/study_row.py --env metaworld-goal --data study/mt10_goal/data --out study/mt10_goal_3k \
        [--set model.aux_dim=3 ...]

The defaults are the MT10 rows': 25 scripted demonstrations per task with the `workspace` camera,
`cpu-small` for 3,000 steps on two threads, then 50 episodes per task (seeds 0-49, that is simulator
seeds 1,000,000 onward) split into calls of 10 episodes and 5 tasks, run two at a time on one thread each
(RUN_eval/s{SEED}{a,b,...}/report.json), then `pool_eval.py` over the calls (`--record docs/study/ROW.json`
keeps the pooled per-episode outcomes, the part of a row worth committing: run folders do not outlive the
machine). Each stage whose output
exists is skipped: run the command again to continue a stopped row (training resumes from its latest
checkpoint, with that checkpoint's config; finished evaluation calls are kept).
"""

from __future__ import annotations

import argparse
import os
import string
import subprocess
import sys
import time
from pathlib import Path

from gigaworld_policy.sim.common import REACH_AIMS, SimError
from gigaworld_policy.sim.envs import resolve_tasks

POOL_EVAL = Path(__file__).resolve().parent / "pool_eval.py"
GWP = [sys.executable, "-m", "gigaworld_policy.cli"]  # `gwp`, from the interpreter running this script


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, help="simulation env (gwp eval --env), also used to collect")
    p.add_argument("--data", required=True,
                   help="LeRobot dataset, collected here when missing; or a mixture, roots comma-separated "
                        "(gwp train --data), all of which must exist")
    p.add_argument("--weights", default=None,
                   help="mixture weights, comma-separated, one per --data root (gwp train --weights)")
    p.add_argument("--out", required=True, type=Path, help="training run directory; evaluation goes to OUT_eval")
    p.add_argument("--tasks", nargs="+", default=["MT10"], help="task names and/or sets (default MT10)")
    p.add_argument("--demos", type=int, default=25, help="demonstrations per task, when collecting")
    p.add_argument("--cameras", nargs="+", default=["workspace"], help="cameras, when collecting")
    p.add_argument("--image-size", type=int, default=64, help="rendered image side, when collecting")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="when collecting: DART-style noise on the executed actions (gwp collect --action-noise)")
    p.add_argument("--start-jitter", type=float, default=0.0,
                   help="when collecting: scattered hand starts, metres (gwp collect --start-jitter)")
    p.add_argument("--reach-aim", default=REACH_AIMS[0], choices=list(REACH_AIMS),
                   help="when collecting: what the reach experts steer onto the goal (gwp collect --reach-aim; "
                        "hand, the default: Meta-World's shipped policy)")
    p.add_argument("--steps-after-success", nargs="+", default=["10"], metavar="N|TASK=N",
                   help="when collecting: frames recorded after the expert's success, N for every task and/or "
                        "TASK=N for one (gwp collect --steps-after-success; 10, the default, is what every row "
                        "before it recorded)")
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override for gwp train (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="training threads (OMP_NUM_THREADS)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    p.add_argument("--episodes-per-call", type=int, default=10)
    p.add_argument("--tasks-per-call", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2, help="evaluation calls at a time, one thread each")
    p.add_argument("--replan-every", type=int, default=8)
    p.add_argument("--ensemble-coef", type=float, default=None,
                   help="evaluate with temporal ensembling (gwp eval --ensemble-coef); default off")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="evaluate with this initial-noise scale (gwp eval --noise-scale); default 1")
    p.add_argument("--num-steps", type=int, default=None,
                   help="evaluate with this many sampler steps per chunk (gwp eval --num-steps); default: the "
                        "checkpoint's")
    p.add_argument("--eval-out", type=Path, default=None,
                   help="evaluation folder (default OUT_eval); another one evaluates a trained row another way")
    p.add_argument("--eval-max-steps", type=int, default=None, help="episode step limit (default: the env's)")
    p.add_argument("--record", type=Path, default=None, metavar="JSON",
                   help="also save the pooled per-episode outcomes here (pool_eval.py --save), e.g. "
                        "docs/study/ROW.json, to keep in the repository")
    args = p.parse_args(argv)
    for name in ("demos", "image_size", "steps", "threads", "episodes", "episodes_per_call", "tasks_per_call", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.episodes % args.episodes_per_call:
        p.error(f"--episodes {args.episodes} is not a multiple of --episodes-per-call {args.episodes_per_call}")
    return args


def _run(stage: str, cmd: list[str], threads: int, log: Path | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        code = subprocess.run(cmd, env=env).returncode
    else:
        with open(log, "w") as f:
            code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"study_row: {stage} failed (exit {code})" + (f"; log {log}" if log else ""))


def eval_calls(args: argparse.Namespace, tasks: list[str]) -> list[tuple[Path, list[str]]]:
    """(output folder, gwp eval command) of every evaluation call, in launch order."""
    groups = [tasks[i:i + args.tasks_per_call] for i in range(0, len(tasks), args.tasks_per_call)]
    if len(groups) > len(string.ascii_lowercase):
        raise SystemExit(f"--tasks-per-call {args.tasks_per_call}: {len(groups)} task groups, at most 26")
    calls = []
    for seed in range(0, args.episodes, args.episodes_per_call):
        for letter, group in zip(string.ascii_lowercase, groups):
            out = (args.eval_out or Path(f"{args.out}_eval")) / f"s{seed}{letter}"
            calls.append((out, [*GWP, "eval", "--checkpoint", str(args.out), "--env", args.env,
                                "--tasks", *group, "--episodes", str(args.episodes_per_call),
                                "--seed", str(seed), "--replan-every", str(args.replan_every),
                                "--out", str(out)]
                          + ([] if args.eval_max_steps is None else ["--max-steps", str(args.eval_max_steps)])
                          + ([] if args.ensemble_coef is None else ["--ensemble-coef", str(args.ensemble_coef)])
                          + ([] if args.noise_scale is None else ["--noise-scale", str(args.noise_scale)])
                          + ([] if args.num_steps is None else ["--num-steps", str(args.num_steps)])))
    return calls


def _evaluate(calls: list[tuple[Path, list[str]]], jobs: int) -> None:
    todo = [(out, cmd) for out, cmd in calls if not (out / "report.json").is_file()]
    running: list[tuple[Path, subprocess.Popen]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = []
    while todo or running:
        while todo and len(running) < jobs:
            out, cmd = todo.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            print("$ " + " ".join(cmd), flush=True)
            with open(f"{out}.log", "w") as log:
                running.append((out, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(1)
        for item in list(running):
            out, proc = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    failed.append(f"{out} (exit {proc.returncode}, log {out}.log)")
    if failed:
        raise SystemExit("study_row: evaluation calls failed: " + "; ".join(failed))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        tasks = resolve_tasks(args.env, args.tasks)
    except SimError as e:
        raise SystemExit(f"study_row: {e}") from None
    roots = [Path(r) for r in args.data.split(",")]
    if len(roots) > 1 or args.weights is not None:
        missing = [str(r) for r in roots if not (r / "meta" / "info.json").is_file()]
        if missing:
            raise SystemExit(f"study_row: --data mixture: no LeRobot dataset at {missing} (only a single root "
                             "is collected when missing)")
        if args.weights is not None and len(args.weights.split(",")) != len(roots):
            raise SystemExit(f"study_row: --weights {args.weights!r}: one weight per --data root "
                             f"({len(roots)} roots)")
    elif not roots[0].exists():
        _run("collection", [*GWP, "collect", "--env", args.env, "--tasks", *tasks, "--episodes", str(args.demos),
                            "--cameras", *args.cameras, "--image-size", str(args.image_size),
                            "--out", str(roots[0])]
             + (["--action-noise", str(args.action_noise)] if args.action_noise else [])
             + (["--start-jitter", str(args.start_jitter)] if args.start_jitter else [])
             + ["--reach-aim", args.reach_aim, "--steps-after-success", *args.steps_after_success],
             threads=args.threads)
    final = args.out / "checkpoints" / f"step_{args.steps:08d}"
    if not final.is_dir():
        cmd = [*GWP, "train", "--preset", args.preset, "--data", args.data, "--steps", str(args.steps),
               "--out", str(args.out), "--no-progress"]
        if args.weights is not None:
            cmd += ["--weights", args.weights]
        for override in args.set:
            cmd += ["--set", override]
        if (args.out / "latest").exists():
            cmd.append("--resume")
        args.out.mkdir(parents=True, exist_ok=True)
        _run("training", cmd, threads=args.threads, log=args.out / "train.log")
    calls = eval_calls(args, tasks)
    _evaluate(calls, args.jobs)
    reports = [str(out / "report.json") for out, _ in calls]
    record = [] if args.record is None else ["--save", str(args.record)]
    subprocess.run([sys.executable, str(POOL_EVAL), *reports, *record], check=True)


if __name__ == "__main__":
    main()
