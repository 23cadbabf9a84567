"""Where does a policy take the hand on reach-v3: to the goal, or to the puck?

Runs closed-loop reach-v3 episodes (the evaluation seeds of `gwp eval --seed 0`) and prints, per episode,
success and the closest approach of the gripper's centre (the point reach-v3's success is measured from,
within 5 cm of the goal) to the goal and to the puck (the first object), in cm. Usage:

    python scripts/reach_target_probe.py CHECKPOINT ENV [EPISODES]     # ENV: metaworld-goal or metaworld-object
"""

from __future__ import annotations

import sys

import numpy as np

from gigaworld_policy.policy import Policy
from gigaworld_policy.sim.envs import make_env
from gigaworld_policy.sim.evaluate import checkpoint_cameras, eval_seed


def main(checkpoint: str, env_name: str, episodes: int = 10) -> None:
    policy = Policy.from_checkpoint(checkpoint)
    env = make_env(env_name, "reach-v3", cameras=checkpoint_cameras(policy, env_name))
    to_goal, to_puck = [], []
    for ep in range(episodes):
        obs = env.reset(eval_seed(0, ep))
        policy.reset()
        goal, puck = env.expert_state()[36:39], env.expert_state()[4:7]
        d_goal, d_puck, success = [], [], False
        while not success and env.steps < env.max_steps:
            for a in np.asarray(policy.infer(obs.to_policy_obs())["actions"])[:8]:
                r = env.step(a)
                obs, success = r.obs, r.success
                hand = env._env.tcp_center  # what reach-v3 measures its success from
                d_goal.append(np.linalg.norm(hand - goal)), d_puck.append(np.linalg.norm(hand - puck))
                if success or r.done:
                    break
        to_goal.append(min(d_goal)), to_puck.append(min(d_puck))
        print(f"episode {ep}: success {success}, steps {env.steps}, closest to goal {100 * min(d_goal):.1f} cm, "
              f"to puck {100 * min(d_puck):.1f} cm (goal-puck {100 * np.linalg.norm(goal - puck):.1f} cm)", flush=True)
    print(f"median closest approach: goal {100 * np.median(to_goal):.1f} cm, puck {100 * np.median(to_puck):.1f} cm")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
