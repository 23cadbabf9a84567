"""Small synthetic LeRobot v3.0 datasets with values that encode (episode, frame, dim)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gigaworld_policy.data.writer import LeRobotWriter

LENGTHS = (9, 14, 5)
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
DIM = 14
SIZE = 32


def state_value(ep: int, i: int) -> np.ndarray:
    return (ep * 100 + i + 0.01 * np.arange(DIM)).astype(np.float32)


def action_value(ep: int, i: int) -> np.ndarray:
    return (-(ep * 100 + i) - 0.5 * np.arange(DIM)).astype(np.float32)


def image_value(ep: int, i: int, cam: int) -> np.ndarray:
    """A smooth picture whose colour moves with episode, frame and camera (codec friendly)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = (40 + 12 * i + 2 * xx) % 256
    img[..., 1] = 60 + 50 * ep + yy
    img[..., 2] = 40 + 70 * cam
    return img


def features(image_dtype: str = "video", cameras: tuple[str, ...] = CAMERAS) -> dict:
    ft = {"observation.state": {"dtype": "float32", "shape": [DIM], "names": [f"s{j}" for j in range(DIM)]},
          "action": {"dtype": "float32", "shape": [DIM], "names": [f"a{j}" for j in range(DIM)]}}
    for c in cameras:
        ft[f"observation.images.{c}"] = {"dtype": image_dtype, "shape": [SIZE, SIZE, 3], "names": None}
    return ft


def write_dataset(root: Path, *, lengths: tuple[int, ...] = LENGTHS, robot_type: str = "aloha",
                  image_dtype: str = "video", cameras: tuple[str, ...] = CAMERAS, **kw) -> Path:
    w = LeRobotWriter(root, fps=10, robot_type=robot_type, features=features(image_dtype, cameras), **kw)
    for ep, n in enumerate(lengths):
        for i in range(n):
            frame = {"observation.state": state_value(ep, i), "action": action_value(ep, i)}
            for c, cam in enumerate(cameras):
                frame[f"observation.images.{cam}"] = image_value(ep, i, c)
            w.add_frame(frame, task=f"task {ep % 2}")
        w.save_episode()
    return w.finalize()


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "aloha_ds")
