"""RoboTwin 2.0 policy adapter (its ``deploy_policy`` interface): ``get_model``, ``eval``, ``reset_model``.

RoboTwin calls ``get_model(usr_args)`` once, ``reset_model(model)`` before each episode and
``eval(TASK_ENV, model, observation)`` repeatedly until the episode ends. Each ``eval`` call builds our
robot-side observation (docs/CONTRACTS.md) from RoboTwin's, asks the policy for a chunk of absolute
14-d joint targets (6 + gripper per arm) and executes the first ``replan_every`` of them with
``TASK_ENV.take_action(a, action_type='qpos')``, stopping early once the task reports success.
SAPIEN cannot render on this project's CPU machines (DESIGN.md 2), so it is tested against a fake env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gigaworld_policy.sim.common import SimError

ROBOT_TYPE = "robotwin_aloha_agilex"
CAMERAS = ("head_camera", "left_camera", "right_camera")
ACTION_DIM = 14


@dataclass
class RoboTwinModel:
    policy: Any  # anything with infer(obs) -> {"actions": [T, 14]}; optional reset()
    replan_every: int = 24
    cameras: tuple[str, ...] = CAMERAS
    robot_type: str = ROBOT_TYPE


def get_model(usr_args: dict[str, Any]) -> RoboTwinModel:
    """usr_args: ``checkpoint`` (or ``ckpt_path``) -> gigaworld_policy.policy.Policy, or ``policy`` (an
    object with ``infer``); optional ``replan_every`` (default 24), ``cameras``, ``robot_type``, ``device``,
    ``vae`` (the Wan 2.2 VAE folder of a wan2.2-vae checkpoint)."""
    policy = usr_args.get("policy")
    if policy is None:
        ckpt = usr_args.get("checkpoint") or usr_args.get("ckpt_path")
        if not ckpt:
            raise SimError("usr_args: give 'checkpoint' (or 'ckpt_path') or a 'policy' object")
        from gigaworld_policy.policy import Policy

        policy = Policy.from_checkpoint(ckpt, device=usr_args.get("device", "cpu"), vae=usr_args.get("vae"))
    replan = int(usr_args.get("replan_every", 24))
    if replan < 1:
        raise SimError(f"usr_args['replan_every']: must be >= 1, got {replan}")
    return RoboTwinModel(policy=policy, replan_every=replan,
                         cameras=tuple(usr_args.get("cameras", CAMERAS)),
                         robot_type=str(usr_args.get("robot_type", ROBOT_TYPE)))


def encode_obs(observation: dict[str, Any], instruction: str, model: RoboTwinModel) -> dict[str, Any]:
    """RoboTwin observation -> our robot-side observation."""
    try:
        cams = observation["observation"]
        images = {c: np.asarray(cams[c]["rgb"], dtype=np.uint8) for c in model.cameras}
    except KeyError as e:
        raise SimError(f"RoboTwin observation: missing observation['observation'][{e.args[0]!r}]['rgb'] "
                       f"(cameras expected: {list(model.cameras)})") from None
    try:
        state = np.asarray(observation["joint_action"]["vector"], dtype=np.float32).reshape(-1)
    except KeyError:
        raise SimError("RoboTwin observation: missing observation['joint_action']['vector']") from None
    if state.shape != (ACTION_DIM,):
        raise SimError(f"RoboTwin observation['joint_action']['vector']: expected {ACTION_DIM} values, got {state.shape}")
    return {"images": images, "state": state, "prompt": str(instruction), "robot_type": model.robot_type}


def eval(TASK_ENV: Any, model: RoboTwinModel, observation: dict[str, Any]) -> None:  # RoboTwin fixes these names
    obs = encode_obs(observation, TASK_ENV.get_instruction(), model)
    actions = np.asarray(model.policy.infer(obs)["actions"], dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
        raise SimError(f"policy output 'actions': expected shape [T, {ACTION_DIM}], got {list(actions.shape)}")
    for a in actions[: model.replan_every]:
        TASK_ENV.take_action(a, action_type="qpos")
        if getattr(TASK_ENV, "eval_success", False):
            break


def reset_model(model: RoboTwinModel) -> None:
    if hasattr(model.policy, "reset"):
        model.policy.reset()
