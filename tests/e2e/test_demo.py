"""The whole demo pipeline at the tiny preset: collect -> train -> evaluate -> latency -> imagine -> report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from gigaworld_policy.demo import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_pipeline_writes_every_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = DemoSettings(out=tmp_path / "demo", preset="tiny", tasks=("reach-v3",), episodes=2, train_minutes=1.0,
                     max_steps=20, eval_episodes=1, eval_max_steps=40, image_size=32, latency_repeats=2,
                     cameras=("corner",),  # not the default: collection, training and evaluation all follow it
                     overrides=("train.batch_size=4", "train.save_every=10", "train.warmup_steps=2"))
    report = run_demo(s)
    assert report.exists()
    text = report.read_text()
    for section in ("Closed-loop success", "Latency per action chunk", "Imagined vs real future", "| reach-v3 |",
                    "cameras corner at 32x32"):
        assert section in text, section
    stages = {p.stem for p in (s.out / "stages").glob("*.json")}
    assert stages == {"collect", "train", "evaluate", "latency", "imagine"}
    ev = json.loads((s.out / "eval" / "report.json").read_text())
    assert set(ev["success"]) == {"reach-v3"} and 0.0 <= ev["mean_success"] <= 1.0
    assert ev["checkpoint"] == str(s.out / "run")  # what scripts/pool_eval.py groups reports by
    info = json.loads((s.out / "data" / "meta" / "info.json").read_text())
    assert [k for k in info["features"] if k.startswith("observation.images.")] == ["observation.images.corner"]
    videos = list((s.out / "eval" / "videos").glob("*.mp4"))
    assert videos and all(v.stat().st_size > 0 for v in videos)
    lat = json.loads((s.out / "stages" / "latency.json").read_text())
    assert lat["joint_ms"] > 0 and lat["action_only_cached_ms"] > 0
    strips = json.loads((s.out / "stages" / "imagine.json").read_text())["strips"]
    assert strips
    for p in strips:
        with Image.open(p) as im:
            assert im.size[0] > im.size[1] > 0
    curve = s.out / "loss_curves.png"
    assert curve.exists()
    with Image.open(curve) as im:
        im.verify()
    # `gwp eval` without --cameras renders the cameras the checkpoint was trained on (corner here, not the
    # env's default corner2, which the policy would refuse as a missing camera)
    from gigaworld_policy.cli import main
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.evaluate import checkpoint_cameras

    assert checkpoint_cameras(Policy.from_checkpoint(str(s.out / "run")), "metaworld") == ("corner",)
    assert main(["eval", "--checkpoint", str(s.out / "run"), "--env", "metaworld", "--tasks", "reach-v3",
                 "--episodes", "1", "--max-steps", "9", "--image-size", "32", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["cameras"] == ["corner"]
    # trained without the goal in the state: the goal-observable env is refused, naming the env that fits
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(s.out / "run"), "--env", "metaworld-goal", "--tasks", "reach-v3",
                 "--episodes", "1", "--max-steps", "9", "--image-size", "32"]) == 1
    assert re.search(r"gwp eval: error: .*robot type 'metaworld_sawyer_goal'.*envs that give them: metaworld\)",
                     capsys.readouterr().err)
    # a re-run reuses every finished stage
    mtime = (s.out / "stages" / "train.json").stat().st_mtime
    run_demo(s)
    assert (s.out / "stages" / "train.json").stat().st_mtime == mtime


def test_schedule_is_fitted_to_the_time_budget_and_kept_on_resume(tmp_path: Path) -> None:
    """Without --max-steps the demo plans as many steps as fit the budget (measured), so the cosine schedule
    ends inside it; the plan is stored and a resumed run keeps it."""
    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.demo import fit_steps_to_budget

    cfg = apply_overrides(get_preset("tiny"), ["data.text_encoder=none", "train.batch_size=2"])
    assert fit_steps_to_budget(cfg, 1e-6, tmp_path / "a", probe_steps=2)["steps"] == 1  # never 0
    long = fit_steps_to_budget(cfg, 5.0, tmp_path / "b", probe_steps=2)
    expected = int(60 * 5.0 / (long["probe_step_s"] * long["overhead"]))
    assert abs(long["steps"] - expected) <= 0.01 * expected + 1  # probe_step_s is stored rounded
    assert fit_steps_to_budget(cfg, 5.0, tmp_path / "b") == long  # read back, not re-measured
