"""``gwp eval``: closed-loop evaluation with action chunking.

Each call to the policy returns a chunk of T absolute actions; the harness executes the first
``replan_every`` (k) of them, or all T when k is 0 / larger than T, then asks again. With
``ensemble_coef`` set, the actions go through the robot server's executor (serve/executor.py) instead:
a chunk is still requested every k steps, and each step executes ACT's temporal ensemble of every chunk
that covers it (weights ``exp(-ensemble_coef * i)``, oldest first), so a simulated rollout runs the
control loop a robot runs. An episode ends at success or at the env's step limit. Seeds: episode i of every task uses
``EVAL_SEED_OFFSET + seed + i`` (collection uses ``seed + i`` < EVAL_SEED_OFFSET), and each task gets a
freshly built env, so a report is a deterministic function of (policy, tasks, episodes, seed, k, ensemble_coef).

Outputs (``out_dir``): report.json (``mean_success``, per-task ``success`` map, Wilson 95% intervals,
episode lengths, policy latency per chunk), report.md, and with ``video=True`` one mp4 per episode
(side by side with the policy's imagined future frames when ``imagine=True``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gigaworld_policy.provenance import git_commit
from gigaworld_policy.sim.collect import EVAL_SEED_OFFSET
from gigaworld_policy.sim.common import SimError, wilson_interval


def eval_seed(seed: int, episode: int) -> int:
    return EVAL_SEED_OFFSET + int(seed) + int(episode)


def reset_policy(policy: Any, seed: int) -> None:
    """New episode: ``policy.reset(seed=seed)`` where the hook takes a seed (the trained policy then draws
    its sampling noise from it: an episode replays exactly), else ``policy.reset()``; no hook: nothing."""
    if not hasattr(policy, "reset"):
        return
    if "seed" in inspect.signature(policy.reset).parameters:
        policy.reset(seed=seed)
    else:
        policy.reset()


def check_actions(out: dict[str, Any], env: Any) -> np.ndarray:
    """The policy output's ``actions`` as float64 [T, a] for ``env``; anything else raises SimError."""
    actions = np.asarray(out["actions"], dtype=np.float64)
    adim = len(env.action_names)
    if actions.ndim != 2 or actions.shape[1] != adim or len(actions) == 0:
        raise SimError(f"policy output 'actions': expected shape [T, {adim}] for {env.env_name}/{env.task}, "
                       f"got {list(actions.shape)}")
    return actions


def run_episode_ensembled(policy: Any, env: Any, seed: int, execute_steps: int, ensemble_coef: float,
                          record: bool = False) -> dict[str, Any]:
    """One closed-loop episode through ChunkExecutor with temporal ensembling (module docstring); the same
    result dict as :func:`run_episode`."""
    from gigaworld_policy.serve.executor import ChunkExecutor

    def query(o: dict[str, Any]) -> dict[str, Any]:
        actions = check_actions(policy.infer(o), env)
        if len(actions) < execute_steps:
            raise SimError(f"replan_every: {execute_steps} steps between chunks exceed the policy's chunk length "
                           f"{len(actions)}")
        return {"actions": actions}

    obs = env.reset(seed)
    try:
        executor = ChunkExecutor(query, execute_steps=execute_steps, ensemble_coef=ensemble_coef)
    except ValueError as e:  # execute_steps < 1 or ensemble_coef < 0, named in the message
        raise SimError(f"replan_every / ensemble_coef: {e}") from e
    reset_policy(policy, seed)
    frames: list[np.ndarray] = []
    success, steps, done = False, 0, False
    try:
        while not (success or done):
            if record:
                frames.append(np.concatenate([obs.images[c] for c in env.cameras], axis=1))
            action = executor.act(obs.to_policy_obs())
            result = env.step(action.astype(np.float64))
            obs, steps = result.obs, steps + 1
            success, done = result.success, result.done
    finally:
        executor.close()
    if record:
        frames.append(np.concatenate([obs.images[c] for c in env.cameras], axis=1))
    return {"success": bool(success), "length": steps, "latency_ms": list(executor.stats.query_ms),
            "frames": frames}


def run_episode(policy: Any, env: Any, seed: int, replan_every: int, record: bool = False,
                imagine: bool = False, on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """One closed-loop episode. Returns success, length, per-chunk latencies (ms) and optional frames.
    ``on_step(obs)``, where given, sees the first observation (after the env's and the policy's reset,
    before the first chunk) and the observation after every step: diagnostics read the simulator there
    and replay exactly the episode ``gwp eval`` runs."""
    obs = env.reset(seed)
    reset_policy(policy, seed)
    if on_step is not None:
        on_step(obs)
    latencies: list[float] = []
    frames: list[np.ndarray] = []
    success, steps, done = False, 0, False
    while not (success or done):
        t0 = time.perf_counter()
        out = policy.infer(obs.to_policy_obs(), return_video=True) if imagine else policy.infer(obs.to_policy_obs())
        latencies.append((time.perf_counter() - t0) * 1000.0)
        actions = check_actions(out, env)
        imagined = out.get("video") if imagine else None
        n = len(actions) if replan_every <= 0 else min(replan_every, len(actions))
        for j in range(n):
            if record:
                live = np.concatenate([obs.images[c] for c in env.cameras], axis=1)
                if imagine:
                    from gigaworld_policy.sim.video import side_by_side

                    fut = None
                    if imagined is not None and len(imagined):
                        fut = np.asarray(imagined)[min(len(imagined) - 1, j * len(imagined) // max(1, n))]
                    live = side_by_side(live, fut)
                frames.append(live)
            result = env.step(actions[j])
            obs, steps = result.obs, steps + 1
            success, done = result.success, result.done
            if on_step is not None:
                on_step(obs)
            if success or done:
                break
    if record:
        frames.append(np.concatenate([obs.images[c] for c in env.cameras], axis=1) if not imagine
                      else frames[-1] if frames else np.concatenate([obs.images[c] for c in env.cameras], axis=1))
    return {"success": bool(success), "length": steps, "latency_ms": latencies, "frames": frames}


def evaluate(policy: Any, env_name: str, tasks: str | list[str], episodes: int, seed: int = 0,
             replan_every: int = 8, out_dir: str | Path | None = None, image_size: int | None = None,
             cameras: tuple[str, ...] | None = None, max_steps: int | None = None, video: bool = False,
             imagine: bool = False, progress: bool = True, ensemble_coef: float | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``policy`` (anything with ``infer(obs)``; optional ``reset()`` or ``reset(seed=)``, ``bind_env(env)``).
    ``cameras`` None: the cameras a trained policy was trained on for this env's robot, else the env's.
    ``image_size`` None: the side of the largest view tile the trained policy feeds its model for this env's
    robot (no resize between render and model), else 64."""
    from tqdm import tqdm

    from gigaworld_policy.sim.envs import make_env, resolve_tasks

    if not hasattr(policy, "infer"):
        raise SimError(f"policy: {type(policy).__name__} has no infer(obs) method")
    task_list = resolve_tasks(env_name, tasks)
    check_robot_type(policy, env_name)
    cameras = cameras or checkpoint_cameras(policy, env_name)
    image_size = image_size or checkpoint_image_size(policy, env_name) or 64
    if episodes < 1:
        raise SimError(f"episodes: must be >= 1, got {episodes}")
    if ensemble_coef is not None:
        if ensemble_coef < 0:
            raise SimError(f"ensemble_coef: must be >= 0, got {ensemble_coef}")
        if replan_every < 1:
            raise SimError(f"replan_every: temporal ensembling needs a chunk every k >= 1 steps, got {replan_every}")
        if imagine:
            raise SimError("imagine: the imagined frames follow one chunk; they cannot be shown with ensemble_coef")
    out = Path(out_dir) if out_dir is not None else None
    if (video or imagine) and out is None:
        raise SimError("out_dir: needed to write videos (video=True / imagine=True)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    per_task: dict[str, Any] = {}
    all_latency: list[float] = []
    bar = tqdm(total=episodes * len(task_list), desc=f"eval {env_name}", unit="ep", disable=not progress)
    for task in task_list:
        env = make_env(env_name, task, image_size=image_size, cameras=cameras, max_steps=max_steps)
        if hasattr(policy, "bind_env"):
            policy.bind_env(env)
        successes, lengths, seeds = [], [], []
        for ep in range(episodes):
            s = eval_seed(seed, ep)
            if ensemble_coef is None:
                r = run_episode(policy, env, s, replan_every, record=video, imagine=imagine)
            else:
                r = run_episode_ensembled(policy, env, s, replan_every, ensemble_coef, record=video)
            successes.append(r["success"])
            lengths.append(r["length"])
            seeds.append(s)
            all_latency += r["latency_ms"]
            if video and out is not None:
                from gigaworld_policy.sim.video import write_mp4

                (out / "videos").mkdir(exist_ok=True)
                tag = "success" if r["success"] else "failure"
                write_mp4(out / "videos" / f"{task}_ep{ep:03d}_{tag}.mp4", r["frames"], env.fps)
            bar.update(1)
            bar.set_postfix(task=task, success=f"{np.mean(successes):.2f}")
        k, n = int(sum(successes)), len(successes)
        lo, hi = wilson_interval(k, n)
        per_task[task] = {"success": k / n, "ci95": [round(lo, 4), round(hi, 4)], "successes": k, "episodes": n,
                          "lengths": lengths, "mean_length": float(np.mean(lengths)), "seeds": seeds,
                          "episode_success": successes, "prompt": env.prompt}
        rendered = list(env.cameras)
        env.close()
    bar.close()
    total_k = sum(t["successes"] for t in per_task.values())
    total_n = sum(t["episodes"] for t in per_task.values())
    lo, hi = wilson_interval(total_k, total_n)
    lat = np.asarray(all_latency) if all_latency else np.zeros(1)
    report: dict[str, Any] = {
        "env": env_name, "tasks": task_list, "episodes_per_task": episodes, "seed": seed,
        "eval_seeds": [eval_seed(seed, 0), eval_seed(seed, episodes - 1)], "replan_every": replan_every,
        "ensemble_coef": ensemble_coef, "image_size": image_size, "cameras": rendered,
        "mean_success": float(np.mean([t["success"] for t in per_task.values()])),
        "pooled_ci95": [round(lo, 4), round(hi, 4)],
        "success": {t: v["success"] for t, v in per_task.items()},
        "per_task": per_task,
        "latency_ms": {"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90)),
                       "chunks": len(all_latency)},
        "git_commit": git_commit(),
        **(extra or {}),
    }
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.md").write_text(report_markdown(report))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {report['env']} ({report.get('policy', 'policy')})", "",
             f"- episodes per task: {report['episodes_per_task']}, eval seeds {report['eval_seeds'][0]}.."
             f"{report['eval_seeds'][1]}, replan every {report['replan_every']} steps"
             + (f", temporal ensemble coef {report['ensemble_coef']}" if report.get("ensemble_coef") is not None
                else ""),
             f"- mean success: **{report['mean_success']:.3f}** (pooled Wilson 95% CI "
             f"{report['pooled_ci95'][0]:.3f}-{report['pooled_ci95'][1]:.3f})",
             f"- policy latency per chunk: median {report['latency_ms']['median']:.1f} ms, "
             f"p90 {report['latency_ms']['p90']:.1f} ms ({report['latency_ms']['chunks']} chunks)",
             f"- git commit: {report.get('git_commit')}", "",
             "| task | success | 95% CI | episodes | mean length |", "|---|---|---|---|---|"]
    for task, t in report["per_task"].items():
        lines.append(f"| {task} | {t['success']:.3f} | {t['ci95'][0]:.2f}-{t['ci95'][1]:.2f} | {t['episodes']} | "
                     f"{t['mean_length']:.1f} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gigaworld_policy.sim.envs import ENV_HELP, ENV_NAMES

    parser.add_argument("--checkpoint", default=None, help="model checkpoint (needed for --policy model)")
    parser.add_argument("--env", required=True, choices=ENV_NAMES, help=ENV_HELP)
    parser.add_argument("--tasks", required=True, nargs="+", help="task names and/or sets (MT10, MT50, ...)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="eval seeds are EVAL_SEED_OFFSET + seed + episode")
    parser.add_argument("--replan-every", type=int, default=8, help="execute k actions of each chunk (0 = all)")
    parser.add_argument("--ensemble-coef", type=float, default=None,
                        help="temporal ensembling (ACT) of the overlapping chunks, weight exp(-coef * i) oldest first, "
                             "through the robot server's executor; a chunk is still requested every --replan-every "
                             "steps (default: off, each chunk's first k actions are executed)")
    parser.add_argument("--noise-scale", type=float, default=None,
                        help="trained policy: scale of the initial action noise it samples from (a temperature; "
                             "0 = deterministic chunks; default 1, as trained: other scales lowered reach)")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="trained policy: Euler steps of the action sampler per chunk (default: the "
                             "checkpoint's flow.num_inference_steps)")
    parser.add_argument("--policy", choices=["model", "expert", "random"], default="model")
    parser.add_argument("--out", default=None, help="directory for report.json, report.md and videos")
    parser.add_argument("--video", action="store_true", help="write an mp4 per episode")
    parser.add_argument("--imagine", action="store_true", help="mp4 side by side with imagined future frames")
    parser.add_argument("--image-size", type=int, default=None,
                        help="rendered image side (default: the checkpoint's view tile for this robot, else 64)")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="cameras to render (default: the checkpoint's cameras for this robot, else the env's)")
    parser.add_argument("--max-steps", type=int, default=None)


def make_policy(kind: str, checkpoint: str | None, seed: int = 0, noise_scale: float | None = None,
                num_steps: int | None = None) -> Any:
    from gigaworld_policy.sim.policies import ExpertPolicy, RandomPolicy

    if noise_scale is not None and kind != "model":
        raise SimError(f"noise_scale: only the trained policy samples noise (--policy model), not {kind!r}")
    if num_steps is not None and kind != "model":
        raise SimError(f"num_steps: only the trained policy has a sampler (--policy model), not {kind!r}")
    if kind == "expert":
        return ExpertPolicy()
    if kind == "random":
        return RandomPolicy(seed=seed)
    if kind != "model":
        raise SimError(f"unknown policy {kind!r}; valid policies: model, expert, random")
    if not checkpoint:
        raise SimError("--checkpoint: required for --policy model")
    # imported lazily: torch and the model only when needed
    from gigaworld_policy.policy import Policy, PolicyInputError

    try:
        return Policy.from_checkpoint(checkpoint, noise_scale=1.0 if noise_scale is None else noise_scale,
                                      num_steps=num_steps)
    except PolicyInputError as e:
        raise SimError(str(e)) from e


def check_robot_type(policy: Any, env_name: str) -> None:
    """A trained policy must know the robot type of the env's observations (``metaworld`` and
    ``metaworld-goal`` differ: 4-d state against 7-d with the goal); the error names the envs it does know."""
    if not hasattr(policy, "metadata"):
        return
    from gigaworld_policy.sim.envs import ENV_NAMES, robot_type

    known = policy.metadata()["robot_types"]
    if robot_type(env_name) not in known:
        fits = [e for e in ENV_NAMES if robot_type(e) in known]
        raise SimError(f"env {env_name!r}: its observations are robot type {robot_type(env_name)!r}, which this "
                       f"checkpoint was not trained on (robot types: {', '.join(sorted(known))}; "
                       f"envs that give them: {', '.join(fits) or 'none'})")


def checkpoint_robot_spec(policy: Any, env_name: str) -> dict[str, Any] | None:
    """The trained policy's metadata for this env's robot type (None: not a trained policy, or it has no
    such robot type; the policy then names what it expects on the first call)."""
    if not hasattr(policy, "metadata"):
        return None
    from gigaworld_policy.sim.envs import robot_type

    return policy.metadata()["robot_types"].get(robot_type(env_name))


def checkpoint_cameras(policy: Any, env_name: str) -> tuple[str, ...] | None:
    """The cameras a trained policy was trained on for this env's robot type (None: see checkpoint_robot_spec)."""
    spec = checkpoint_robot_spec(policy, env_name)
    return tuple(spec["cameras"]) if spec else None


def checkpoint_image_size(policy: Any, env_name: str) -> int | None:
    """The side of the largest view tile a trained policy feeds its model for this env's robot type (None: see
    checkpoint_robot_spec). Rendering at it avoids a resize the training data did not have when the data
    were rendered at the model's size (a 64-pixel render upscaled into a 128-pixel tile would be a silent
    train/eval mismatch)."""
    spec = checkpoint_robot_spec(policy, env_name)
    return max(max(hw) for hw in spec["image_sizes"].values()) if spec else None


def run(args: argparse.Namespace) -> int:
    # bad input: SimError, printed by gwp's main
    policy = make_policy(args.policy, args.checkpoint, args.seed, args.noise_scale, args.num_steps)
    report = evaluate(policy, args.env, args.tasks, args.episodes, seed=args.seed, replan_every=args.replan_every,
                      out_dir=args.out, image_size=args.image_size,
                      cameras=tuple(args.cameras) if args.cameras else None, max_steps=args.max_steps,
                      video=args.video or args.imagine, imagine=args.imagine, ensemble_coef=args.ensemble_coef,
                      extra={"policy": args.policy, "checkpoint": args.checkpoint,
                             "noise_scale": getattr(policy, "noise_scale", None),
                             "num_steps": getattr(policy, "num_steps", None)})
    print(report_markdown(report))
    return 0
