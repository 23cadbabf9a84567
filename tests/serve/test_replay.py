from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gigaworld_policy.cli import main
from gigaworld_policy.data import open_dataset
from gigaworld_policy.serve.replay import replay_episode

from .conftest import LENGTHS


def test_replay_cli_writes_summary_and_plots(checkpoint: Path, dataset_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    assert main(["replay", "--checkpoint", str(checkpoint), "--data", str(dataset_root), "--episode", "1",
                 "--out", str(out), "--every", "4", "--num-steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episode"] == 1 and summary["frames"] == LENGTHS[1]
    assert summary["queries"] == len(range(0, LENGTHS[1], 4))
    assert len(summary["mae"]) == len(summary["mse"]) == 14 == len(summary["action_names"])
    assert all(np.isfinite(summary["mae"])) and summary["mean_mae"] > 0
    assert summary["plots"] and all(Path(p).stat().st_size > 1000 for p in summary["plots"])


class Oracle:
    """Predicts the recorded future exactly (plus a known offset on dim 0)."""

    def __init__(self, actions: np.ndarray, states: np.ndarray, horizon: int, offset: float) -> None:
        self.actions, self.states, self.h, self.offset = actions, states, horizon, offset

    def infer(self, obs: dict[str, Any], **_: Any) -> dict[str, Any]:
        f = int(np.flatnonzero((self.states == obs["state"]).all(1))[0])
        idx = np.minimum(np.arange(f, f + self.h), len(self.actions) - 1)
        pred = self.actions[idx].copy()
        pred[:, 0] += self.offset
        return {"actions": pred.astype(np.float32), "timing": {"total_ms": 0.0}}


def test_replay_errors_are_exact_for_an_oracle(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root)
    n = ds.episode_length(0)
    states = ds.episode_numeric(0, "observation.state").reshape(n, -1)
    actions = ds.episode_numeric(0, "action").reshape(n, -1)
    res = replay_episode(Oracle(actions, states, 5, 0.25), ds, 0, every=3)
    assert res["mae"][0] == pytest.approx(0.25, rel=1e-5) and res["mse"][0] == pytest.approx(0.0625, rel=1e-5)
    assert max(res["mae"][1:]) < 1e-6
    # steps past the episode end are not compared
    assert res["compared_steps"] == sum(min(5, n - f) for f in range(0, n, 3))
