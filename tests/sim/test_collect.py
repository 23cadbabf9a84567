from __future__ import annotations

import numpy as np
import pytest

from gigaworld_policy.cli import main as gwp
from gigaworld_policy.sim.collect import collect
from gigaworld_policy.sim.common import SimError

data = pytest.importorskip("gigaworld_policy.data")


def test_collect_metaworld_cli_writes_readable_dataset(tmp_path, capsys):
    out = tmp_path / "mw"
    assert gwp(["collect", "--env", "metaworld", "--tasks", "reach-v3", "--episodes", "2", "--out", str(out),
                "--seed", "0", "--image-size", "32"]) == 0
    assert "kept 2 episodes" in capsys.readouterr().out
    ds = data.open_dataset(out)
    assert ds.num_episodes == 2 and ds.camera_keys == ["observation.images.corner2"]
    item = ds[0]
    assert item["observation.images.corner2"].shape == (32, 32, 3)
    assert item["observation.state"].shape == (4,) and item["action"].shape == (4,)
    assert item["task"] == "reach the goal position"


def test_collect_aloha_api(tmp_path):
    summary = collect("aloha", ["TransferCube"], 1, tmp_path / "al", seed=0, image_size=16,
                      cameras=("top", "left_wrist"), progress=False)
    assert summary["episodes"] == 1 and summary["failed"] == 0
    ds = data.open_dataset(tmp_path / "al")
    assert ds.num_episodes == 1 and len(ds) == summary["frames"] < 300
    assert ds.camera_keys == ["observation.images.top", "observation.images.left_wrist"]
    actions = ds.episode_numeric(0, "action")
    states = ds.episode_numeric(0, "observation.state")
    assert actions.shape[1] == 14 and states.shape[1] == 14
    # joint-position actions track the next state (absolute targets, not deltas)
    assert np.abs(actions[:-1, :6] - states[1:, :6]).mean() < 0.05


def test_collect_bad_inputs(tmp_path):
    with pytest.raises(SimError, match="unknown metaworld task"):
        collect("metaworld", ["nope-v3"], 1, tmp_path / "x", progress=False)
    with pytest.raises(SimError, match="seed"):
        collect("metaworld", ["reach-v3"], 1, tmp_path / "x", seed=999_999, progress=False)
    assert not (tmp_path / "x").exists()
