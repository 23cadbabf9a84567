"""`gwp bench data`: training DataLoader throughput (samples/s) on a synthetic LeRobot v3.0 dataset.

Writes a 3-camera ALOHA-shaped dataset (AV1/H.264 video, 14-d state/action) per resolution, then times
WindowedDataset + collate through a DataLoader (shuffled, train-time augmentation, 2 future frames).
Reports the median of several timed passes after a warm-up batch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gigaworld_policy.config import Config, DataConfig, ModelConfig
from gigaworld_policy.data.windowed import WindowedDataset, collate
from gigaworld_policy.data.workers import worker_context
from gigaworld_policy.data.writer import LeRobotWriter
from gigaworld_policy.model.text import NullTextEncoder

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def write_synthetic(root: Path, height: int, width: int, *, episodes: int = 4, length: int = 60) -> Path:
    feats = {"observation.state": {"dtype": "float32", "shape": [14], "names": None},
             "action": {"dtype": "float32", "shape": [14], "names": None}}
    for c in CAMERAS:
        feats[f"observation.images.{c}"] = {"dtype": "video", "shape": [height, width, 3], "names": None}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    w = LeRobotWriter(root, fps=25, robot_type="robotwin_aloha_agilex", features=feats)
    for ep in range(episodes):
        for i in range(length):
            frame = {"observation.state": rng.normal(size=14).astype(np.float32),
                     "action": rng.normal(size=14).astype(np.float32)}
            for k, c in enumerate(CAMERAS):
                img = np.stack([(xx + 3 * i) % 256, (yy + 40 * k) % 256, np.full_like(xx, 20 * ep)], -1)
                frame[f"observation.images.{c}"] = img.astype(np.uint8)
            w.add_frame(frame, task=f"task {ep % 2}")
        w.save_episode()
    return w.finalize()


def run_data_bench(height: int, width: int, *, camera_hw: tuple[int, int] | None = None, batch_size: int = 8,
                   num_workers: int = 2, batches: int = 12, repeats: int = 3, workdir: Path | None = None) -> dict:
    """Samples/s of the training DataLoader for a composed frame of height x width (3 views)."""
    cam_h, cam_w = camera_hw or (height, width)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = write_synthetic(Path(tmp) / "ds", cam_h, cam_w)
        model = ModelConfig(image_height=height, image_width=width, patch_size=(1, 8, 8), action_horizon=16,
                            action_dim=16, state_dim=16, num_future_frames=2, num_embodiments=3)
        cfg = Config(model=model, data=DataConfig(future_offsets=(8, 16)))
        wd = WindowedDataset([root], cfg, train=True, text_encoder=NullTextEncoder(model.text_dim))
        loader = DataLoader(wd, batch_size=batch_size, shuffle=True, num_workers=num_workers, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0), persistent_workers=num_workers > 0,
                            multiprocessing_context=worker_context(num_workers))
        rates = []
        it = iter(loader)
        next(it)  # warm-up: worker start, first file opens
        for _ in range(repeats):
            t0, n = time.perf_counter(), 0
            for _ in range(batches):
                try:
                    batch = next(it)
                except StopIteration:
                    it = iter(loader)
                    batch = next(it)
                n += batch["state"].shape[0]
            rates.append(n / (time.perf_counter() - t0))
        del it, loader
    return {"frame": f"{height}x{width}", "camera": f"{cam_h}x{cam_w}", "batch_size": batch_size,
            "num_workers": num_workers, "samples_per_s": statistics.median(rates), "runs": rates}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    cases = [((64, 64), (64, 64)), ((384, 320), (240, 320))]
    for (h, w), cam in cases:
        for nw in args.workers:
            r = run_data_bench(h, w, camera_hw=cam, num_workers=nw, batches=args.batches, repeats=args.repeats)
            print(f"frame {r['frame']} (3 cameras {r['camera']}), batch {r['batch_size']}, workers {nw}: "
                  f"{r['samples_per_s']:.1f} samples/s (runs: {', '.join(f'{x:.1f}' for x in r['runs'])})")
    return 0
