from __future__ import annotations

import numpy as np
import pytest
import torch

from gigaworld_policy.config import Config, DataConfig, ModelConfig
from gigaworld_policy.data import DatasetError, compose_views, compose_views_sequence
from gigaworld_policy.data.views import tile_boxes


def paper_cfg(**kw) -> Config:
    model = ModelConfig(image_height=48, image_width=40, patch_size=(1, 8, 8))
    return Config(model=model, data=DataConfig(**kw))


def solid(v: int, h: int = 30, w: int = 30) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_paper_layout_tiles() -> None:
    assert tile_boxes("top_bottom_pair", 3, 384, 320) == [(0, 0, 192, 320), (192, 0, 192, 160), (192, 160, 192, 160)]
    cfg = paper_cfg(cameras=("main", "left", "right"))
    x = compose_views({"right": solid(255), "main": solid(0), "left": solid(51)}, cfg)
    assert x.shape == (3, 48, 40) and x.dtype == torch.float32
    assert torch.allclose(x[:, :24], torch.tensor(-1.0))
    assert torch.allclose(x[:, 24:, :20], torch.tensor(51 / 127.5 - 1), atol=1e-5)
    assert torch.allclose(x[:, 24:, 20:], torch.tensor(1.0))


def test_inference_is_deterministic_center_crop() -> None:
    cfg = paper_cfg(cameras=("a",), view_layout="single", crop_scale=0.5)
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:30, 10:30] = 255  # the centre half is white: the centre crop sees only white
    x = compose_views({"a": img}, cfg)
    assert torch.allclose(x, torch.tensor(1.0)) and torch.equal(x, compose_views({"a": img}, cfg))


def test_train_augmentation_shared_across_frames() -> None:
    cfg = paper_cfg(cameras=("a", "b", "c"))
    rng = np.random.default_rng(0)
    frame = {k: rng.integers(0, 255, (30, 36, 3), dtype=np.uint8) for k in "abc"}
    g = torch.Generator().manual_seed(0)
    seq = compose_views_sequence([frame, frame], cfg, train=True, generator=g)
    assert torch.equal(seq[0], seq[1])  # same crop + jitter for the current and future frames
    assert not torch.equal(seq[0], compose_views(frame, cfg))  # but differs from the inference view
    assert seq.min() >= -1 and seq.max() <= 1


def test_missing_camera_in_observation() -> None:
    with pytest.raises(DatasetError, match=r"\['c'\]"):
        compose_views({"a": solid(0), "b": solid(0)}, paper_cfg(cameras=("a", "b", "c")))
