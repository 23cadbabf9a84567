"""Tiny LeRobot datasets and configs for the trainer tests (tiny preset, no text encoder, PNG frames)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gigaworld_policy.config import Config, apply_overrides, get_preset
from gigaworld_policy.data.writer import LeRobotWriter

TINY_OVERRIDES = ["data.text_encoder=none", "train.batch_size=4", "train.warmup_steps=2", "train.save_every=2",
                  "train.log_every=1", "data.augment=true"]


def tiny_config(*extra: str) -> Config:
    return apply_overrides(get_preset("tiny"), [*TINY_OVERRIDES, *extra])


def write_metaworld_dataset(root: Path, episodes: int = 4, length: int = 12, seed: int = 0,
                            env_state: bool = False, provenance: dict | None = None) -> Path:
    """``env_state``: also an ``observation.environment_state`` [2] = (frame, episode), what the red band's
    height and the frame's brightness show. ``provenance``: written to meta/provenance.json, as ``gwp collect`` does."""
    rng = np.random.default_rng(seed)
    ft = {"observation.state": {"dtype": "float32", "shape": [4], "names": None},
          "action": {"dtype": "float32", "shape": [4], "names": None},
          "observation.images.corner2": {"dtype": "image", "shape": [32, 32, 3], "names": None}}
    if env_state:
        ft["observation.environment_state"] = {"dtype": "float32", "shape": [2], "names": ["frame", "episode"]}
    w = LeRobotWriter(root, fps=10, robot_type="metaworld_sawyer", features=ft)
    for ep in range(episodes):
        pos = rng.normal(size=4).astype(np.float32)
        for i in range(length):
            act = rng.normal(scale=0.3, size=4).astype(np.float32)
            img = np.full((32, 32, 3), 40 + 10 * i + 30 * ep, np.uint8)
            img[: 4 + i, :, 0] = 200
            frame = {"observation.state": pos.copy(), "action": act, "observation.images.corner2": img}
            if env_state:
                frame["observation.environment_state"] = np.array([i, ep], np.float32)
            w.add_frame(frame, task=f"task {ep % 2}")
            pos = pos + 0.1 * act
        w.save_episode()
    return w.finalize(provenance=provenance)


@pytest.fixture(scope="session")
def mw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_metaworld_dataset(tmp_path_factory.mktemp("train_ds") / "mw")


def gwp_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gigaworld_policy.cli", *args]
