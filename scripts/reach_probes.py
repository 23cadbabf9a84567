"""Probes behind docs/results.md ("Seeing the goal is what fails"), for a policy trained by `gwp demo`.

  loss RUN DATA        action loss on the run's own training windows, grouped by the window's start frame
                       (frames 0, 1, 2, 4, 8, 16, 32, 48; each window repeated 8x with one noise seed)
  chunk RUN [VARIANT]  reach-v3: correlation, per axis, of the first chunk's 8-step displacement with the
                       goal direction, over 8 training layouts (seeds 0-7) and 8 evaluation layouts
                       (VARIANT: plain, big-goal (scripts/goal_diagnostics.py) or goal-state (`--env
                       metaworld-goal`), as the policy was trained)
  trainseeds RUN       reach-v3 closed-loop success on the collection seeds 0-19 (the training layouts)
  codec DATA           reach-v3: decoded first frames of episodes 0-2 against fresh renders of their seeds
  endpoints RUN        reach-v3: where the hand ends after 200 closed-loop steps (re-planning every 8) on 16
                       evaluation layouts: spread of end points and goals per axis, their correlation, the
                       median end-goal distance (success needs < 0.05 m)
  goalreg SIZE HEAD N [STEPS] [CAMERA]
                       no policy: can a small conv net trained from scratch read reach-v3's goal from one
                       SIZExSIZE CAMERA frame (corner2)? Supervised regression of the goal xyz from N layouts (seeds
                       0..N-1), AdamW 1e-3, batch 32, STEPS steps (1500); HEAD "cnn" (stride-2 convs, MLP)
                       or "ssm" (the policy's model.keypoints head: 16 spatial-softmax keypoints, linear);
                       held-out error on 200 evaluation layouts, printed every 1,000 steps and at the end
  approach RUN [ENV] [N]
                       reach-v3 in closed loop as `gwp eval` runs it (ENV metaworld-goal by default, the
                       checkpoint's cameras, re-planning every 8, 500 steps, N evaluation layouts, 20): per
                       episode the closest the fingertips come to the goal and where the hand is then; per
                       axis, the slope of that hand position on the goal (1: the goal is followed, 0: ignored)
  keypoints RUN        reach-v3, a run with model.keypoints: how well each keypoint's image position on the
                       first frame follows the goal (R^2 of a linear fit from the goal's xyz, 32 evaluation layouts)

    OMP_NUM_THREADS=1 python scripts/reach_probes.py loss study/r_biggoal/run study/r_biggoal/data
"""

from __future__ import annotations

import collections
import sys

import numpy as np
import torch

FRAMES = (0, 1, 2, 4, 8, 16, 32, 48)


def loss_by_frame(run: str, data: str) -> None:
    from gigaworld_policy.data.windowed import WindowedDataset, collate
    from gigaworld_policy.policy import Policy

    policy = Policy.from_checkpoint(run)
    ds = WindowedDataset([data], policy.config, train=False)
    by: dict[int, list[float]] = collections.defaultdict(list)
    with torch.no_grad():
        for i in range(len(ds)):
            frame = ds.locate(i)[2]
            if frame not in FRAMES:
                continue
            batch = {k: v.repeat(8, *[1] * (v.ndim - 1)) for k, v in collate([ds[i]]).items()}
            out = policy.model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
            by[frame].append(float(out["action_loss"]))
    for frame in sorted(by):
        print(f"frame {frame:3d}: action loss {np.mean(by[frame]):.4f} (n={len(by[frame])})")


def first_chunk(run: str, variant: str = "plain") -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import goal_diagnostics

    if variant not in ("plain", "goal-state"):
        goal_diagnostics.VARIANTS[variant]()
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.metaworld_env import MetaWorldEnv

    policy = Policy.from_checkpoint(run)
    env = MetaWorldEnv("reach-v3", 64, ("corner2",), state="goal" if variant == "goal-state" else "proprio")
    moved, wanted = [], []
    for seed in [*range(8), *(1_000_000 + i for i in range(8))]:
        obs = env.reset(seed)
        actions = np.asarray(policy.infer(obs.to_policy_obs(), seed=0)["actions"])
        moved.append(actions[:8, :3].sum(0))
        wanted.append(env._env._target_pos - obs.state[:3])
    env.close()
    moved_a, wanted_a = np.array(moved), np.array(wanted)
    for name, rows in (("training layouts", slice(0, 8)), ("evaluation layouts", slice(8, 16))):
        corr = [round(float(np.corrcoef(moved_a[rows, i], wanted_a[rows, i])[0, 1]), 2) for i in range(3)]
        print(f"{name}: corr(first-chunk displacement, goal - hand) x/y/z = {corr}")


def train_seeds(run: str) -> None:
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.collect import EVAL_SEED_OFFSET
    from gigaworld_policy.sim.evaluate import evaluate

    result = evaluate(Policy.from_checkpoint(run), "metaworld", ["reach-v3"], 20, seed=-EVAL_SEED_OFFSET,
                      replan_every=8, image_size=64, cameras=("corner2",), video=False)
    print({k: result[k] for k in ("eval_seeds", "mean_success", "pooled_ci95")})


def end_points(run: str) -> None:
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.metaworld_env import MetaWorldEnv

    policy = Policy.from_checkpoint(run)
    env = MetaWorldEnv("reach-v3", 64, ("corner2",))
    ends, goals = [], []
    for seed in range(1_000_000, 1_000_016):
        obs = env.reset(seed)
        for _ in range(25):
            for a in np.asarray(policy.infer(obs.to_policy_obs(), seed=0)["actions"])[:8]:
                obs = env.step(a).obs
        ends.append(obs.state[:3])
        goals.append(env._env._target_pos.copy())
    env.close()
    e, g = np.array(ends), np.array(goals)
    corr = [round(float(np.corrcoef(e[:, i], g[:, i])[0, 1]), 2) for i in range(3)]
    print(f"end points: mean x/y/z = {np.round(e.mean(0), 3).tolist()} m, spread (std, cm) = "
          f"{np.round(100 * e.std(0).astype(float), 1).tolist()}; "
          f"goals: spread (std, cm) = {np.round(100 * g.std(0), 1).tolist()}")
    print(f"corr(end point, goal) x/y/z = {corr}; median end-goal distance "
          f"{100 * np.median(np.linalg.norm(e - g, axis=1)):.1f} cm")


def goal_regression(size: str, head: str, n: str, steps: str = "1500", camera: str = "corner2") -> None:
    from gigaworld_policy.sim.metaworld_env import MetaWorldEnv

    px, n_train, n_steps = int(size), int(n), int(steps)
    torch.manual_seed(0)
    env = MetaWorldEnv("reach-v3", px, (camera,))

    def layouts(seeds: range) -> tuple[torch.Tensor, torch.Tensor]:
        images, goals = [], []
        for seed in seeds:
            images.append(env.reset(seed).images[camera])
            goals.append(env._env._target_pos.copy())
        x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x, torch.tensor(np.stack(goals)).float()

    x_test, y_test = layouts(range(1_000_000, 1_000_200))
    x_train, y_train = layouts(range(n_train))
    env.close()
    mu, sd = y_test.mean(0), y_test.std(0)
    if head == "ssm":
        from gigaworld_policy.model.transformer import SpatialKeypoints

        net = SpatialKeypoints(3, 32, 16, 3)  # the policy's model.keypoints head, here with the goal as its output
    elif head == "cnn":
        layers, ch, res = [torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.GELU()], 32, px // 2
        while res > 8:
            layers += [torch.nn.Conv2d(ch, min(2 * ch, 128), 3, 2, 1), torch.nn.GELU()]
            ch, res = min(2 * ch, 128), res // 2
        net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(ch * res * res, 256), torch.nn.GELU(),
                                  torch.nn.Linear(256, 3))
    else:
        sys.exit(f"HEAD: cnn or ssm, got {head!r}")
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)

    def report(step: int) -> None:
        with torch.no_grad():
            fit, pred = net(x_train[:200]) * sd + mu, net(x_test) * sd + mu

        def r2(p: torch.Tensor, y: torch.Tensor) -> list[float]:
            r = 1 - ((p - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
            return [round(float(v), 2) for v in r]

        print(f"{camera} {px}px {head} N={n_train} step {step}: R^2 x/y/z on training layouts {r2(fit, y_train[:200])}, "
              f"held out {r2(pred, y_test)}; held-out median error "
              f"{100 * (pred - y_test).norm(dim=1).median().item():.1f} cm", flush=True)

    for step in range(1, n_steps + 1):
        i = torch.randint(0, n_train, (32,))
        loss = ((net(x_train[i]) - (y_train[i] - mu) / sd) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 1000 == 0 or step == n_steps:
            report(step)


def codec_error(data: str) -> None:
    from gigaworld_policy.data.lerobot import LeRobotDataset
    from gigaworld_policy.sim.metaworld_env import MetaWorldEnv

    ds = LeRobotDataset(data)
    env = MetaWorldEnv("reach-v3", 64, ("corner2",))
    for ep in range(3):  # collection seed = episode index when no attempt failed (collect.py)
        decoded = ds.get_images(ep, "observation.images.corner2", [0])[0].astype(int)
        diff = np.abs(decoded - env.reset(ep).images["corner2"].astype(int))
        print(f"episode {ep}: mean abs difference {diff.mean():.1f}/255, max {diff.max()}")
    env.close()


def keypoint_tracking(run: str) -> None:
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.metaworld_env import MetaWorldEnv

    policy = Policy.from_checkpoint(run)
    net = policy.model.keypoints
    if net is None:
        sys.exit(f"{run}: trained without model.keypoints")
    env = MetaWorldEnv("reach-v3", 64, ("corner2",))
    spec = next(iter(policy.robots.values()))
    coords, goals = [], []
    with torch.no_grad():
        for seed in range(1_000_000, 1_000_032):
            obs = env.reset(seed)
            batch = policy._preprocess(spec, obs.images, obs.state.astype(np.float64))
            coords.append(net.coordinates(batch["image"])[0].numpy())  # [k, 2]
            goals.append(env._env._target_pos.copy())
    env.close()
    c, g = np.array(coords), np.c_[np.array(goals), np.ones(len(goals))]  # [n, k, 2], [n, 4]
    for j in range(c.shape[1]):
        fit = np.linalg.lstsq(g, c[:, j], rcond=None)[0]
        r2 = 1 - ((c[:, j] - g @ fit) ** 2).sum(0) / ((c[:, j] - c[:, j].mean(0)) ** 2).sum(0)
        print(f"keypoint {j:2d}: mean (x, y) = ({c[:, j, 0].mean():+.2f}, {c[:, j, 1].mean():+.2f}), "
              f"spread ({c[:, j, 0].std():.3f}, {c[:, j, 1].std():.3f}), R^2 from goal xyz: x {r2[0]:.2f}, "
              f"y {r2[1]:.2f}")


def approach(run: str, env_name: str = "metaworld-goal", n: str = "20") -> None:
    from gigaworld_policy.policy import Policy
    from gigaworld_policy.sim.envs import make_env
    from gigaworld_policy.sim.evaluate import check_actions, checkpoint_cameras, eval_seed, reset_policy

    policy = Policy.from_checkpoint(run)
    env = make_env(env_name, "reach-v3", cameras=checkpoint_cameras(policy, env_name))
    rows = []  # success, closest fingertip-goal distance, hand at that step, goal
    for ep in range(int(n)):
        seed = eval_seed(0, ep)
        obs, goal = env.reset(seed), env.expert_state()[36:39]
        reset_policy(policy, seed)
        best, hand_at_best, success, done = np.inf, None, False, False
        while not (success or done):
            for a in check_actions(policy.infer(obs.to_policy_obs()), env)[:8]:
                result = env.step(a)
                obs, success, done = result.obs, result.success, result.done
                dist = float(np.linalg.norm(env.fingertip_position() - goal))
                if dist < best:
                    best, hand_at_best = dist, env.expert_state()[0:3].copy()
                if success or done:
                    break
        rows.append((success, best, hand_at_best, goal.copy()))
        print(f"seed {seed}: success {success}, closest fingertips-goal {100 * best:.1f} cm, hand - goal then "
              f"{np.round(100 * (hand_at_best - goal), 1).tolist()} cm", flush=True)
    env.close()
    ok = np.array([r[0] for r in rows])
    closest = np.array([r[1] for r in rows])
    hand, goal = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    slopes = [float(np.polyfit(goal[:, i], hand[:, i], 1)[0]) for i in range(3)]
    print(f"{int(ok.sum())} of {len(ok)} succeed; closest approach of the failures: median "
          f"{100 * np.median(closest[~ok]) if (~ok).any() else float('nan'):.1f} cm; slope of the hand at the closest "
          f"approach on the goal x/y/z = {np.round(slopes, 2).tolist()} (goal spread, std: "
          f"{np.round(100 * goal.std(0), 1).tolist()} cm)")


COMMANDS = {"approach": approach, "loss": loss_by_frame, "chunk": first_chunk, "trainseeds": train_seeds,
            "codec": codec_error, "endpoints": end_points, "goalreg": goal_regression, "keypoints": keypoint_tracking}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
