"""Embodiment registry: robot type -> id, state/action dimension names, delta-action mask, rate, cameras.

The id selects the row of the model's per-embodiment state/action encoders and decoders, so ids are
stable: never renumber a registered embodiment. ``delta_mask[j]`` True means action dim j is trained
and predicted relative to state dim j of the current frame (DESIGN.md: delta on arm joints, absolute
grippers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class EmbodimentError(KeyError):
    """Unknown robot type, or a model that cannot hold an embodiment id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Embodiment:
    robot_type: str
    id: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    delta_mask: tuple[bool, ...]  # per action dim: relative to the same-index state dim
    fps: float
    cameras: tuple[str, ...]  # camera names (LeRobot feature suffix), tiling order

    def __post_init__(self) -> None:
        if len(self.delta_mask) != len(self.action_names):
            raise ValueError(f"embodiment {self.robot_type!r}: delta_mask has {len(self.delta_mask)} entries, "
                             f"action_names {len(self.action_names)}")
        for j, d in enumerate(self.delta_mask):
            if d and j >= len(self.state_names):
                raise ValueError(f"embodiment {self.robot_type!r}: delta action dim {j} has no state dim")

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def delta_mask_array(self) -> np.ndarray:
        return np.asarray(self.delta_mask, dtype=bool)


EMBODIMENTS: dict[str, Embodiment] = {}


def register_embodiment(emb: Embodiment) -> Embodiment:
    if emb.robot_type in EMBODIMENTS:
        raise ValueError(f"embodiment {emb.robot_type!r} is already registered")
    taken = {e.id: e.robot_type for e in EMBODIMENTS.values()}
    if emb.id in taken:
        raise ValueError(f"embodiment id {emb.id} of {emb.robot_type!r} is already used by {taken[emb.id]!r}")
    EMBODIMENTS[emb.robot_type] = emb
    return emb


def get_embodiment(robot_type: str | None) -> Embodiment:
    try:
        return EMBODIMENTS[str(robot_type)]
    except KeyError:
        raise EmbodimentError(f"unknown robot type {robot_type!r}; known robot types: {sorted(EMBODIMENTS)} "
                              f"(register new ones in gigaworld_policy/data/embodiments.py)") from None


def check_num_embodiments(emb: Embodiment, num_embodiments: int) -> None:
    """The model's per-embodiment tables need a row for ``emb.id``."""
    if emb.id >= num_embodiments:
        raise EmbodimentError(f"embodiment {emb.robot_type!r} has id {emb.id} but model.num_embodiments="
                              f"{num_embodiments} (ids 0..{num_embodiments - 1}); raise model.num_embodiments "
                              f"to at least {emb.id + 1}")


def _aloha_names(prefix: str) -> tuple[str, ...]:
    joints = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    out: list[str] = []
    for side in ("left", "right"):
        out += [f"{side}_{j}" for j in joints] + [f"{side}_gripper"]
    return tuple(f"{prefix}{n}" for n in out)


_ALOHA_DELTA = tuple(not n.endswith("gripper") for n in _aloha_names(""))

# Meta-World: proprio = first 4 dims of the 39-d observation; actions are already deltas (xyz) + grip.
register_embodiment(Embodiment(
    robot_type="metaworld_sawyer", id=0,
    state_names=("hand_x", "hand_y", "hand_z", "gripper_opening"),
    action_names=("dx", "dy", "dz", "grip"),
    delta_mask=(False, False, False, False), fps=80.0, cameras=("corner2",),
))
# Meta-World, goal-observable (env ``metaworld-goal``): the same proprio plus the goal position, obs[36:39] of
# the 39-d vector, as the MT benchmarks expose it. A robot type of its own: its datasets never mix with the 4-d ones.
register_embodiment(Embodiment(
    robot_type="metaworld_sawyer_goal", id=3,
    state_names=("hand_x", "hand_y", "hand_z", "gripper_opening", "goal_x", "goal_y", "goal_z"),
    action_names=("dx", "dy", "dz", "grip"),
    delta_mask=(False, False, False, False), fps=80.0, cameras=("corner2",),
))
# Meta-World with the first object's position too (env ``metaworld-object``, a diagnostic): proprio, obs[4:7]
# (the puck, block, peg, or the handle or button of the task), then the goal, obs[36:39].
register_embodiment(Embodiment(
    robot_type="metaworld_sawyer_object", id=4,
    state_names=("hand_x", "hand_y", "hand_z", "gripper_opening", "obj_x", "obj_y", "obj_z",
                 "goal_x", "goal_y", "goal_z"),
    action_names=("dx", "dy", "dz", "grip"),
    delta_mask=(False, False, False, False), fps=80.0, cameras=("corner2",),
))
# ALOHA (gym-aloha, 50 Hz): 6 joints + gripper per arm; delta on the 12 arm joints, absolute grippers.
register_embodiment(Embodiment(
    robot_type="aloha", id=1, state_names=_aloha_names(""), action_names=_aloha_names(""),
    delta_mask=_ALOHA_DELTA, fps=50.0, cameras=("top",),
))
# RoboTwin 2.0 aloha-agilex: same 14-d joint layout (6+1+6+1), three cameras.
register_embodiment(Embodiment(
    robot_type="robotwin_aloha_agilex", id=2, state_names=_aloha_names(""), action_names=_aloha_names(""),
    delta_mask=_ALOHA_DELTA, fps=25.0, cameras=("head_camera", "left_camera", "right_camera"),
))
