"""What every simulated environment of this package looks like to collection and evaluation.

A :class:`SimEnv` is a single-task episode runner in robot units:

  reset(seed)   -> Observation   fully determined by ``seed`` (object layout, robot start, images)
  step(action)  -> StepResult    action in absolute robot units, never clipped
  expert_*      hooks used only by scripted experts (privileged simulator state)

``Observation.to_policy_obs()`` is the robot-side observation of docs/CONTRACTS.md:
``{"images": {camera: uint8 [H, W, 3]}, "state": float32 [S], "prompt": str, "robot_type": str}``;
the camera names are the LeRobot feature suffixes (``observation.images.<camera>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# What the Meta-World reach experts steer onto the goal (experts.MetaWorldExpert; first = default)
REACH_AIMS = ("hand", "fingertips")


class SimError(ValueError):
    """Bad simulation input (unknown env/task/camera, bad action shape); the message names it."""


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera -> uint8 [H, W, 3]
    state: np.ndarray  # float32 [S], robot units
    prompt: str
    robot_type: str
    extra: dict[str, Any] = field(default_factory=dict)  # privileged simulator state (experts only)

    def to_policy_obs(self) -> dict[str, Any]:
        return {"images": dict(self.images), "state": self.state.copy(), "prompt": self.prompt,
                "robot_type": self.robot_type}


@dataclass
class StepResult:
    obs: Observation
    reward: float
    success: bool  # the task is solved at this step
    done: bool  # the episode cannot continue (step limit reached)


class SimEnv(Protocol):
    env_name: str  # "metaworld" | "aloha"
    task: str
    prompt: str
    robot_type: str
    cameras: tuple[str, ...]
    image_size: int
    fps: float
    max_steps: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_low: np.ndarray  # bounds for random exploration (not enforced on actions)
    action_high: np.ndarray

    def reset(self, seed: int) -> Observation: ...

    def step(self, action: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...


def check_action(action: np.ndarray, dim: int, where: str) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (dim,):
        raise SimError(f"{where}: action must have shape ({dim},), got {np.asarray(action).shape}")
    if not np.all(np.isfinite(a)):
        raise SimError(f"{where}: action has non-finite values: {a}")
    return a


def fast_render_settings(model: Any) -> None:
    """Rendering settings that make MuJoCo's software (llvmpipe) rendering 20-40x faster (DESIGN.md 2):
    shadows dominate, then multisampling and reflections. Call before the first render."""
    model.light_castshadow[:] = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z=1.96); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def check_choice(value: str, valid: list[str] | tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise SimError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
    return value


def check_step_allowed(where: str, started: bool, steps: int, max_steps: int) -> None:
    """Refuse a step before reset() or past the episode's step limit (names the env/task)."""
    if not started:
        raise SimError(f"{where}: call reset(seed) before step()")
    if steps >= max_steps:
        raise SimError(f"{where}: episode is over ({max_steps} steps); call reset(seed)")
