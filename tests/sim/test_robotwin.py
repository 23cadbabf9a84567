from __future__ import annotations

import numpy as np
import pytest

from gigaworld_policy.sim import robotwin
from gigaworld_policy.sim.common import SimError


class FakeTaskEnv:
    """Same interface as RoboTwin 2.0's TASK_ENV; succeeds after `succeed_after` actions."""

    def __init__(self, succeed_after: int = 1000):
        self.actions: list[tuple[np.ndarray, str]] = []
        self.succeed_after = succeed_after
        self.eval_success = False

    def get_instruction(self) -> str:
        return "stack the blocks"

    def take_action(self, action, action_type="qpos"):
        self.actions.append((np.asarray(action), action_type))
        self.eval_success = len(self.actions) >= self.succeed_after

    def get_obs(self):
        rgb = np.zeros((48, 64, 3), np.uint8)
        return {"observation": {c: {"rgb": rgb} for c in robotwin.CAMERAS},
                "joint_action": {"vector": np.full(14, float(len(self.actions)))}}


class FakePolicy:
    def __init__(self):
        self.seen: list[dict] = []
        self.resets = 0

    def infer(self, obs):
        self.seen.append(obs)
        base = obs["state"][0]
        return {"actions": base + np.arange(30)[:, None] * np.ones((30, 14), np.float32)}

    def reset(self):
        self.resets += 1


def test_robotwin_adapter_executes_chunk_with_replanning():
    policy = FakePolicy()
    model = robotwin.get_model({"policy": policy, "replan_every": 5})
    env = FakeTaskEnv()
    robotwin.reset_model(model)
    for _ in range(3):
        robotwin.eval(env, model, env.get_obs())
    assert policy.resets == 1 and len(policy.seen) == 3 and len(env.actions) == 15
    assert all(t == "qpos" for _, t in env.actions)
    obs = policy.seen[1]
    assert obs["prompt"] == "stack the blocks" and obs["robot_type"] == "robotwin_aloha_agilex"
    assert set(obs["images"]) == set(robotwin.CAMERAS) and obs["state"].shape == (14,)
    assert obs["state"][0] == 5.0  # the second call sees the state after 5 executed actions
    np.testing.assert_allclose(env.actions[5][0], np.full(14, 5.0))  # first action of the re-planned chunk


def test_robotwin_stops_on_success_and_checks_inputs():
    model = robotwin.get_model({"policy": FakePolicy(), "replan_every": 10})
    env = FakeTaskEnv(succeed_after=3)
    robotwin.eval(env, model, env.get_obs())
    assert len(env.actions) == 3
    bad = env.get_obs()
    del bad["observation"]["left_camera"]
    with pytest.raises(SimError, match="left_camera"):
        robotwin.eval(env, model, bad)
    with pytest.raises(SimError, match="checkpoint"):
        robotwin.get_model({})
