"""The goal-observable Meta-World env end to end: collect -> train -> evaluate, with the 7-d state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gigaworld_policy.cli import main as gwp


def test_goal_env_collect_train_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    assert gwp(["collect", "--env", "metaworld-goal", "--tasks", "reach-v3", "--episodes", "1", "--out", str(data),
                "--image-size", "32"]) == 0
    assert gwp(["train", "--preset", "tiny", "--data", str(data), "--steps", "2", "--out", str(run), "--no-progress",
                "--set", "train.batch_size=2", "--set", "train.warmup_steps=1",
                "--set", "model.num_embodiments=4"]) == 0  # tiny has 2 rows; metaworld_sawyer_goal is id 3
    from gigaworld_policy.policy import Policy

    robots = Policy.from_checkpoint(str(run)).metadata()["robot_types"]
    assert set(robots) == {"metaworld_sawyer_goal"}
    assert gwp(["eval", "--checkpoint", str(run), "--env", "metaworld-goal", "--tasks", "reach-v3", "--episodes", "1",
                "--max-steps", "9", "--image-size", "24", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["env"] == "metaworld-goal" and report["per_task"]["reach-v3"]["lengths"] == [9]
    assert report["image_size"] == 24  # as asked
    # without --image-size the env renders at the model's view tile (tiny: 32x32), not at a fixed 64
    assert gwp(["eval", "--checkpoint", str(run), "--env", "metaworld-goal", "--tasks", "reach-v3", "--episodes", "1",
                "--max-steps", "3", "--out", str(tmp_path / "ev2")]) == 0
    assert json.loads((tmp_path / "ev2" / "report.json").read_text())["image_size"] == 32
    # the 4-d env gives a robot type this checkpoint never saw: refused before any episode, naming the fit
    capsys.readouterr()
    assert gwp(["eval", "--checkpoint", str(run), "--env", "metaworld", "--tasks", "reach-v3", "--episodes", "1",
                "--max-steps", "9", "--image-size", "32", "--out", str(tmp_path / "ev3")]) == 1
    assert re.search(r"gwp eval: error: .*robot type 'metaworld_sawyer'.*envs that give them: metaworld-goal\)",
                     capsys.readouterr().err)
    assert not (tmp_path / "ev3" / "report.json").exists()
