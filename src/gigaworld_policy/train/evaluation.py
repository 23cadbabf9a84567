"""Open-loop evaluation on held-out episodes: normalized action MSE per dim, trajectory and frame plots.

For each held-out episode a few start frames (evenly spaced, deterministic) are decoded with
``predict_actions`` (fixed noise) and compared with the ground-truth chunk on real steps and real
action dims. One sample per source also gets ``generate`` -> ``decode_video``: the imagined future
frames next to the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gigaworld_policy.data.windowed import WindowedDataset, collate
from gigaworld_policy.train.plots import plot_action_trajectories, plot_frame_strip

OBS_KEYS = ("state", "image", "text", "text_mask", "embodiment_id")


def eval_indices(ds: WindowedDataset, heldout: list[list[int]], per_episode: int) -> list[list[int]]:
    """Per source: global sample indices of ``per_episode`` evenly spaced frames of each held-out episode."""
    out, offset = [], 0
    for src, eps in zip(ds.sources, heldout):
        idx = []
        for e in eps:
            n, start = src.ds.episode_length(e), src.ds.episode_start(e)
            frames = np.unique(np.linspace(0, max(0, n - 2), num=min(per_episode, n)).round().astype(int))
            idx += [offset + start + int(f) for f in frames]
        out.append(idx)
        offset += len(src.ds)
    return out


@torch.no_grad()
def open_loop_eval(model: torch.nn.Module, ds: WindowedDataset, indices: list[list[int]], *, step: int,
                   out_dir: Path | None, device: torch.device, seed: int = 0, video: bool = True,
                   batch_size: int = 16) -> dict[str, Any]:
    """Metrics ``{"eval/action_mse": .., "eval/<robot>/action_mse": .., "eval/<robot>/mse_dim_j": ..}``;
    plots under ``out_dir`` when given."""
    was_training = model.training
    model.eval()
    metrics: dict[str, Any] = {}
    all_err, all_cnt = 0.0, 0
    try:
        for k, idx in enumerate(indices):
            if not idx:
                continue
            src = ds.sources[k]
            robot = src.embodiment.robot_type
            a_dim = src.embodiment.action_dim
            sq = np.zeros(a_dim)
            cnt = np.zeros(a_dim)
            first: tuple[np.ndarray, np.ndarray] | None = None
            for lo in range(0, len(idx), batch_size):
                batch = collate([ds[i] for i in idx[lo:lo + batch_size]])
                obs = {key: batch[key].to(device) for key in OBS_KEYS}
                g = torch.Generator().manual_seed(seed + lo)
                noise = torch.randn(len(idx[lo:lo + batch_size]), model.cfg.action_horizon, model.cfg.action_dim,
                                    generator=g)
                pred = model.predict_actions(obs, noise=noise.to(device)).float().cpu().numpy()[:, :, :a_dim]
                true = batch["actions"].numpy()[:, :, :a_dim]
                valid = ~batch["action_is_pad"].numpy()  # [b, t]
                err = (pred - true) ** 2 * valid[:, :, None]
                sq += err.sum(axis=(0, 1))
                cnt += valid.sum() * np.ones(a_dim)
                if first is None:
                    first = (pred[0], true[0])
            per_dim = sq / np.maximum(cnt, 1)
            metrics[f"eval/{robot}/action_mse"] = float(per_dim.mean())
            for j, v in enumerate(per_dim):
                metrics[f"eval/{robot}/mse_dim_{j}"] = float(v)
            all_err += float(sq.sum())
            all_cnt += int(cnt.sum())
            if out_dir is not None and first is not None:
                plot_action_trajectories(first[0], first[1], out_dir / f"step_{step:08d}_{robot}_actions.png",
                                         dim_names=src.embodiment.action_names,
                                         title=f"step {step}: {robot}, held-out episode (normalized)")
                if video and getattr(model, "has_video", False):
                    _frame_strip(model, ds, idx[0], out_dir / f"step_{step:08d}_{robot}_frames.png", device, seed,
                                 title=f"step {step}: {robot}, real (top) vs imagined (bottom)")
        if all_cnt:
            metrics["eval/action_mse"] = all_err / all_cnt
    finally:
        model.train(was_training)
    return metrics


def _frame_strip(model: torch.nn.Module, ds: WindowedDataset, index: int, path: Path, device: torch.device,
                 seed: int, title: str) -> None:
    batch = collate([ds[index]])
    obs = {key: batch[key].to(device) for key in OBS_KEYS}
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, model.cfg.action_horizon, model.cfg.action_dim, generator=g).to(device)
    vnoise = torch.randn(model._future_latent_shape(1), generator=g).to(device)  # keep the global RNG untouched
    _, latents = model.generate(obs, noise=noise, video_noise=vnoise)
    imagined = model.decode_video(latents)[0].float().cpu().numpy()  # [n, 3, h, w]
    current = batch["image"][0].numpy()[None]
    real = np.concatenate([current, batch["future_frames"][0].numpy()])
    imagined = np.concatenate([current, imagined[-(len(real) - 1):]])
    plot_frame_strip(real, imagined, path, title=title)
