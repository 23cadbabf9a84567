from __future__ import annotations

import json

import numpy as np
import pytest

from gigaworld_policy.sim.collect import EVAL_SEED_OFFSET
from gigaworld_policy.sim.common import SimError
from gigaworld_policy.sim.evaluate import eval_seed, evaluate
from gigaworld_policy.sim.experts import aloha_expert_actions
from gigaworld_policy.sim.policies import ExpertPolicy, RandomPolicy


def test_metaworld_expert_succeeds_and_random_fails(tmp_path):
    rep = evaluate(ExpertPolicy(), "metaworld", ["reach-v3", "button-press-topdown-v3"], episodes=3, seed=0,
                   replan_every=4, out_dir=tmp_path, image_size=32, progress=False, video=True)
    assert rep["success"] == {"reach-v3": 1.0, "button-press-topdown-v3": 1.0}
    assert rep["mean_success"] == 1.0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["success"] == rep["success"] and "mean_success" in saved
    assert (tmp_path / "report.md").read_text().count("|") > 10
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 6
    rnd = evaluate(RandomPolicy(horizon=8, seed=0), "metaworld", ["button-press-topdown-v3"], episodes=3,
                   replan_every=8, image_size=16, max_steps=100, progress=False)
    assert rnd["mean_success"] <= 1 / 3
    assert rnd["per_task"]["button-press-topdown-v3"]["lengths"] == [100, 100, 100] or rnd["mean_success"] > 0


def test_aloha_expert_in_eval_harness_and_random_fails():
    rep = evaluate(ExpertPolicy(horizon=16), "aloha", ["transfer_cube"], episodes=2, seed=0, replan_every=8,
                   image_size=16, progress=False)
    assert rep["mean_success"] == 1.0
    assert all(length < 300 for length in rep["per_task"]["transfer_cube"]["lengths"])
    rnd = evaluate(RandomPolicy(horizon=8, seed=1), "aloha", ["transfer_cube"], episodes=1, replan_every=8,
                   image_size=16, max_steps=60, progress=False)
    assert rnd["mean_success"] == 0.0


def test_aloha_expert_trajectory_is_deterministic_joint_space():
    a = aloha_expert_actions("transfer_cube", 3)
    b = aloha_expert_actions("transfer_cube", 3)
    assert a.success and np.array_equal(a.actions, b.actions)
    assert a.actions.shape == (300, 14)
    grip = a.actions[:, [6, 13]]
    assert grip.min() >= 0.0 and grip.max() <= 1.0  # grippers in [0, 1]; arms in radians


def test_eval_seeds_disjoint_from_collection_and_deterministic():
    assert eval_seed(0, 0) == EVAL_SEED_OFFSET and eval_seed(5, 3) == EVAL_SEED_OFFSET + 8
    r1 = evaluate(RandomPolicy(seed=4), "metaworld", ["reach-v3"], episodes=2, max_steps=20, image_size=16,
                  progress=False)
    r2 = evaluate(RandomPolicy(seed=4), "metaworld", ["reach-v3"], episodes=2, max_steps=20, image_size=16,
                  progress=False)
    assert r1["per_task"] == r2["per_task"]


class _WrongShapePolicy:
    def infer(self, obs):
        return {"actions": np.zeros((4, 3))}


class _RecordingPolicy:
    """Checks the observation the harness sends and counts calls (replan every k)."""

    def __init__(self):
        self.calls = 0

    def infer(self, obs):
        assert set(obs) == {"images", "state", "prompt", "robot_type"}
        assert set(obs["images"]) == {"corner2", "gripper"}
        assert obs["robot_type"] == "metaworld_sawyer" and obs["state"].shape == (4,)
        self.calls += 1
        return {"actions": np.zeros((10, 4), dtype=np.float32)}


def test_action_chunking_and_errors():
    p = _RecordingPolicy()
    rep = evaluate(p, "metaworld", ["reach-v3"], episodes=1, replan_every=3, max_steps=30, image_size=16,
                   cameras=("corner2", "gripper"), progress=False)
    assert p.calls == 10 and rep["latency_ms"]["chunks"] == 10
    with pytest.raises(SimError, match=r"'actions'.*\[T, 4\]"):
        evaluate(_WrongShapePolicy(), "metaworld", ["reach-v3"], episodes=1, image_size=16, progress=False)
    with pytest.raises(SimError, match="infer"):
        evaluate(object(), "metaworld", ["reach-v3"], episodes=1, progress=False)


class _IndexedChunkPolicy:
    """Chunk i (queried at step s) holds 0.01 * (s + j) + 0.1 * i for step s + j in action dim 0."""

    def __init__(self, horizon=8):
        self.horizon, self.starts = horizon, []

    def reset(self):
        self.starts = []

    def infer(self, obs):
        i, s = len(self.starts), 4 * len(self.starts)
        self.starts.append(s)
        a = np.zeros((self.horizon, 4), dtype=np.float32)
        a[:, 0] = 0.01 * (s + np.arange(self.horizon)) + 0.1 * i
        return {"actions": a}


@pytest.mark.parametrize("coef", [0.0, float(np.log(2.0))])
def test_temporal_ensembling_executes_act_weighted_mean_of_overlapping_chunks(coef):
    from gigaworld_policy.sim.envs import make_env
    from gigaworld_policy.sim.evaluate import run_episode_ensembled

    env = make_env("metaworld", "reach-v3", image_size=16, max_steps=12)
    executed = []
    real_step = env.step
    env.step = lambda a: (executed.append(np.array(a)), real_step(a))[1]
    policy = _IndexedChunkPolicy()
    r = run_episode_ensembled(policy, env, seed=eval_seed(0, 0), execute_steps=4, ensemble_coef=coef)
    env.close()
    assert r["length"] == 12 and len(r["latency_ms"]) == 3 and policy.starts == [0, 4, 8]
    for t, a in enumerate(executed):
        live = [i for i in range(3) if 4 * i <= t < 4 * i + 8]  # chunks covering step t, oldest first
        w = np.exp(-coef * np.arange(len(live)))
        want = sum(wk * (0.01 * t + 0.1 * i) for wk, i in zip(w, live)) / w.sum()
        assert a[0] == pytest.approx(want, abs=1e-6), (t, live)
    # oldest-first weights: with coef ln 2 the older chunk counts twice the newer one
    if coef > 0:
        assert executed[5][0] == pytest.approx((0.05 + 0.5 * 0.15) / 1.5, abs=1e-6)


def test_temporal_ensembling_in_evaluate_and_its_errors():
    # the Meta-World expert answers one action per call: a chunk every step, each executed as it is
    rep = evaluate(ExpertPolicy(), "metaworld", ["reach-v3"], episodes=1, seed=0, replan_every=1, image_size=16,
                   max_steps=150, progress=False, ensemble_coef=0.01)
    assert rep["ensemble_coef"] == 0.01 and rep["success"]["reach-v3"] == 1.0
    with pytest.raises(SimError, match="replan_every"):
        evaluate(ExpertPolicy(horizon=16), "metaworld", ["reach-v3"], episodes=1, replan_every=0, image_size=16,
                 progress=False, ensemble_coef=0.01)
    with pytest.raises(SimError, match="imagine"):
        evaluate(ExpertPolicy(horizon=16), "metaworld", ["reach-v3"], episodes=1, image_size=16, progress=False,
                 ensemble_coef=0.01, imagine=True, out_dir="unused")
    with pytest.raises(SimError, match="ensemble_coef"):
        evaluate(ExpertPolicy(horizon=16), "metaworld", ["reach-v3"], episodes=1, image_size=16, progress=False,
                 ensemble_coef=-1.0)
    with pytest.raises(SimError, match="replan_every: 8 steps between chunks exceed the policy's chunk length 4"):
        evaluate(_IndexedChunkPolicy(horizon=4), "metaworld", ["reach-v3"], episodes=1, replan_every=8,
                 image_size=16, max_steps=10, progress=False, ensemble_coef=0.0)
    # the policy's own errors come through as they are, not renamed after the ensembling options
    with pytest.raises(SimError, match=r"^policy output 'actions'.*\[T, 4\]"):
        evaluate(_WrongShapePolicy(), "metaworld", ["reach-v3"], episodes=1, image_size=16, progress=False,
                 ensemble_coef=0.0)
