"""ALOHA bimanual ViperX tasks from gym-aloha 0.1.5: TransferCube and Insertion.

:class:`AlohaEnv` is the joint-position environment policies are trained and evaluated in: 14-d absolute
actions (6 arm joints in radians + a gripper opening in [0, 1] per arm, left first), never clipped (the
declared Box(-1, 1) of gym-aloha is wrong), state = the same 14 joint quantities, success = reward 4.
:class:`AlohaEEEnv` is the end-effector (mocap) variant the scripted experts drive; gym-aloha's
``AlohaEnv`` refuses it, so both are built here as dm_control ``control.Environment`` s from gym-aloha's
task classes and XMLs. We subclass the task classes only to (1) place objects from an explicit pose
(gym-aloha reads a module-global or unseeded RNG) and (2) skip gym-aloha's three 480x640 renders per
step: we render only the cameras asked for, at ``image_size``, with the fast-render settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dm_control import mujoco as dm_mujoco
from dm_control.rl import control
from dm_control.suite import base
from gym_aloha.constants import ASSETS_DIR, DT, START_ARM_POSE
from gym_aloha.tasks.sim import InsertionTask, TransferCubeTask
from gym_aloha.tasks.sim_end_effector import InsertionEndEffectorTask, TransferCubeEndEffectorTask
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from gigaworld_policy.sim.common import (
    Observation,
    SimError,
    StepResult,
    check_action,
    check_choice,
    check_step_allowed,
    fast_render_settings,
)

ROBOT_TYPE = "aloha"
TASKS: dict[str, str] = {  # task -> instruction
    "transfer_cube": "pick up the red cube with the right arm and hand it over to the left arm",
    "insertion": "pick up the red peg and the blue socket and insert the peg into the socket",
}
MAX_STEPS: dict[str, int] = {"transfer_cube": 300, "insertion": 400}  # experts finish at ~250 / ~340
CAMERAS = ("top", "left_wrist", "right_wrist", "angle", "front_close")
DEFAULT_CAMERAS = ("top",)
_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{j}" for side in ("left", "right") for j in (*_JOINTS, "gripper"))
SUCCESS_REWARD = 4
# The shipped mocap weld (solimp .25 .25) lets the gripper lag ~3 cm under MuJoCo 3.3 and scripted
# pick-ups fail; stiffening it makes the mocap target a reliable end-effector command (DESIGN.md 2).
WELD_SOLIMP = (0.9, 0.95)


def object_pose(task: str, seed: int) -> np.ndarray:
    """Initial free-joint poses (x y z qw qx qy qz per object) for a seed: [7] cube or [14] peg+socket."""
    if task == "transfer_cube":
        return np.asarray(sample_box_pose(seed), dtype=np.float64)
    peg, socket = sample_insertion_pose(seed)
    return np.concatenate([peg, socket]).astype(np.float64)


def _place_objects(physics: Any, pose: np.ndarray) -> None:
    physics.data.qpos[16:16 + len(pose)] = pose  # robot joints occupy qpos[:16]; free joints follow


class _JointTaskMixin:
    """gym-aloha joint-position task with an explicit object pose and no built-in rendering."""

    pose: np.ndarray

    def initialize_episode(self, physics: Any) -> None:
        physics.named.data.qpos[:16] = START_ARM_POSE
        np.copyto(physics.data.ctrl, START_ARM_POSE)
        _place_objects(physics, self.pose)
        base.Task.initialize_episode(self, physics)  # type: ignore[arg-type]

    def get_observation(self, physics: Any) -> dict[str, Any]:
        return {"qpos": self.get_qpos(physics)}  # type: ignore[attr-defined]


class _TransferCubeJoint(_JointTaskMixin, TransferCubeTask):
    pass


class _InsertionJoint(_JointTaskMixin, InsertionTask):
    pass


class _EETaskMixin:
    """gym-aloha end-effector task with an explicit object pose and no built-in rendering."""

    pose: np.ndarray

    def initialize_episode(self, physics: Any) -> None:
        self.initialize_robots(physics)  # type: ignore[attr-defined]
        _place_objects(physics, self.pose)
        base.Task.initialize_episode(self, physics)  # type: ignore[arg-type]

    def get_observation(self, physics: Any) -> dict[str, Any]:
        return {"qpos": self.get_qpos(physics)}  # type: ignore[attr-defined]


class _TransferCubeEE(_EETaskMixin, TransferCubeEndEffectorTask):
    pass


class _InsertionEE(_EETaskMixin, InsertionEndEffectorTask):
    pass


def _build(task: str, end_effector: bool) -> control.Environment:
    prefix = "bimanual_viperx_end_effector_" if end_effector else "bimanual_viperx_"
    physics = dm_mujoco.Physics.from_xml_path(str(ASSETS_DIR / f"{prefix}{task}.xml"))
    if end_effector:
        physics.model.eq_solimp[:, :2] = WELD_SOLIMP
        cls: type = _TransferCubeEE if task == "transfer_cube" else _InsertionEE
    else:
        cls = _TransferCubeJoint if task == "transfer_cube" else _InsertionJoint
    fast_render_settings(physics.model)
    return control.Environment(physics, cls(), time_limit=float("inf"), control_timestep=DT,
                               n_sub_steps=None, flat_observation=False)


class AlohaEnv:
    """Joint-position ALOHA env: 14-d absolute actions, 14-d joint state, images of chosen cameras."""

    env_name = "aloha"
    robot_type = ROBOT_TYPE
    fps = 1.0 / DT
    state_names = JOINT_NAMES
    action_names = JOINT_NAMES

    def __init__(self, task: str, image_size: int = 64, cameras: tuple[str, ...] = DEFAULT_CAMERAS,
                 max_steps: int | None = None) -> None:
        check_choice(task, list(TASKS), "ALOHA task")
        for cam in cameras:
            check_choice(cam, list(CAMERAS), "ALOHA camera")
        if not cameras:
            raise SimError("cameras: at least one camera is needed")
        if image_size < 8:
            raise SimError(f"image_size: must be >= 8, got {image_size}")
        self.task = task
        self.prompt = TASKS[task]
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.max_steps = int(max_steps if max_steps is not None else MAX_STEPS[task])
        if self.max_steps < 1:
            raise SimError(f"max_steps: must be >= 1, got {self.max_steps}")
        self._env = _build(task, end_effector=False)
        # exploration bounds (random policy): the start pose +-0.6 rad within the joint limits, grippers 0..1
        ranges = self._env.physics.model.actuator_ctrlrange
        start = np.asarray(START_ARM_POSE)[[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]]
        arm_ranges = ranges[[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]]
        lo, hi = np.maximum(start - 0.6, arm_ranges[:, 0]), np.minimum(start + 0.6, arm_ranges[:, 1])
        self.action_low = np.concatenate([lo[:6], [0.0], lo[6:], [0.0]])
        self.action_high = np.concatenate([hi[:6], [1.0], hi[6:], [1.0]])
        self._steps = 0
        self._qpos: np.ndarray | None = None
        self.seed: int | None = None

    @property
    def physics(self) -> Any:
        return self._env.physics

    def reset(self, seed: int) -> Observation:
        self._env.task.pose = object_pose(self.task, int(seed))
        ts = self._env.reset()  # dm_control resets all MuJoCo data: a function of the pose alone
        self._qpos = ts.observation["qpos"]
        self._steps = 0
        self.seed = int(seed)
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        check_step_allowed(f"aloha/{self.task}", self._qpos is not None, self._steps, self.max_steps)
        a = check_action(action, 14, f"aloha/{self.task}")
        self._steps += 1
        try:
            ts = self._env.step(a)
        except control.PhysicsError:  # a wild action made the simulation diverge: the episode fails here
            self._steps = self.max_steps
            return StepResult(obs=self._observation(), reward=0.0, success=False, done=True)
        self._qpos = ts.observation["qpos"]
        reward = float(ts.reward or 0.0)
        return StepResult(obs=self._observation(), reward=reward, success=reward >= SUCCESS_REWARD,
                          done=self._steps >= self.max_steps)

    def render(self, camera: str) -> np.ndarray:
        return self.physics.render(height=self.image_size, width=self.image_size, camera_id=camera)

    def _observation(self) -> Observation:
        assert self._qpos is not None
        return Observation(images={cam: self.render(cam) for cam in self.cameras},
                           state=self._qpos.astype(np.float32), prompt=self.prompt, robot_type=ROBOT_TYPE)

    @property
    def steps(self) -> int:
        return self._steps

    def close(self) -> None:
        self._env.close()


class AlohaEEEnv:
    """End-effector (mocap) ALOHA env for scripted experts; no images.

    Action (16-d): per arm (left, right) mocap position xyz, mocap quaternion wxyz, gripper in [0, 1].
    """

    def __init__(self, task: str) -> None:
        check_choice(task, list(TASKS), "ALOHA task")
        self.task = task
        self._env = _build(task, end_effector=True)

    @property
    def physics(self) -> Any:
        return self._env.physics

    def reset(self, seed: int) -> np.ndarray:
        self._env.task.pose = object_pose(self.task, int(seed))
        return self._env.reset().observation["qpos"]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        ts = self._env.step(check_action(action, 16, f"aloha-ee/{self.task}"))
        return ts.observation["qpos"], float(ts.reward or 0.0)

    def mocap_pose(self, arm: int) -> tuple[np.ndarray, np.ndarray]:
        return self.physics.data.mocap_pos[arm].copy(), self.physics.data.mocap_quat[arm].copy()

    def body_pos(self, name: str) -> np.ndarray:
        return self.physics.named.data.xpos[name].copy()

    def geom_pos(self, name: str) -> np.ndarray:
        return self.physics.named.data.geom_xpos[name].copy()
