"""`gwp replay`: open-loop evaluation of a checkpoint against one recorded episode.

At every k-th frame the recorded observation goes through ``Policy.infer`` (robot units, fixed seed) and
the predicted chunk is compared with the recorded actions of the next T frames (steps past the episode
end are left out). Output: per-dimension MAE/MSE in robot units (overall and per chunk step), a JSON
summary and a PNG per 8 dimensions of predicted chunks over the recorded trajectory.

Dims: n frames, t chunk steps, a action dims.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def replay_episode(policy: Any, ds: Any, episode: int, *, every: int, seed: int = 0, num_steps: int | None = None,
                   robot_type: str | None = None) -> dict[str, Any]:
    """Predicted chunks and errors for one episode (``policy``: a Policy; ``ds``: a LeRobotDataset)."""
    from gigaworld_policy.data.views import CAMERA_PREFIX  # torch: only when replaying, not for `gwp --help`

    if episode not in ds.episode_indices:
        raise SystemExit(f"--episode: {episode} is not in {ds.root} (episodes {ds.episode_indices[:10]}...)")
    if every < 1:
        raise SystemExit(f"--every: must be >= 1, got {every}")
    robot_type = robot_type or ds.robot_type
    n = ds.episode_length(episode)
    states = ds.episode_numeric(episode, "observation.state").reshape(n, -1)
    actions = ds.episode_numeric(episode, "action").reshape(n, -1).astype(np.float64)
    cams = [k[len(CAMERA_PREFIX):] for k in ds.camera_keys]
    queries = list(range(0, n, every))
    chunks, err_sum, err_sq, step_abs, step_count = [], None, None, None, None
    latencies = []
    for f in queries:
        obs = {"images": {c: ds.get_images(episode, CAMERA_PREFIX + c, [f])[0] for c in cams},
               "state": states[f], "prompt": ds.task_of(episode, f), "robot_type": robot_type}
        out = policy.infer(obs, seed=seed + f, num_steps=num_steps)
        pred = np.asarray(out["actions"], np.float64)
        latencies.append(out["timing"]["total_ms"])
        m = min(len(pred), n - f)
        diff = pred[:m] - actions[f:f + m]
        if err_sum is None:
            a, t = pred.shape[1], pred.shape[0]
            err_sum, err_sq = np.zeros(a), np.zeros(a)
            step_abs, step_count = np.zeros((t, a)), np.zeros(t)
        err_sum += np.abs(diff).sum(0)
        err_sq += (diff ** 2).sum(0)
        step_abs[:m] += np.abs(diff)
        step_count[:m] += 1
        chunks.append((f, pred))
    count = float(step_count.sum())
    mae, mse = err_sum / count, err_sq / count
    return {"episode": int(episode), "robot_type": robot_type, "frames": n, "every": every,
            "queries": len(queries), "compared_steps": int(count),
            "mae": mae.tolist(), "mse": mse.tolist(), "mean_mae": float(mae.mean()), "mean_mse": float(mse.mean()),
            "mae_per_chunk_step": (step_abs.mean(1) / np.maximum(step_count, 1)).tolist(),
            "latency_ms_median": float(np.median(latencies)),
            "_chunks": chunks, "_recorded": actions}


def plot_replay(result: dict[str, Any], names: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = result["_recorded"]
    paths = []
    dims = list(range(rec.shape[1]))
    for start in range(0, len(dims), 8):
        sub = dims[start:start + 8]
        fig, axes = plt.subplots(len(sub), 1, figsize=(9, 1.8 * len(sub)), sharex=True, squeeze=False)
        for ax, j in zip(axes[:, 0], sub):
            ax.plot(np.arange(len(rec)), rec[:, j], color="black", lw=1.5, label="recorded")
            for i, (f, pred) in enumerate(result["_chunks"]):
                steps = np.arange(f, f + len(pred))
                keep = steps < len(rec)
                ax.plot(steps[keep], pred[keep, j], color="tab:orange", lw=1, alpha=0.8,
                        label="predicted" if i == 0 else None)
            ax.set_ylabel(names[j] if j < len(names) else f"a{j}", fontsize=8)
            ax.set_title(f"MAE {result['mae'][j]:.4g}", fontsize=8, loc="right")
        axes[0, 0].legend(fontsize=8, loc="upper left")
        axes[-1, 0].set_xlabel("frame")
        fig.suptitle(f"episode {result['episode']} ({result['robot_type']}): predicted chunks every "
                     f"{result['every']} frames vs recorded actions", fontsize=9)
        fig.tight_layout()
        p = out_dir / f"replay_ep{result['episode']:04d}_dims{start:02d}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training run directory")
    parser.add_argument("--data", required=True, help="LeRobot v3.0 dataset directory")
    parser.add_argument("--episode", type=int, required=True)
    parser.add_argument("--out", default=None, help="directory for summary.json and plots (default: print only)")
    parser.add_argument("--every", type=int, default=None, help="query every k frames (default: chunk length)")
    parser.add_argument("--num-steps", type=int, default=None, help="denoising steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robot-type", default=None, help="default: the dataset's robot_type")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.data.embodiments import get_embodiment
    from gigaworld_policy.data.lerobot import open_dataset
    from gigaworld_policy.policy import Policy

    policy = Policy.from_checkpoint(args.checkpoint, device=args.device)
    ds = open_dataset(args.data)
    every = args.every or policy.config.model.action_horizon
    result = replay_episode(policy, ds, args.episode, every=every, seed=args.seed, num_steps=args.num_steps,
                            robot_type=args.robot_type)
    summary = {k: v for k, v in result.items() if not k.startswith("_")}
    summary.update(checkpoint=str(policy.checkpoint), data=str(args.data))
    names = list(get_embodiment(result["robot_type"]).action_names)
    summary["action_names"] = names
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary["plots"] = [str(p) for p in plot_replay(result, names, out)]
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'summary.json'} and {len(summary['plots'])} plot(s)")
    print(f"episode {args.episode}: {summary['queries']} chunks, {summary['compared_steps']} steps compared; "
          f"mean MAE {summary['mean_mae']:.4g}, mean MSE {summary['mean_mse']:.4g} (robot units)")
    for name, mae, mse in zip(names, summary["mae"], summary["mse"]):
        print(f"  {name:>24s}  MAE {mae:.4g}  MSE {mse:.4g}")
    return 0
