"""Scripted experts.

Meta-World: the per-task scripted policies shipped in ``metaworld.policies`` (they read the privileged
39-d state vector).

ALOHA: our own end-effector experts. Each arm follows a schedule of mocap waypoints (position,
orientation, gripper) computed from the objects' initial poses; the insertion expert closes the loop
in its last phase, steering the peg by the measured peg-to-socket error. They run in the mocap env
(:class:`AlohaEEEnv`); the joint trajectory they produce is then the action sequence of the
joint-position env (:func:`aloha_expert_actions`), which is what we record and evaluate.

Geometry (measured with the stiffened weld): the point midway between a gripper's finger pads sits
4.1 cm behind the mocap point along the gripper's pointing axis. The left arm points along +x at the
identity quaternion, the right arm along -x; pitching a gripper down by ``p`` is a rotation about
world y by +p (left) or -p (right).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from gigaworld_policy.sim.aloha_env import MAX_STEPS, AlohaEEEnv
from gigaworld_policy.sim.common import REACH_AIMS, SimError

# grasp centre relative to the mocap point, in the mocap frame, per arm (0 = left, 1 = right)
_GRASP_OFFSET = (np.array([-0.041, 0.0, 0.004]), np.array([0.041, 0.0, 0.004]))
OPEN, CLOSED = 1.0, 0.0


def _quat_y(angle: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about world y."""
    return np.array([np.cos(angle / 2), 0.0, np.sin(angle / 2), 0.0])


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    w, u = q[0], q[1:]
    return v + 2.0 * np.cross(u, np.cross(u, v) + w * v)


def pitch_down(arm: int, degrees: float) -> np.ndarray:
    """Orientation of arm ``arm`` pointing along its own forward axis, pitched down by ``degrees``."""
    sign = 1.0 if arm == 0 else -1.0
    return _quat_y(sign * np.deg2rad(degrees))


def mocap_for_grasp(arm: int, centre: np.ndarray, quat: np.ndarray) -> np.ndarray:
    """Mocap position that puts the arm's grasp centre at ``centre`` with orientation ``quat``."""
    return np.asarray(centre, dtype=np.float64) - _rotate(quat, _GRASP_OFFSET[arm])


@dataclass
class Waypoint:
    t: int  # step at which the arm reaches this pose
    pos: np.ndarray
    quat: np.ndarray
    grip: float


class WaypointTrajectory:
    """Piecewise-linear interpolation between waypoints (quaternions: normalized lerp)."""

    def __init__(self, waypoints: list[Waypoint]) -> None:
        if any(b.t <= a.t for a, b in itertools.pairwise(waypoints)):
            raise SimError("waypoints: times must be strictly increasing")
        self.waypoints = waypoints

    def __call__(self, t: int) -> tuple[np.ndarray, np.ndarray, float]:
        wps = self.waypoints
        if t <= wps[0].t:
            w = wps[0]
            return w.pos.copy(), w.quat.copy(), w.grip
        for a, b in itertools.pairwise(wps):
            if t <= b.t:
                s = (t - a.t) / (b.t - a.t)
                q = (1 - s) * a.quat + s * (b.quat if np.dot(a.quat, b.quat) >= 0 else -b.quat)
                return (1 - s) * a.pos + s * b.pos, q / np.linalg.norm(q), (1 - s) * a.grip + s * b.grip
        w = wps[-1]
        return w.pos.copy(), w.quat.copy(), w.grip

    @property
    def end(self) -> int:
        return self.waypoints[-1].t


class AlohaScriptedExpert:
    """Base: two waypoint trajectories (left, right) planned at reset; ``act(t)`` -> 16-d mocap action."""

    def __init__(self, env: AlohaEEEnv) -> None:
        self.env = env
        self.left: WaypointTrajectory
        self.right: WaypointTrajectory

    def plan(self) -> None:
        raise NotImplementedError

    def _start(self, arm: int) -> Waypoint:
        pos, quat = self.env.mocap_pose(arm)
        return Waypoint(0, pos, quat, CLOSED)

    def act(self, t: int) -> np.ndarray:
        lp, lq, lg = self.left(t)
        rp, rq, rg = self.right(t)
        return np.concatenate([lp, lq, [lg], rp, rq, [rg]])


class TransferCubeExpert(AlohaScriptedExpert):
    """Right arm picks the cube top-down, lifts it to the middle; the left arm takes it from the side."""

    meet = np.array([0.0, 0.5, 0.25])
    left_depth = 0.02  # left grasp centre this far on the -x side of the cube centre

    def plan(self) -> None:
        cube = self.env.body_pos("box")
        down = pitch_down(1, 90.0)
        grasp_r = cube + np.array([0.006, 0.0, 0.0])  # grasp the +x half, leave room for the left hand
        above_r = grasp_r + np.array([0.0, 0.0, 0.10])
        carry_r = self.meet + np.array([0.006, 0.0, 0.0])
        side = pitch_down(0, 10.0)
        grasp_l = self.meet + np.array([-0.012, 0.0, 0.0])
        pre_l = grasp_l + np.array([-0.10, 0.0, 0.0])
        m = mocap_for_grasp
        self.right = WaypointTrajectory([
            self._start(1),
            Waypoint(60, m(1, above_r, down), down, OPEN),
            Waypoint(100, m(1, grasp_r, down), down, OPEN),
            Waypoint(120, m(1, grasp_r, down), down, CLOSED),
            Waypoint(170, m(1, carry_r, down), down, CLOSED),
            Waypoint(225, m(1, carry_r, down), down, CLOSED),
            Waypoint(240, m(1, carry_r, down), down, OPEN),
            Waypoint(270, m(1, carry_r + np.array([0.05, 0.0, 0.08]), down), down, OPEN),
        ])
        self.left = WaypointTrajectory([
            self._start(0),
            Waypoint(120, m(0, pre_l, side), side, OPEN),
            Waypoint(180, m(0, pre_l, side), side, OPEN),
            Waypoint(205, m(0, grasp_l, side), side, OPEN),
            Waypoint(225, m(0, grasp_l, side), side, CLOSED),
            Waypoint(270, m(0, grasp_l + np.array([-0.03, 0.0, 0.02]), side), side, CLOSED),
        ])

    def act(self, t: int) -> np.ndarray:
        if t == 180:  # the cube sits in the right hand now: aim the left hand at where it really is
            self._replan_left(self.env.body_pos("box"))
        return super().act(t)

    def _replan_left(self, cube: np.ndarray) -> None:
        side = pitch_down(0, 10.0)
        grasp_l = cube + np.array([-self.left_depth, 0.0, 0.0])
        now = self.left(180)
        m = mocap_for_grasp
        self.left = WaypointTrajectory([
            Waypoint(180, now[0], now[1], OPEN),
            Waypoint(205, m(0, grasp_l, side), side, OPEN),
            Waypoint(225, m(0, grasp_l, side), side, CLOSED),
            Waypoint(270, m(0, grasp_l + np.array([-0.03, 0.0, 0.02]), side), side, CLOSED),
        ])


class InsertionExpert(AlohaScriptedExpert):
    """Left arm picks the socket, right arm the peg (both from above); they meet in the middle, then the
    right hand servoes the peg's tip along the socket's axis until it touches the pin.

    The peg pivots a few degrees in the fingers while carried (its tip moves ~7 mm, as much as the
    socket's clearance), so the last phase is closed-loop on the measured tip and socket axis."""

    meet_socket = np.array([-0.07, 0.5, 0.22])
    peg_half = 0.06  # peg half length (gym-aloha XML)
    pitch = 75.0  # measured: 70 -> 17%, 75 -> 50%, 80 -> 42%, 85 -> 8% of 12 seeds
    t_servo, t_push, t_end = 200, 240, 330
    depth_start, depth_end = 0.10, 0.03  # tip position along the socket axis (pin end at 0.04)

    def plan(self) -> None:
        peg = self.env.body_pos("peg")
        socket = self.env.body_pos("socket")
        down_l, down_r = pitch_down(0, self.pitch), pitch_down(1, self.pitch)
        m = mocap_for_grasp
        lift = np.array([0.0, 0.0, 0.12])
        peg_meet = self.meet_socket + np.array([self.depth_start + self.peg_half, 0.0, 0.0])
        self.left = WaypointTrajectory([
            self._start(0),
            Waypoint(70, m(0, socket + lift, down_l), down_l, OPEN),
            Waypoint(110, m(0, socket, down_l), down_l, OPEN),
            Waypoint(130, m(0, socket, down_l), down_l, CLOSED),
            Waypoint(self.t_servo, m(0, self.meet_socket, down_l), down_l, CLOSED),
        ])
        self.right = WaypointTrajectory([
            self._start(1),
            Waypoint(70, m(1, peg + lift, down_r), down_r, OPEN),
            Waypoint(110, m(1, peg, down_r), down_r, OPEN),
            Waypoint(130, m(1, peg, down_r), down_r, CLOSED),
            Waypoint(self.t_servo, m(1, peg_meet, down_r), down_r, CLOSED),
        ])
        self._cmd: np.ndarray | None = None

    def _tip_target_depth(self, t: int) -> float:
        s = min(1.0, max(0.0, (t - self.t_push) / (self.t_end - self.t_push)))
        return (1 - s) * self.depth_start + s * self.depth_end

    def act(self, t: int) -> np.ndarray:
        a = super().act(t)
        if t < self.t_servo:
            return a
        if self._cmd is None:
            self._cmd = a[8:11].copy()
        xmat = self.env.physics.named.data.xmat
        peg_axis = xmat["peg"].reshape(3, 3)[:, 0]
        socket_axis = xmat["socket"].reshape(3, 3)[:, 0]
        tip = self.env.body_pos("peg") - self.peg_half * peg_axis
        target = self.env.body_pos("socket") + self._tip_target_depth(t) * socket_axis
        self._cmd = self._cmd + np.clip(0.3 * (target - tip), -0.004, 0.004)  # integral action, <= 20 cm/s
        a[8:11] = self._cmd
        return a


_EXPERTS: dict[str, type[AlohaScriptedExpert]] = {"transfer_cube": TransferCubeExpert, "insertion": InsertionExpert}


@dataclass
class AlohaExpertRollout:
    actions: np.ndarray  # float32 [T, 14] joint-position actions (absolute radians + gripper 0..1)
    success: bool  # reward 4 reached in the end-effector env
    success_step: int | None


def aloha_expert_actions(task: str, seed: int, max_steps: int | None = None,
                         ee_env: AlohaEEEnv | None = None) -> AlohaExpertRollout:
    """Run our scripted expert in the mocap env and return its trajectory in joint space.

    Action t = the arm joint angles reached after mocap step t, and the gripper command of step t
    (gym-aloha's joint env interprets grippers as the same normalized finger position).
    """
    if task not in _EXPERTS:
        raise SimError(f"unknown ALOHA task {task!r}; valid ALOHA tasks: {', '.join(_EXPERTS)}")
    env = ee_env if ee_env is not None else AlohaEEEnv(task)
    env.reset(seed)
    expert = _EXPERTS[task](env)
    expert.plan()
    steps = int(max_steps if max_steps is not None else MAX_STEPS[task])
    actions = np.zeros((steps, 14), dtype=np.float32)
    success_step = None
    for t in range(steps):
        a = expert.act(t)
        qpos, reward = env.step(a)
        actions[t, :6], actions[t, 6] = qpos[:6], a[7]
        actions[t, 7:13], actions[t, 13] = qpos[7:13], a[15]
        if reward >= 4 and success_step is None:
            success_step = t
    return AlohaExpertRollout(actions=actions, success=success_step is not None, success_step=success_step)


# Meta-World scores reach by the point between the fingertips (``tcp_center``), 4.5 cm below the hand body
# whose position (obs[0:3]) its scripted reach policies steer onto the goal. Those experts therefore converge
# 4.5 cm from the goal, just inside the 5 cm success radius: their demonstrations end 0.3-1.6 cm inside it
# (seeds 0-9). Aimed at the fingertips, the same controller converges onto the goal (demonstrations end
# 2.6-3.2 cm inside). A policy trained on such data did not reach better (docs/results.md): the option
# stays, the default is the shipped policy.
FINGERTIP_AIMED_TASKS = ("reach-v3", "reach-wall-v3")


class MetaWorldExpert:
    """metaworld.policies scripted policy of one task, fed the privileged 39-d state.

    ``reach_aim``: "hand" (default) is Meta-World's policy as shipped; "fingertips" feeds the reach tasks'
    policies the fingertip centre in place of the hand's position, so they steer the point Meta-World
    scores onto the goal. Other tasks ignore it.
    """

    def __init__(self, task: str, reach_aim: str = "hand") -> None:
        from gigaworld_policy.sim.metaworld_env import expert_policy_class

        if reach_aim not in REACH_AIMS:
            raise SimError(f"reach_aim: must be one of {', '.join(REACH_AIMS)}, got {reach_aim!r}")
        self.policy = expert_policy_class(task)()
        self.task = task
        self.aims_fingertips = reach_aim == "fingertips" and task in FINGERTIP_AIMED_TASKS

    def act(self, full_obs: np.ndarray, fingertips: np.ndarray | None = None) -> np.ndarray:
        """The action for ``full_obs``; ``fingertips`` (xyz, MetaWorldEnv.fingertip_position) is needed
        when this expert aims the fingertips."""
        import warnings

        if self.aims_fingertips:
            if fingertips is None:
                raise SimError(f"MetaWorldExpert({self.task!r}): aims the fingertips, so act() needs "
                               "fingertips= (MetaWorldEnv.fingertip_position())")
            full_obs = np.array(full_obs, dtype=np.float64)
            full_obs[:3] = fingertips
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as intended
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.policy.get_action(full_obs), dtype=np.float32)
