from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import LENGTHS, action_value, state_value, write_dataset
from gigaworld_policy.config import Config, DataConfig, ModelConfig
from gigaworld_policy.data import (
    DataSource,
    Normalizer,
    WindowedDataset,
    collate,
    compute_norm_stats,
    open_dataset,
)
from gigaworld_policy.data.embodiments import EmbodimentError
from gigaworld_policy.data.stats import save_stats
from gigaworld_policy.data.workers import worker_context
from gigaworld_policy.model.batch import validate


def make_cfg(**data_kw) -> Config:
    model = ModelConfig(action_horizon=6, action_dim=16, state_dim=16, image_height=32, image_width=32,
                        num_future_frames=2, num_embodiments=3)
    return Config(model=model, data=DataConfig(future_offsets=(2, 4), **data_kw))


def test_sample_values_at_episode_end(dataset_root: Path) -> None:
    cfg = make_cfg()
    wd = WindowedDataset([dataset_root], cfg, train=False)
    ds = open_dataset(dataset_root)
    norm = Normalizer(compute_norm_stats(ds, 6))
    ep, f = 1, 10  # episode of 14 frames: steps 10..13 real, 14..15 padded; future 12 real, 14 padded
    s = wd[LENGTHS[0] + f]
    assert s["state"].shape == (16,) and s["state"].dtype == torch.float32
    np.testing.assert_allclose(s["state"][:14].numpy(), norm.normalize_state(state_value(ep, f)), atol=1e-6)
    assert (s["state"][14:] == 0).all() and (s["actions"][:, 14:] == 0).all()
    assert s["action_is_pad"].tolist() == [False] * 4 + [True] * 2
    assert s["future_is_pad"].tolist() == [False, True]
    raw = np.stack([action_value(ep, min(f + k, 13)) for k in range(6)])
    np.testing.assert_allclose(s["actions"][:, :14].numpy(), norm.normalize_actions(raw, state_value(ep, f)),
                               atol=1e-6)
    # the padded steps repeat the last action; the padded future frame repeats the last frame
    torch.testing.assert_close(s["actions"][5], s["actions"][3])
    last = wd[LENGTHS[0] + 13]
    torch.testing.assert_close(s["future_frames"][1], last["image"])
    assert s["action_dim_mask"].tolist() == [True] * 14 + [False] * 2
    assert s["embodiment_id"].dtype == torch.int64 and s["embodiment_id"].ndim == 0 and int(s["embodiment_id"]) == 1
    assert s["image"].shape == (3, 32, 32) and s["future_frames"].shape == (2, 3, 32, 32)
    assert s["text"].shape[1] == 384 and s["text_mask"].all()


def test_delta_actions_are_relative_to_state(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root)
    stats = compute_norm_stats(ds, 6)
    norm = Normalizer(stats)
    model_space = norm.to_model_actions(action_value(0, 3)[None], state_value(0, 2))
    # arm joint 0: delta = action - state; gripper (dim 6): absolute
    assert model_space[0, 0] == pytest.approx(action_value(0, 3)[0] - state_value(0, 2)[0])
    assert model_space[0, 6] == pytest.approx(action_value(0, 3)[6])
    # the delta dims' stats are over the chunk deltas a[t+k] - s[t]
    vals = []
    for ep, n in enumerate(LENGTHS):
        for t in range(n):
            for k in range(6):
                if t + k < n:
                    vals.append(action_value(ep, t + k)[0] - state_value(ep, t)[0])
    assert stats["stats"]["action"]["mean"][0] == pytest.approx(np.mean(vals), rel=1e-6)
    # histogram quantile: between the bracketing order statistics, up to one bin width
    bin_width = (max(vals) - min(vals)) / 4096
    q = stats["stats"]["action"]["q99"][0]
    assert np.quantile(vals, 0.99, method="lower") - bin_width <= q <= np.quantile(vals, 0.99, method="higher") + bin_width


def test_collate_matches_model_layout_and_dataloader_workers(dataset_root: Path) -> None:
    cfg = make_cfg(cameras=("cam_high", "cam_left_wrist", "cam_right_wrist"))
    wd = WindowedDataset([dataset_root], cfg, train=True)
    wd[0]  # decoded once in this process first, as a training process would have (see data/workers.py)
    loader = DataLoader(wd, batch_size=5, shuffle=True, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0), multiprocessing_context=worker_context(2))
    n = 0
    for batch in loader:
        b = validate(batch, cfg.model, training=True)
        assert batch["text"].shape[:2] == batch["text_mask"].shape
        n += b
    assert n == sum(LENGTHS)


def test_mixture_weights_and_embodiments(tmp_path: Path, dataset_root: Path) -> None:
    other = write_dataset(tmp_path / "robotwin", lengths=(4, 4), robot_type="robotwin_aloha_agilex")
    cfg = make_cfg()
    wd = WindowedDataset([DataSource(dataset_root, weight=1.0), DataSource(other, weight=3.0)], cfg, train=False)
    w = wd.sample_weights()
    assert float(w[: len(w) - 8].sum()) == pytest.approx(0.25) and float(w[-8:].sum()) == pytest.approx(0.75)
    idx = list(wd.make_sampler(4000, torch.Generator().manual_seed(0)))
    assert np.mean(np.asarray(idx) >= sum(LENGTHS)) == pytest.approx(0.75, abs=0.03)
    assert int(wd[len(wd) - 1]["embodiment_id"]) == 2 and int(wd[0]["embodiment_id"]) == 1


def test_mixture_of_one_robot_shares_the_first_datasets_normalization(tmp_path: Path, dataset_root: Path) -> None:
    # the checkpoint keeps one normalization per robot type (the first dataset's, train/data.py); a second
    # dataset of the same robot must be trained with it, not with its own statistics
    other = write_dataset(tmp_path / "more", lengths=(40, 3))
    cfg = make_cfg()
    alone = WindowedDataset([other], cfg, train=False)
    wd = WindowedDataset([DataSource(dataset_root), DataSource(other)], cfg, train=False)
    raw = alone.sources[0].ds.get_numeric(0, "observation.state", np.asarray([0]))[0]
    own = alone.sources[0].normalizer.normalize_state(raw)
    shared = wd.sources[0].normalizer.normalize_state(raw)
    assert not np.allclose(own, shared)  # the two datasets' statistics differ
    d = wd.sources[0].embodiment.state_dim
    np.testing.assert_allclose(wd[sum(LENGTHS)]["state"][:d].numpy(), shared, rtol=1e-5, atol=1e-6)
    own_stats = save_stats(compute_norm_stats(alone.sources[0].ds, cfg.model.action_horizon), tmp_path / "s.json")
    with pytest.raises(ValueError, match=r"stats_path.*first one's normalization"):
        WindowedDataset([DataSource(dataset_root), DataSource(other, stats_path=own_stats)], cfg)


def test_num_embodiments_checked(dataset_root: Path) -> None:
    cfg = make_cfg()
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, num_embodiments=1))
    with pytest.raises(EmbodimentError, match="num_embodiments=1"):
        WindowedDataset([dataset_root], cfg)


def test_no_video_mode_has_no_future(dataset_root: Path) -> None:
    cfg = make_cfg()
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, attention_mode="no_video"))
    s = WindowedDataset([dataset_root], cfg, train=False)[0]
    assert "future_frames" not in s and "future_is_pad" not in s
    validate(collate([s]), cfg.model, training=True)
