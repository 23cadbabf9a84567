"""Diagnostic, not a study row: `gwp demo` with the Meta-World goal position appended to the proprio state.

Why: reach and push fail in every image-only variant tried (docs/results.md), and the trained policy is
goal-blind. If it succeeds when the goal is handed to it as state, the action head, normalisation and
closed loop are sound and the failure is in seeing the goal; if it still fails, look there first.

The goal enters as three extra state dims (``goal_x/y/z``, the env's ``_target_pos``) under a separate
robot type, ``metaworld_sawyer_goal`` (embodiment id 3), so nothing is mixed with the 4-d datasets.

    OMP_NUM_THREADS=1 python scripts/oracle_goal_demo.py --out study/oracle --tasks reach-v3 \
        --max-steps 1000 --train-minutes 80 --eval-episodes 20

Arguments are those of `gwp demo`.
"""

from __future__ import annotations

import sys

import numpy as np

from gigaworld_policy.data.embodiments import EMBODIMENTS, Embodiment, register_embodiment
from gigaworld_policy.sim import metaworld_env
from gigaworld_policy.sim.common import Observation

ROBOT_TYPE = "metaworld_sawyer_goal"
STATE_NAMES = (*metaworld_env.STATE_NAMES, "goal_x", "goal_y", "goal_z")


def _observation(self) -> Observation:
    obs = _plain_observation(self)
    goal = np.asarray(self._env._target_pos, dtype=np.float32)
    return Observation(images=obs.images, state=np.concatenate([obs.state, goal]), prompt=obs.prompt,
                       robot_type=ROBOT_TYPE)


base = EMBODIMENTS[metaworld_env.ROBOT_TYPE]
register_embodiment(Embodiment(robot_type=ROBOT_TYPE, id=3, state_names=STATE_NAMES,
                               action_names=base.action_names, delta_mask=base.delta_mask, fps=base.fps,
                               cameras=base.cameras))
_plain_observation = metaworld_env.MetaWorldEnv._observation
metaworld_env.MetaWorldEnv._observation = _observation
metaworld_env.MetaWorldEnv.robot_type = ROBOT_TYPE
metaworld_env.MetaWorldEnv.state_names = STATE_NAMES

if __name__ == "__main__":
    from gigaworld_policy.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
