"""Where do a policy's push and pick-place episodes fail: finding the object, handling it, or carrying it?

Replays `gwp eval` episodes (the same layouts and the same sampling noise: eval seeds of `--seed`, the
policy reset with each episode's seed, `--replan-every` steps a chunk), and logs from the simulator, every
step, the fingertips' point (`tcp_center`), the object and the goal. Per episode it prints the success
(it must match the `gwp eval` report of the same seeds: a check that the replay is the evaluation), the
auxiliary head's error on the first frame (`Policy.predict_environment_state`, where the checkpoint has
the head), the closest the fingertips came to the object, how far the object moved, how high it rose, and
how far from the goal it ended; then per task the medians over successes and over failures, and how
many failures never brought the fingertips within `--near` of the object and how many never moved it
`--moved`. Diagnostics, not a study row.

    python scripts/failure_probe.py CHECKPOINT metaworld-goal [--tasks push-v3 pick-place-v3] [--episodes 20]
"""

from __future__ import annotations

import argparse

import numpy as np

from gigaworld_policy.policy import Policy
from gigaworld_policy.sim.envs import make_env
from gigaworld_policy.sim.evaluate import checkpoint_cameras, checkpoint_image_size, eval_seed, run_episode


def episode(policy: Policy, env, seed: int, replan_every: int) -> dict[str, float]:
    goal: list[np.ndarray] = []
    head: list[float] = []
    tcp: list[np.ndarray] = []
    objs: list[np.ndarray] = []

    def log(obs) -> None:
        if not tcp:  # the first observation: the goal, and the auxiliary head's estimate where there is one
            goal.append(env.expert_state()[-3:].astype(np.float64))
            if policy.robots[env.robot_type].environment_state is not None:
                est = policy.predict_environment_state(obs.to_policy_obs())
                head.append(float(np.linalg.norm(est - env.environment_state())))
        tcp.append(env.fingertip_position())
        objs.append(env.environment_state().astype(np.float64))

    success = run_episode(policy, env, seed, replan_every, on_step=log)["success"]
    start = objs[0]
    tcp_a, obj_a = np.stack(tcp), np.stack(objs)
    cm = 100.0
    return {"success": float(success), "steps": float(env.steps),
            "head_cm": cm * head[0] if head else float("nan"),
            "closest_cm": cm * float(np.linalg.norm(tcp_a - obj_a, axis=1).min()),
            "moved_cm": cm * float(np.linalg.norm(obj_a[:, :2] - start[:2], axis=1).max()),
            "lift_cm": cm * float((obj_a[:, 2] - start[2]).max()),
            "goal_cm": cm * float(np.linalg.norm(obj_a[-1] - goal[0]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("env")
    p.add_argument("--tasks", nargs="+", default=["push-v3", "pick-place-v3"])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="gwp eval --seed: the first evaluation seed")
    p.add_argument("--replan-every", type=int, default=8)
    p.add_argument("--near", type=float, default=3.0, help="cm: the fingertips 'reached' the object")
    p.add_argument("--moved", type=float, default=1.0,
                   help="cm: the object 'was moved' (pushed with the gripper's side, the fingertips' point can "
                        "stay farther than --near from the object's center)")
    args = p.parse_args()
    policy = Policy.from_checkpoint(args.checkpoint)
    size, cams = checkpoint_image_size(policy, args.env) or 64, checkpoint_cameras(policy, args.env)
    keys = ["head_cm", "closest_cm", "moved_cm", "lift_cm", "goal_cm"]
    for task in args.tasks:
        env = make_env(args.env, task, image_size=size, cameras=cams)
        rows = []
        print(f"## {task}\n\n| eval seed | success | steps | " + " | ".join(keys) + " |")
        print("|---" * (3 + len(keys)) + "|")
        for ep in range(args.episodes):
            seed = eval_seed(args.seed, ep)
            r = episode(policy, env, seed, args.replan_every)
            rows.append(r)
            print(f"| {seed} | {int(r['success'])} | {int(r['steps'])} | "
                  + " | ".join(f"{r[k]:.1f}" for k in keys) + " |", flush=True)
        env.close()
        ok = [r for r in rows if r["success"]]
        bad = [r for r in rows if not r["success"]]
        for name, group in (("successes", ok), ("failures", bad)):
            if group:
                med = {k: float(np.median([r[k] for r in group])) for k in keys}
                print(f"\n{task} {name} ({len(group)}): medians " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
        far = sum(r["closest_cm"] > args.near for r in bad)
        still = sum(r["moved_cm"] < args.moved for r in bad)
        print(f"{task}: {len(ok)}/{len(rows)} succeeded; of {len(bad)} failures, {far} never brought the fingertips "
              f"within {args.near:g} cm of the object and {still} never moved it {args.moved:g} cm\n", flush=True)


if __name__ == "__main__":
    main()
