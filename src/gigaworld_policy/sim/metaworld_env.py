"""Meta-World (v3, 3.1.1) as a language-conditioned, image-based multi-task benchmark.

One :class:`MetaWorldEnv` runs one task. Design choices:
- Goal-observable task variant (as in MT10/MT50) so the scripted experts can read the goal; by default the
  policy sees images + 4 proprio dims (hand xyz, gripper opening), not the 39-d vector (``state`` of
  :class:`MetaWorldEnv` adds the goal, or the first object's position and the goal, from it).
- Fresh object/goal layouts drawn from the env's own RNG, re-seeded on every ``reset(seed)``: the
  layout, robot start and images are a pure function of the seed, whether the env is new or re-used
  (tests/sim/test_envs.py). Meta-World never clears its "simulation went unstable" flag; we do.
- Images come from our own ``mujoco.Renderer`` (only the cameras asked for, at ``image_size``, with the
  fast-render settings). Meta-World's corner cameras are mounted upside down (their up axis points
  down); we rotate such cameras' images by 180 degrees. A row flip alone would give a mirror image.
- ``workspace`` is a camera of ours, not in the Sawyer scene: a free camera framed on the table, so the
  objects and goals of the MT10 tasks fill the image instead of a third of it (``corner2`` shows the
  whole robot and the room; at 64x64 reach's goal marker is 1-2 pixels there, 3-6 here).
"""

from __future__ import annotations

import mujoco
import numpy as np

from gigaworld_policy.data.embodiments import get_embodiment
from gigaworld_policy.sim.common import (
    Observation,
    SimError,
    StepResult,
    check_action,
    check_choice,
    check_step_allowed,
    fast_render_settings,
)

ROBOT_TYPE = "metaworld_sawyer"
GOAL_ROBOT_TYPE = "metaworld_sawyer_goal"  # state="goal" (env "metaworld-goal")
OBJECT_ROBOT_TYPE = "metaworld_sawyer_object"  # state="object" (env "metaworld-object")
MAX_EPISODE_STEPS = 500  # Meta-World raises when stepping past its max_path_length
# What the policy's state holds: its robot type (whose registered embodiment names the dims,
# data/embodiments.py) and the parts of Meta-World's 39-d observation it is cut from (hand xyz 0:3,
# gripper 3, first object's position 4:7, goal 36:39).
STATE_VARIANTS: dict[str, tuple[str, tuple[slice, ...]]] = {
    "proprio": (ROBOT_TYPE, (slice(0, 4),)),
    "goal": (GOAL_ROBOT_TYPE, (slice(0, 4), slice(36, 39))),
    "object": (OBJECT_ROBOT_TYPE, (slice(0, 4), slice(4, 7), slice(36, 39))),
}
ACTION_NAMES = ("dx", "dy", "dz", "grip")
# What collection records as ``observation.environment_state`` (LeRobot's key for the scene's state): the
# first object's position, obs[4:7] (the puck, block, peg, or the handle or button of the task). Never an
# input of the policy; a training target of the auxiliary head (model.aux_dim, docs/CONTRACTS.md).
ENVIRONMENT_STATE_PART = slice(4, 7)
ENVIRONMENT_STATE_NAMES = ("object_x", "object_y", "object_z")
# our camera name -> MuJoCo camera name in the Sawyer scene
CAMERAS: dict[str, str] = {
    "corner": "corner", "corner2": "corner2", "corner3": "corner3", "corner4": "corner4",
    "topview": "topview", "behind_gripper": "behindGripper", "gripper": "gripperPOV",
}
# our free cameras: lookat (xyz, m), distance (m), azimuth and elevation (degrees), MuJoCo's convention.
# "workspace": every MT10 object, goal and hand start over 60 layouts per task projects within 0.82 of the
# image half-width of the centre (measured once with the pinhole projection of this camera).
FREE_CAMERAS: dict[str, tuple[tuple[float, float, float], float, float, float]] = {
    "workspace": ((0.0, 0.7, 0.1), 1.25, 135.0, -30.0),
}
DEFAULT_CAMERAS = ("corner2",)

# One instruction per task (MT50 = all 50 v3 tasks).
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the basketball and dunk it into the hoop",
    "bin-picking-v3": "pick up the puck from one bin and place it into the other bin",
    "box-close-v3": "pick up the lid and place it on the box to close it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top, reaching over the wall",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button from the front, reaching around the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the coffee mug away from the coffee machine",
    "coffee-push-v3": "push the coffee mug under the coffee machine",
    "dial-turn-v3": "rotate the dial a full turn",
    "disassemble-v3": "pick the nut up and off the peg",
    "door-close-v3": "push the door closed",
    "door-lock-v3": "turn the door lock down to lock the door",
    "door-open-v3": "open the door by pulling its handle",
    "door-unlock-v3": "turn the door lock up to unlock the door",
    "hand-insert-v3": "push the puck into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "turn the faucet handle to the left to open it",
    "faucet-close-v3": "turn the faucet handle to the right to close it",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the goal",
    "peg-insert-side-v3": "pick up the peg and insert it into the hole from the side",
    "peg-unplug-side-v3": "pull the peg out of the hole from the side",
    "soccer-v3": "push the soccer ball into the goal",
    "stick-push-v3": "pick up the stick and use it to push the thermos to the goal",
    "stick-pull-v3": "pick up the stick and use it to pull the thermos to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "pick up the block and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}


def task_sets() -> dict[str, tuple[str, ...]]:
    """Named Meta-World task lists: MT10, MT50, ML45-train, ML45-test (from metaworld.env_dict)."""
    from metaworld import env_dict

    return {
        "MT10": tuple(env_dict.MT10_V3),
        "MT50": tuple(env_dict.MT50_V3),
        "ML45-train": tuple(env_dict.ML45_V3["train"]),
        "ML45-test": tuple(env_dict.ML45_V3["test"]),
    }


def all_tasks() -> tuple[str, ...]:
    return tuple(INSTRUCTIONS)


class MetaWorldEnv:
    """One Meta-World task: images from fixed cameras, a proprio state, 4-d actions.

    ``state`` (``STATE_VARIANTS``): ``"proprio"`` (default) gives hand xyz and gripper opening, so the goal and
    the objects must be read from the images (the marker of reach, push and pick-place is drawn in them).
    ``"goal"`` appends the goal position (obs[36:39] of Meta-World's 39-d vector, the goal-observable
    observation of its MT benchmarks; robot type ``metaworld_sawyer_goal``). ``"object"`` appends the first
    object's position (obs[4:7]: the puck, block, peg, or the handle or button of the task) and then the
    goal (robot type ``metaworld_sawyer_object``): the positions the scripted experts act on, a diagnostic of
    what the images fail to give the policy."""

    env_name = "metaworld"
    robot_type = ROBOT_TYPE
    fps = 80.0  # 0.0025 s physics step x frame_skip 5
    state_names: tuple[str, ...]
    action_names = ACTION_NAMES
    environment_state_names = ENVIRONMENT_STATE_NAMES

    def __init__(self, task: str, image_size: int = 64, cameras: tuple[str, ...] = DEFAULT_CAMERAS,
                 max_steps: int = MAX_EPISODE_STEPS, state: str = "proprio") -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        check_choice(task, list(ALL_V3_ENVIRONMENTS), "Meta-World task")
        check_choice(state, list(STATE_VARIANTS), "Meta-World state")
        for cam in cameras:
            check_choice(cam, [*CAMERAS, *FREE_CAMERAS], "Meta-World camera")
        if not cameras:
            raise SimError("cameras: at least one camera is needed")
        if not 1 <= max_steps <= MAX_EPISODE_STEPS:
            raise SimError(f"max_steps: must be in [1, {MAX_EPISODE_STEPS}] for Meta-World, got {max_steps}")
        if image_size < 8:
            raise SimError(f"image_size: must be >= 8, got {image_size}")
        self.task = task
        self.prompt = INSTRUCTIONS[task]
        self.state_variant = state
        self.robot_type, self._state_parts = STATE_VARIANTS[state]
        self.state_names = get_embodiment(self.robot_type).state_names
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.max_steps = int(max_steps)
        self.action_low = np.array([-1.0, -1.0, -1.0, -1.0])
        self.action_high = np.array([1.0, 1.0, 1.0, 1.0])

        env = ALL_V3_ENVIRONMENTS[task]()  # render_mode=None: we render ourselves
        env._partially_observable = False  # goal in the 39-d vector (MT benchmarks): experts, and state="goal"
        env.__dict__.pop("sawyer_observation_space", None)  # cached property depends on the flag above
        env._set_task_called = True
        env._freeze_rand_vec = False  # fresh layouts ...
        env.seeded_rand_vec = True  # ... drawn from env.np_random, which reset(seed) re-seeds
        env.max_path_length = MAX_EPISODE_STEPS
        self._env = env
        fast_render_settings(env.model)
        self._renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
        mujoco.mj_forward(env.model, env.data)
        # cameras mounted upside down (up axis pointing down in the world) get rotated 180 degrees
        self._cameras: dict[str, str | mujoco.MjvCamera] = {}
        self._rotate: dict[str, bool] = {}
        for cam in cameras:
            if cam in FREE_CAMERAS:
                lookat, distance, azimuth, elevation = FREE_CAMERAS[cam]
                free = mujoco.MjvCamera()
                free.type = mujoco.mjtCamera.mjCAMERA_FREE
                free.lookat[:], free.distance, free.azimuth, free.elevation = lookat, distance, azimuth, elevation
                self._cameras[cam], self._rotate[cam] = free, False
            else:
                self._cameras[cam] = CAMERAS[cam]
                self._rotate[cam] = bool(env.data.camera(CAMERAS[cam]).xmat.reshape(3, 3)[2, 1] < 0)
        self._full_obs: np.ndarray | None = None
        self._steps = 0
        self.seed: int | None = None
        self.hand_init_pos = np.array(env.hand_init_pos, dtype=np.float64)  # the task's own start, restored after reset

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: int, hand_offset: np.ndarray | None = None) -> Observation:
        """Reset to the layout of ``seed``. ``hand_offset`` (xyz metres, collection only) starts the hand
        that far from the task's own start for this episode, clipped into Meta-World's mocap range (the
        hand cannot be commanded outside it); the next reset without it starts there again."""
        env = self._env
        if hand_offset is not None:
            offset = np.asarray(hand_offset, dtype=np.float64)
            if offset.shape != (3,) or not np.isfinite(offset).all():
                raise SimError(f"metaworld/{self.task}: hand_offset must be 3 finite numbers (xyz metres), "
                               f"got {hand_offset!r}")
            env.hand_init_pos = np.clip(self.hand_init_pos + offset, env.mocap_low, env.mocap_high)
        try:
            env.seed(int(seed))  # re-seeds env.np_random: layout is a function of the seed alone
            env._did_see_sim_exception = False  # Meta-World never clears it: a re-used env would stay stuck
            obs, _ = env.reset()
            # reset_model moves bodies and sites (the drawer, the window, the goal marker) after Meta-World's
            # last forward pass, so the reset observation and a render would show the previous layout there
            # (drawer-open, window-open, window-close: 3-23 cm off; reach's goal marker 10-29 cm). Recompute
            # positions from the state, as step() does.
            mujoco.mj_forward(env.model, env.data)
            current = env._get_curr_obs_combined_no_goal()
            obs[:18] = current
            obs[18:36] = current  # Meta-World stacks the previous frame; at reset, the same one
            env._prev_obs = current.copy()
        finally:
            env.hand_init_pos = self.hand_init_pos.copy()
        self._full_obs = obs
        self._steps = 0
        self.seed = int(seed)
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        check_step_allowed(f"metaworld/{self.task}", self._full_obs is not None, self._steps, self.max_steps)
        a = check_action(action, 4, f"metaworld/{self.task}")
        obs, reward, _, _, info = self._env.step(a.astype(np.float32))
        self._full_obs = obs
        self._steps += 1
        return StepResult(obs=self._observation(), reward=float(reward), success=bool(info["success"]),
                          done=self._steps >= self.max_steps)

    def render(self, camera: str) -> np.ndarray:
        if camera not in self._cameras:
            raise SimError(f"metaworld/{self.task}: camera {camera!r} was not opened (cameras: {list(self._cameras)})")
        self._renderer.update_scene(self._env.data, camera=self._cameras[camera])
        img = self._renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1]) if self._rotate[camera] else img.copy()

    def _observation(self) -> Observation:
        assert self._full_obs is not None
        state = np.concatenate([self._full_obs[part] for part in self._state_parts])
        return Observation(
            images={cam: self.render(cam) for cam in self.cameras},
            state=state.astype(np.float32),
            prompt=self.prompt, robot_type=self.robot_type,
        )

    @property
    def steps(self) -> int:
        return self._steps

    def expert_state(self) -> np.ndarray:
        """The privileged 39-d Meta-World state vector (scripted experts only)."""
        if self._full_obs is None:
            raise SimError(f"metaworld/{self.task}: call reset(seed) first")
        return self._full_obs.copy()

    def fingertip_position(self) -> np.ndarray:
        """The point between the fingertips (Meta-World's ``tcp_center``, 4.5 cm below the hand body at rest):
        where reach is scored (scripted experts only; experts.MetaWorldExpert)."""
        if self._full_obs is None:
            raise SimError(f"metaworld/{self.task}: call reset(seed) first")
        return np.array(self._env.tcp_center, dtype=np.float64)

    def environment_state(self) -> np.ndarray:
        """The first object's position (``environment_state_names``): recorded by collection, never observed."""
        return self.expert_state()[ENVIRONMENT_STATE_PART].astype(np.float32)

    def close(self) -> None:
        self._renderer.close()
        self._env.close()


def expert_policy_class(task: str) -> type:
    """The metaworld.policies scripted policy class of a task (e.g. SawyerPickPlaceV3Policy)."""
    import metaworld.policies as mp

    check_choice(task, list(INSTRUCTIONS), "Meta-World task")
    names = {n.lower(): n for n in dir(mp) if n.startswith("Sawyer") and n.endswith("V3Policy")}
    base = task.removesuffix("-v3").replace("peg-insert-side", "peg-insertion-side").replace("-", "")
    key = f"sawyer{base}v3policy"
    if key not in names:
        raise SimError(f"no scripted Meta-World policy for task {task!r} (looked for {key!r})")
    return getattr(mp, names[key])
