"""Simulation: Meta-World and ALOHA environments, scripted experts, demo collection, closed-loop
evaluation and the RoboTwin 2.0 policy adapter.

MuJoCo picks its OpenGL backend when it is first imported; this machine class is headless, so the
package selects EGL (Mesa) unless the caller already chose a backend. This is the one place the
project touches environment variables, and only as a default.

Modules (import the one you need; this file stays cheap so ``gwp --help`` does not load MuJoCo):
  common      the SimEnv interface shared by every environment, fast-render settings, Wilson interval
  metaworld   Meta-World task sets (MT10, MT50, ML45), instructions, the image/state wrapper
  aloha       gym-aloha joint-position env (TransferCube, Insertion) and the end-effector (mocap) env
  experts     scripted experts: Meta-World's policies, our own ALOHA end-effector experts + joint replay
  envs        ``make_env`` / ``resolve_tasks``: one entry point for both simulators
  policies    the policy protocol used by evaluation, ExpertPolicy and RandomPolicy
  collect     ``gwp collect``: expert demos -> LeRobot v3.0 dataset
  evaluate    ``gwp eval``: closed-loop rollouts with action chunking, report.json / report.md / mp4
  robotwin    RoboTwin 2.0 policy interface (get_model / eval / reset_model)
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
