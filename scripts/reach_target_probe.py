"""Where does a policy take the hand on reach-v3: to the goal, or to the puck?

Runs closed-loop reach-v3 episodes with the evaluation's own loop (`sim/evaluate.py::run_episode`, the
evaluation seeds of `gwp eval --seed 0`, re-planning every 8 actions) and prints, per episode, success and
the closest approach of the gripper's centre (the point reach-v3's success is measured from, within 5 cm of
the goal) to the goal and to the puck (the first object), in cm. Usage:

    python scripts/reach_target_probe.py CHECKPOINT ENV [EPISODES]     # ENV: metaworld-goal or metaworld-object
"""

from __future__ import annotations

import sys

import numpy as np

from gigaworld_policy.policy import Policy
from gigaworld_policy.sim.envs import make_env
from gigaworld_policy.sim.evaluate import checkpoint_cameras, checkpoint_image_size, eval_seed, run_episode


class DistanceTracker:
    """Wraps a Meta-World env; records the gripper centre's distance to the goal and the puck after each step."""

    def __init__(self, env) -> None:
        self.env, self.to_goal, self.to_puck = env, [], []

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, seed: int):
        obs = self.env.reset(seed)
        full = self.env.expert_state()
        self.goal, self.puck, self.to_goal, self.to_puck = full[36:39], full[4:7], [], []
        return obs

    def step(self, action):
        result = self.env.step(action)
        tcp = self.env._env.tcp_center  # what reach-v3 measures its success from
        self.to_goal.append(np.linalg.norm(tcp - self.goal))
        self.to_puck.append(np.linalg.norm(tcp - self.puck))
        return result


def main(checkpoint: str, env_name: str, episodes: int = 10) -> None:
    policy = Policy.from_checkpoint(checkpoint)
    env = DistanceTracker(make_env(env_name, "reach-v3", image_size=checkpoint_image_size(policy, env_name) or 64,
                                   cameras=checkpoint_cameras(policy, env_name)))
    closest_goal, closest_puck = [], []
    for ep in range(episodes):
        out = run_episode(policy, env, eval_seed(0, ep), replan_every=8)
        closest_goal.append(min(env.to_goal))
        closest_puck.append(min(env.to_puck))
        print(f"episode {ep}: success {out['success']}, steps {out['length']}, closest to goal "
              f"{100 * closest_goal[-1]:.1f} cm, to puck {100 * closest_puck[-1]:.1f} cm "
              f"(goal-puck {100 * np.linalg.norm(env.goal - env.puck):.1f} cm)", flush=True)
    print(f"median closest approach: goal {100 * np.median(closest_goal):.1f} cm, "
          f"puck {100 * np.median(closest_puck):.1f} cm")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
