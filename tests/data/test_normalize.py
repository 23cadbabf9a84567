from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from gigaworld_policy.data import Normalizer, compute_norm_stats, open_dataset
from gigaworld_policy.data.embodiments import EmbodimentError, check_num_embodiments, get_embodiment
from gigaworld_policy.data.stats import _Histogram, add_arguments, run


@pytest.mark.parametrize("mode", ["quantile", "meanstd"])
def test_round_trip_exact(dataset_root: Path, mode: str) -> None:
    ds = open_dataset(dataset_root)
    norm = Normalizer(compute_norm_stats(ds, 6), mode)
    rng = np.random.default_rng(0)
    state = ds.episode_numeric(1, "observation.state")[4]
    actions = ds.episode_numeric(1, "action")[4:10]
    y = norm.normalize_actions(actions, state)
    assert y.dtype == np.float32 and np.abs(y).max() <= norm.clip
    np.testing.assert_allclose(norm.unnormalize_actions(y, state), actions, rtol=1e-5, atol=1e-4)
    # model outputs anywhere in range round-trip the other way too
    z = rng.uniform(-1, 1, size=(3, 6, 14)).astype(np.float32)
    np.testing.assert_allclose(norm.normalize_actions(norm.unnormalize_actions(z, state), state), z, atol=1e-5)
    s = norm.normalize_state(state)
    np.testing.assert_allclose(norm.unnormalize_state(s), state, rtol=1e-6, atol=1e-4)


def test_quantile_maps_q01_q99_to_unit_range(dataset_root: Path) -> None:
    stats = compute_norm_stats(open_dataset(dataset_root), 6)
    st = stats["stats"]["observation.state"]
    norm = Normalizer(stats)
    np.testing.assert_allclose(norm.normalize_state(np.asarray(st["q01"])), -1, atol=1e-5)
    np.testing.assert_allclose(norm.normalize_state(np.asarray(st["q99"])), 1, atol=1e-5)


def test_histogram_quantile_error_bound() -> None:
    x = np.random.default_rng(1).normal(size=(200_000, 2)) * [1.0, 50.0]
    h = _Histogram(x.min(0), x.max(0), 4096)
    h.add(x)
    for q in (0.01, 0.5, 0.99):
        err = np.abs(h.quantile(q) - np.quantile(x, q, axis=0))
        assert (err <= (x.max(0) - x.min(0)) / 4096 + 1e-3 * np.array([1, 50])).all(), (q, err)


def test_stats_cli(dataset_root: Path, tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "s.json"
    assert run(p.parse_args([str(dataset_root), "--action-horizon", "4", "--out", str(out)])) == 0
    st = json.loads(out.read_text())
    assert st["action_horizon"] == 4 and len(st["stats"]["action"]["q01"]) == 14
    assert st["fingerprint"]["total_frames"] == 28


def test_embodiment_registry() -> None:
    aloha = get_embodiment("aloha")
    assert aloha.id == 1 and aloha.state_dim == 14 and aloha.fps == 50
    assert sum(aloha.delta_mask) == 12 and not aloha.delta_mask[6] and not aloha.delta_mask[13]
    mw = get_embodiment("metaworld_sawyer")
    assert mw.id == 0 and mw.action_dim == 4 and not any(mw.delta_mask)
    assert get_embodiment("robotwin_aloha_agilex").id == 2
    with pytest.raises(EmbodimentError, match=r"unknown robot type 'ur5'; known robot types: \['aloha'"):
        get_embodiment("ur5")
    with pytest.raises(EmbodimentError, match="num_embodiments=2"):
        check_num_embodiments(get_embodiment("robotwin_aloha_agilex"), 2)
