"""A tiny ALOHA-shaped checkpoint (random weights, statistics computed by the data pipeline) and a server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gigaworld_policy.checkpoint import save_checkpoint
from gigaworld_policy.config import Config, apply_overrides, get_preset
from gigaworld_policy.data import LeRobotWriter, compute_norm_stats, get_embodiment, open_dataset
from gigaworld_policy.model.world_action_model import WorldActionModel
from gigaworld_policy.policy import Policy
from gigaworld_policy.serve.server import PolicyServer, ServerThread

ROBOT = "aloha"
CAMERA = "top"
IMG = 24
LENGTHS = (12, 9)


def tiny_config() -> Config:
    return apply_overrides(get_preset("tiny"), ["data.text_encoder=none", "model.action_dim=16",
                                                "model.state_dim=16", "model.num_layers=1"])


def write_dataset(root: Path) -> Path:
    emb = get_embodiment(ROBOT)
    ft = {"observation.state": {"dtype": "float32", "shape": [emb.state_dim], "names": list(emb.state_names)},
          "action": {"dtype": "float32", "shape": [emb.action_dim], "names": list(emb.action_names)},
          f"observation.images.{CAMERA}": {"dtype": "image", "shape": [IMG, IMG, 3], "names": None}}
    rng = np.random.default_rng(0)
    w = LeRobotWriter(root, fps=50, robot_type=ROBOT, features=ft)
    for n in LENGTHS:
        state = np.cumsum(rng.normal(0, 0.05, (n, emb.state_dim)), 0).astype(np.float32)
        for i in range(n):
            action = (state[min(i + 1, n - 1)] + rng.normal(0, 0.01, emb.action_dim)).astype(np.float32)
            img = rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)
            w.add_frame({"observation.state": state[i], "action": action,
                         f"observation.images.{CAMERA}": img}, task="move the cube")
        w.save_episode()
    return w.finalize()


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("serve_ds") / "aloha_tiny")


@pytest.fixture(scope="session")
def norm_stats(dataset_root: Path) -> dict[str, Any]:
    cfg = tiny_config()
    stats = compute_norm_stats(open_dataset(dataset_root), cfg.model.action_horizon)
    return {"sources": [{"robot_type": ROBOT, "embodiment_id": get_embodiment(ROBOT).id, "stats": stats}]}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, norm_stats: dict[str, Any]) -> Path:
    import torch

    torch.manual_seed(0)
    cfg = tiny_config()
    model = WorldActionModel(cfg)
    return save_checkpoint(tmp_path_factory.mktemp("serve_ckpt") / "step_00000001", config=cfg,
                           model_state=model.state_dict(), norm_stats=norm_stats)


@pytest.fixture(scope="session")
def policy(checkpoint: Path) -> Policy:
    return Policy.from_checkpoint(checkpoint)


def make_obs(seed: int = 0, *, size: tuple[int, int] = (30, 40)) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    emb = get_embodiment(ROBOT)
    return {"images": {CAMERA: rng.integers(0, 256, (*size, 3), dtype=np.uint8)},
            "state": rng.normal(0, 0.1, emb.state_dim).astype(np.float32),
            "prompt": "move the cube", "robot_type": ROBOT}


@pytest.fixture(scope="module")
def server(policy: Policy) -> Iterator[PolicyServer]:
    srv = PolicyServer(policy, port=0, max_request_bytes=1 << 20, request_timeout_s=60.0)
    thread = ServerThread(srv)
    thread.start()
    yield srv
    thread.stop()
