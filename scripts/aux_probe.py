"""Does a policy's auxiliary scene-state head (model.aux_dim) find the object on layouts it never saw?

Runs the scripted expert on the evaluation seeds of `gwp eval --seed 0` (layouts that are not in the
training data, whose collection seeds start at 0; `--training-layouts`: on collection seeds 0 onward, the
layouts of the training demonstrations, to tell memorizing from not seeing), and at every `--every`-th
frame compares the head's
reading of the object's position (`Policy.predict_environment_state`, from the frame's images, state and
prompt) with the simulator's (`observation.environment_state`). Prints per task the median error of the
head and of always answering the training mean (the head's normalization mean, one point for all tasks), in
cm, on the first frame and over the episode, then the pooled medians. The training mean is beaten by a head
that only tells the tasks apart; the `task mean` column is the bar for finding the object: on the first
frame, the error of answering the mean of the task's other probed layouts (leave one out). Usage:

    python scripts/aux_probe.py CHECKPOINT ENV [--tasks MT10] [--episodes 2] [--every 4] [--training-layouts]
"""

from __future__ import annotations

import argparse

import numpy as np

from gigaworld_policy.data.stats import ENV_STATE_KEY
from gigaworld_policy.policy import Policy
from gigaworld_policy.sim.collect import expert_episode
from gigaworld_policy.sim.envs import make_env, resolve_tasks
from gigaworld_policy.sim.evaluate import checkpoint_cameras, checkpoint_image_size, eval_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("env")
    p.add_argument("--tasks", nargs="+", default=["MT10"])
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--training-layouts", action="store_true")
    args = p.parse_args()
    if args.episodes < 2:
        p.error("--episodes: at least 2 (the task-mean column leaves one layout out)")
    policy = Policy.from_checkpoint(args.checkpoint)
    size, cams = checkpoint_image_size(policy, args.env) or 64, checkpoint_cameras(policy, args.env)
    rows = {"head": [], "mean": [], "head_first": [], "mean_first": [], "task_first": []}
    print("| task | frames | head, first frame | mean, first frame | task mean, first frame | head, all frames | "
          "mean, all frames |")
    print("|---|---|---|---|---|---|---|")
    for task in resolve_tasks(args.env, args.tasks):
        env = make_env(args.env, task, image_size=size, cameras=cams)
        spec = policy.robots[env.robot_type]
        if spec.environment_state is None:
            raise SystemExit(f"{args.checkpoint}: no auxiliary head for {env.robot_type!r}")
        train_mean = spec.environment_state[0]
        err = {k: [] for k in rows}
        first_truths = []
        for ep in range(args.episodes):
            frames, _ = expert_episode(env, ep if args.training_layouts else eval_seed(0, ep))
            for i in range(0, len(frames), args.every):
                fr = frames[i]
                obs = {"images": {c: fr[f"observation.images.{c}"] for c in env.cameras},
                       "state": fr["observation.state"], "prompt": env.prompt, "robot_type": env.robot_type}
                truth = fr[ENV_STATE_KEY].astype(np.float64)
                head = float(np.linalg.norm(policy.predict_environment_state(obs) - truth))
                mean = float(np.linalg.norm(train_mean - truth))
                err["head"].append(head)
                err["mean"].append(mean)
                if i == 0:
                    err["head_first"].append(head)
                    err["mean_first"].append(mean)
                    first_truths.append(truth)
        env.close()
        first = np.stack(first_truths)
        others = (first.sum(0, keepdims=True) - first) / (len(first) - 1)  # each layout's leave-one-out mean
        err["task_first"] = list(np.linalg.norm(others - first, axis=1))
        for k in rows:
            rows[k] += err[k]
        cm = {k: 100 * float(np.median(v)) for k, v in err.items()}
        print(f"| {task} | {len(err['head'])} | {cm['head_first']:.1f} | {cm['mean_first']:.1f} | "
              f"{cm['task_first']:.1f} | {cm['head']:.1f} | {cm['mean']:.1f} |", flush=True)
    cm = {k: 100 * float(np.median(v)) for k, v in rows.items()}
    print(f"| all | {len(rows['head'])} | {cm['head_first']:.1f} | {cm['mean_first']:.1f} | {cm['task_first']:.1f} | "
          f"{cm['head']:.1f} | {cm['mean']:.1f} |")


if __name__ == "__main__":
    main()
