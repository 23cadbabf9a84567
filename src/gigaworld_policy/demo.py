"""`gwp demo`: the whole system on a laptop CPU, in one command.

Stages (each writes ``<out>/stages/<name>.json`` when done; a re-run skips finished stages):
  1. collect   scripted Meta-World expert demos -> LeRobot v3.0 dataset (sim/collect.py)
  2. train     the cpu-small action-centered policy for a bounded wall-clock budget (train/)
  3. evaluate  closed-loop rollouts on fresh seeds, disjoint from the collection seeds (sim/evaluate.py)
  4. latency   one action chunk: joint vs action-only vs cached action-only decoding (bench/latency.py)
  5. imagine   imagined future frames next to the real ones, on held-out dataset windows
  6. report    report.md with the success table, loss curves, latency table, videos and strips
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TASKS = ("reach-v3", "push-v3", "drawer-close-v3", "button-press-topdown-v3")


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    preset: str = "cpu-small"
    env: str = "metaworld"  # or "metaworld-goal" / "metaworld-object": more in the state (sim/metaworld_env.py)
    tasks: tuple[str, ...] = DEFAULT_TASKS
    episodes: int = 25  # demonstrations per task
    action_noise: float = 0.0  # DART-style noise on the expert's executed actions (sim/collect.py)
    start_jitter: float = 0.0  # scattered hand starts of the demonstrations, metres per axis (sim/collect.py)
    vcodec: str | None = None  # video encoder of the collected dataset (None: H.264 4:2:0; data/video.py)
    train_minutes: float = 25.0
    max_steps: int | None = None  # training steps; None: as many as fit train_minutes (fit_steps_to_budget)
    eval_episodes: int = 10
    eval_max_steps: int | None = None  # episode length limit in evaluation (None: the task's)
    replan_every: int = 8
    image_size: int = 64
    cameras: tuple[str, ...] = ("corner2",)  # Meta-World cameras, collected and evaluated (sim/metaworld_env.py)
    seed: int = 0
    overrides: tuple[str, ...] = ()
    latency_repeats: int = 10


def _stage(s: DemoSettings, name: str, index: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    marker = s.out / "stages" / f"{name}.json"
    if marker.exists():
        print(f"[{index}/6] {name}: done before, reusing {marker}")
        return json.loads(marker.read_text())
    print(f"[{index}/6] {name} ...", flush=True)
    t0 = time.perf_counter()
    result = fn()
    result["stage_seconds"] = round(time.perf_counter() - t0, 1)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(marker)
    print(f"[{index}/6] {name}: done in {result['stage_seconds']} s", flush=True)
    return result


def _config(s: DemoSettings):
    from gigaworld_policy.config import apply_overrides, get_preset

    return apply_overrides(get_preset(s.preset), list(s.overrides))


def run_demo(s: DemoSettings) -> Path:
    """Run (or resume) every stage; returns the path of report.md."""
    s.out.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir = s.out / "data", s.out / "run"

    def collect_stage() -> dict[str, Any]:
        from gigaworld_policy.sim.collect import collect

        summary = collect(s.env, list(s.tasks), s.episodes, data_dir, seed=s.seed, image_size=s.image_size,
                          cameras=s.cameras, overwrite=True, action_noise=s.action_noise, codec=s.vcodec,
                          start_jitter=s.start_jitter)
        for task, kept in summary["short"].items():
            print(f"warning: {task}: only {kept} of {s.episodes} demonstrations (its expert failed on the other "
                  "seeds); training goes on with them", file=sys.stderr, flush=True)
        return summary

    def train_stage() -> dict[str, Any]:
        from gigaworld_policy.train import train

        resume = (run_dir / "latest").exists()
        fit = {"steps": s.max_steps} if s.max_steps else fit_steps_to_budget(_config(s), s.train_minutes, run_dir)
        summary = train(_config(s), [str(data_dir)], fit["steps"], run_dir, resume=resume, max_minutes=s.train_minutes)
        return dataclasses.asdict(summary) | {"planned_steps": fit}

    def eval_stage() -> dict[str, Any]:
        from gigaworld_policy.policy import Policy
        from gigaworld_policy.sim.evaluate import evaluate

        policy = Policy.from_checkpoint(run_dir)
        return evaluate(policy, s.env, list(s.tasks), s.eval_episodes, seed=s.seed,
                        replan_every=s.replan_every, out_dir=s.out / "eval", image_size=s.image_size,
                        cameras=s.cameras, max_steps=s.eval_max_steps, video=True,
                        extra={"policy": f"{s.preset} (EMA)", "checkpoint": str(run_dir)})

    def latency_stage() -> dict[str, Any]:
        from gigaworld_policy.bench.latency import run_latency

        return run_latency(_config(s), repeats=s.latency_repeats, warmup=2)

    def imagine_stage() -> dict[str, Any]:
        return imagine_strips(run_dir, data_dir, s.out / "imagine", seed=s.seed)

    collected = _stage(s, "collect", 1, collect_stage)
    trained = _stage(s, "train", 2, train_stage)
    evaluated = _stage(s, "evaluate", 3, eval_stage)
    latency = _stage(s, "latency", 4, latency_stage)
    imagined = _stage(s, "imagine", 5, imagine_stage)
    print("[6/6] report ...", flush=True)
    report = write_report(s, collected, trained, evaluated, latency, imagined)
    print(f"[6/6] report: {report}")
    return report


def fit_steps_to_budget(cfg: Any, minutes: float, run_dir: Path, *, probe_steps: int = 3,
                        overhead: float = 1.15) -> dict[str, Any]:
    """How many optimizer steps fit ``minutes`` of training, so the learning-rate schedule (warm-up, cosine
    decay) runs its whole course inside the budget instead of being cut off near its peak.

    Times ``probe_steps`` full trainer steps on synthetic batches (bench/train.py); ``overhead`` covers data
    loading, logging and checkpoints (measured ~1.1x on the default demo). The time budget still stops
    training if the machine turns out slower. A resumed run keeps the plan it made (``plan.json``).
    """
    import statistics

    from gigaworld_policy.bench.train import time_train_steps
    from gigaworld_policy.train.distributed import init_distributed
    from gigaworld_policy.train.trainer import Trainer

    plan_file = run_dir / "plan.json"
    if plan_file.exists():
        return json.loads(plan_file.read_text())
    probe = Trainer(cfg, init_distributed("cpu"), total_steps=probe_steps + 1)
    step_s = statistics.median(time_train_steps(probe, probe_steps, warmup=1))
    plan = {"steps": max(1, int(60.0 * minutes / (step_s * overhead))), "probe_step_s": round(step_s, 4),
            "overhead": overhead, "minutes": minutes}
    print(f"train: {step_s:.2f} s per step measured; planning {plan['steps']} steps for {minutes:g} minutes",
          flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan))
    return plan


def imagine_strips(run_dir: Path, data_dir: Path, out: Path, *, seed: int = 0, count: int = 4) -> dict[str, Any]:
    """PNG strips: current frame | imagined future frames | real future frames, for dataset windows."""
    import numpy as np
    import torch
    from PIL import Image

    from gigaworld_policy.checkpoint import load_checkpoint, load_model_weights
    from gigaworld_policy.data import WindowedDataset
    from gigaworld_policy.data.windowed import collate
    from gigaworld_policy.model import WorldActionModel

    config, weights, _, ckpt = load_checkpoint(run_dir)
    model = WorldActionModel(config).eval()
    load_model_weights(model, weights, where=str(ckpt))
    if not model.has_video:
        return {"strips": [], "note": "attention_mode=no_video has no video branch"}
    ds = WindowedDataset([str(data_dir)], config, train=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:count].tolist()
    out.mkdir(parents=True, exist_ok=True)
    strips, errors = [], []

    def to_uint8(x: torch.Tensor) -> np.ndarray:  # [3, h, w] in [-1, 1] -> [h, w, 3]
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    for j, i in enumerate(idx):
        batch = collate([ds[i]])
        obs = {k: batch[k] for k in ("state", "image", "text", "text_mask", "embodiment_id")}
        with torch.no_grad():
            _, latents = model.generate(obs, noise=torch.randn(1, config.model.action_horizon,
                                                                config.model.action_dim, generator=g),
                                        actions=batch["actions"])  # imagine the recorded actions' future
            frames = model.decode_video(latents)[0]  # [f, 3, h, w]
        real = batch["future_frames"][0]
        n = min(len(frames), len(real))
        errors.append(float((frames[:n] - real[:n]).abs().mean()))
        top = np.concatenate([to_uint8(batch["image"][0])] + [to_uint8(f) for f in frames[:n]], axis=1)
        bottom = np.concatenate([to_uint8(batch["image"][0])] + [to_uint8(f) for f in real[:n]], axis=1)
        path = out / f"strip_{j}.png"
        Image.fromarray(np.concatenate([top, bottom], axis=0)).resize(
            (top.shape[1] * 2, top.shape[0] * 4), Image.NEAREST).save(path)
        strips.append(str(path))
    return {"strips": strips, "mean_abs_error": float(np.mean(errors)), "windows": idx,
            "layout": "top row: current frame + imagined future (given the recorded actions); bottom: real"}


def _loss_curve(run_dir: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r and "action_loss" in r]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes, ("action_loss", "video_loss")):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(s: DemoSettings, collected: dict[str, Any], trained: dict[str, Any], evaluated: dict[str, Any],
                 latency: dict[str, Any], imagined: dict[str, Any]) -> Path:
    curve = _loss_curve(s.out / "run", s.out / "loss_curves.png")
    lines = ["# GigaWorld-Policy demo report", "",
             f"Preset `{s.preset}`, env `{s.env}`, Meta-World tasks {', '.join(s.tasks)}, cameras {', '.join(s.cameras)} at "
             f"{s.image_size}x{s.image_size}; {s.episodes} expert demos per task, "
             f"{s.eval_episodes} evaluation episodes per task on fresh seeds.", "",
             "## Data", "",
             f"- {collected.get('episodes')} successful expert episodes kept, {collected.get('failed')} failed "
             f"and discarded, {collected.get('frames')} frames ({collected.get('stage_seconds')} s)"
             + (f"; executed actions perturbed by N(0, {collected['action_noise']}) on xyz, labels the expert's"
                if collected.get("action_noise") else "")
             + (f"; hand starts scattered by up to {collected['start_jitter']} m per axis"
                if collected.get("start_jitter") else "")
             + (f"; videos encoded with {s.vcodec}" if s.vcodec else ""), "",
             "## Training", ""]
    plan = trained.get("planned_steps", {})
    if "probe_step_s" in plan:
        lines.append(f"- schedule fitted to the budget: {plan['probe_step_s']:.2f} s per step measured, "
                     f"{plan['steps']} steps planned for {plan['minutes']:g} minutes")
    for k, label in (("final_step", "steps"), ("wall_s", "wall-clock seconds"), ("samples_per_s", "samples/s"),
                     ("last_loss", "last loss"), ("skipped_steps", "skipped non-finite steps"),
                     ("stopped_by_time", "stopped by the time budget"), ("checkpoint", "checkpoint")):
        if k in trained:
            v = trained[k]
            lines.append(f"- {label}: {round(v, 3) if isinstance(v, float) else v}")
    if curve is not None:
        lines += ["", f"![loss curves]({curve.name})"]
    lines += ["", "## Closed-loop success", "", "| task | success | 95% CI | mean length |", "|---|---|---|---|"]
    for task, r in evaluated.get("per_task", {}).items():
        lines.append(f"| {task} | {r['success']:.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                     f"{r['mean_length']:.0f} |")
    lines += [f"| **mean** | **{evaluated.get('mean_success', float('nan')):.2f}** | "
              f"[{evaluated.get('pooled_ci95', [0, 0])[0]:.2f}, {evaluated.get('pooled_ci95', [0, 0])[1]:.2f}] | |",
              "", f"Policy latency in the loop: median {evaluated.get('latency_ms', {}).get('median', 0):.1f} ms "
              "per chunk. Rollout videos: `eval/videos/`.", "",
              "## Latency per action chunk (batch 1, CPU)", "",
              "| decoding | median ms | token passes |", "|---|---|---|"]
    for k, label in (("joint", "joint (actions + future video)"), ("action_only", "action-only, no cache"),
                     ("action_only_cached", "action-only, prefix cache")):
        lines.append(f"| {label} | {latency.get(k + '_ms', float('nan')):.1f} | "
                     f"{latency.get('token_passes', {}).get(k, '')} |")
    lines += ["", f"Speedup joint / cached: {latency.get('speedup', 0):.2f}x (token-count ideal "
              f"{latency.get('ideal_speedup', 0):.2f}x).", "", "## Imagined vs real future", ""]
    if imagined.get("strips"):
        lines.append(imagined.get("layout", ""))
        lines.append("")
        for p in imagined["strips"]:
            lines.append(f"![strip]({Path(p).relative_to(s.out)})")
        lines.append(f"\nMean absolute pixel error (in [-1, 1] units): {imagined['mean_abs_error']:.3f}")
    else:
        lines.append(imagined.get("note", "no strips"))
    report = s.out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gigaworld_policy.data.video import VIDEO_CODECS

    d = DemoSettings(out=Path("gwp_demo"))
    p.add_argument("--out", type=Path, default=d.out, help="output folder (re-running reuses finished stages)")
    p.add_argument("--preset", default=d.preset)
    p.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated Meta-World tasks")
    p.add_argument("--episodes", type=int, default=d.episodes, help="expert demonstrations per task")
    from gigaworld_policy.sim.envs import METAWORLD_ENVS

    p.add_argument("--env", default=d.env, choices=list(METAWORLD_ENVS),
                   help="metaworld-goal: the goal position in the state too (goal-observable, as Meta-World's MT "
                        "benchmarks define it); metaworld-object: the first object's position and the goal "
                        "(diagnostic); default: the goal is read from the images")
    p.add_argument("--action-noise", type=float, default=d.action_noise,
                   help="std of noise on the expert's executed xyz actions while collecting (DART-style)")
    p.add_argument("--start-jitter", type=float, default=d.start_jitter,
                   help="start each demonstration's hand up to this many metres per axis from the task's start")
    p.add_argument("--vcodec", default=None, choices=list(VIDEO_CODECS),
                   help="video encoder of the collected data (default libx264 4:2:0; libx264rgb: lossless)")
    p.add_argument("--train-minutes", type=float, default=d.train_minutes, help="training wall-clock budget")
    p.add_argument("--max-steps", type=int, default=d.max_steps,
                   help="training steps (default: as many as fit --train-minutes, measured at the start)")
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--eval-max-steps", type=int, default=None)
    p.add_argument("--replan-every", type=int, default=d.replan_every)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--cameras", default=",".join(d.cameras),
                   help="comma-separated Meta-World cameras (corner2, workspace: framed on the table, corner, topview, gripper, ...)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--latency-repeats", type=int, default=d.latency_repeats)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def run(args: argparse.Namespace) -> int:
    s = DemoSettings(out=args.out, preset=args.preset, env=args.env, tasks=tuple(t for t in args.tasks.split(",") if t),
                     episodes=args.episodes, action_noise=args.action_noise, vcodec=args.vcodec,
                     start_jitter=args.start_jitter,
                     train_minutes=args.train_minutes, max_steps=args.max_steps,
                     eval_episodes=args.eval_episodes, eval_max_steps=args.eval_max_steps,
                     replan_every=args.replan_every, image_size=args.image_size,
                     cameras=tuple(c for c in args.cameras.split(",") if c), seed=args.seed,
                     overrides=tuple(args.overrides), latency_repeats=args.latency_repeats)
    run_demo(s)
    return 0
