"""Simulation benchmarks: expert success per task, simulation + rendering speed, collection time.

Run: ``python -m gigaworld_policy.bench.sim [--episodes 20] [--out FILE.json]``. Every number comes from
the public APIs (``evaluate`` with the expert policy, ``collect``), so it measures what users get.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def expert_success(env_name: str, tasks: list[str], episodes: int, seed: int = 0) -> dict[str, Any]:
    from gigaworld_policy.sim.evaluate import evaluate
    from gigaworld_policy.sim.policies import ExpertPolicy

    t0 = time.perf_counter()
    rep = evaluate(ExpertPolicy(), env_name, tasks, episodes, seed=seed, replan_every=0, progress=False)
    return {"success": rep["success"], "mean_success": rep["mean_success"],
            "ci95": {t: v["ci95"] for t, v in rep["per_task"].items()},
            "mean_length": {t: v["mean_length"] for t, v in rep["per_task"].items()},
            "episodes": episodes, "seconds": round(time.perf_counter() - t0, 1)}


def steps_per_second(env_name: str, task: str, image_size: int = 64, steps: int = 300, repeats: int = 5,
                     cameras: tuple[str, ...] | None = None) -> dict[str, float]:
    """Median steps/s of env.step (physics + rendering the chosen cameras) with a fixed action."""
    from gigaworld_policy.sim.envs import make_env

    env = make_env(env_name, task, image_size=image_size, cameras=cameras)
    rates = []
    for r in range(repeats):
        obs = env.reset(r)
        action = np.zeros(len(env.action_names)) if env_name == "metaworld" else obs.state.astype(np.float64)
        n = min(steps, env.max_steps)
        t0 = time.perf_counter()
        for _ in range(n):
            env.step(action)
        rates.append(n / (time.perf_counter() - t0))
    env.close()
    return {"median_steps_per_s": float(np.median(rates)), "min": float(np.min(rates)), "max": float(np.max(rates))}


def collection_time(env_name: str, tasks: list[str], episodes: int, seed: int = 0) -> dict[str, Any]:
    from gigaworld_policy.sim.collect import collect

    with tempfile.TemporaryDirectory() as d:
        summary = collect(env_name, tasks, episodes, Path(d) / "ds", seed=seed, progress=False)
    per_demo = summary["seconds"] / max(1, summary["episodes"])
    return {"tasks": tasks, "episodes_per_task": episodes, "seconds": summary["seconds"],
            "seconds_per_demo": round(per_demo, 3), "frames": summary["frames"], "failed": summary["failed"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--collect-episodes", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from gigaworld_policy.sim.metaworld_env import task_sets

    mt10 = list(task_sets()["MT10"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res: dict[str, Any] = {"git_commit": commit, "command": "python -m gigaworld_policy.bench.sim "
                           f"--episodes {args.episodes} --collect-episodes {args.collect_episodes}"}
    res["speed"] = {
        "metaworld pick-place-v3 64px corner2": steps_per_second("metaworld", "pick-place-v3"),
        "metaworld pick-place-v3 128px corner2": steps_per_second("metaworld", "pick-place-v3", image_size=128),
        "aloha transfer_cube 64px top": steps_per_second("aloha", "transfer_cube"),
        "aloha transfer_cube 64px top+2 wrist": steps_per_second(
            "aloha", "transfer_cube", cameras=("top", "left_wrist", "right_wrist")),
    }
    print(json.dumps(res["speed"], indent=1), flush=True)
    res["collection"] = collection_time("metaworld", mt10, args.collect_episodes)
    res["collection"]["extrapolated_50_per_mt10_task_min"] = round(
        res["collection"]["seconds_per_demo"] * 50 * len(mt10) / 60, 1)
    print(json.dumps(res["collection"], indent=1), flush=True)
    res["expert_aloha"] = expert_success("aloha", ["transfer_cube", "insertion"], args.episodes)
    print(json.dumps(res["expert_aloha"], indent=1), flush=True)
    res["expert_mt10"] = expert_success("metaworld", mt10, args.episodes)
    print(json.dumps(res["expert_mt10"], indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
