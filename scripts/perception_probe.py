"""How many layouts does a network need to read the object's (x, y) off a Meta-World frame?

A perception diagnostic for issue 8, independent of the policy: a small CNN (three stride-2 convolutions,
then a dense head that sees absolute pixel positions) regresses the object's table position
(`observation.environment_state` x, y) from one `--camera` frame, trained from scratch on

  rendered:N   the first frames of N layouts rendered at collection seeds `--seed`, `--seed` + 1, ... with
               collection's scattered hand start (`--start-jitter`); no demonstrations, no actions
  demos:DATA   every frame of the task's demonstrations in a LeRobot dataset (what the policy trains on)

or, with `--features CHECKPOINT`, a ridge regression on a trained policy's reference-frame tokens
(`Policy.reference_features`, the last layer's hidden states of the image tokens, flattened; ridge strength
picked on the last fifth of the rendered layouts), which asks whether the policy's image tokens carry the
object's place at all, whatever its auxiliary head reads; and tested on the first frames of the 50 layouts `gwp eval --seed 0 --episodes 50` uses (evaluation seeds,
never in collection). Prints the median and mean error in cm, against answering the mean of the training
layouts' first frames (`mean answer`). For the puck tasks (push, pick-place) also a colour threshold with no learning: the
centroid of the dark red pixels in the lower part of the frame, mapped to the table by least squares fitted
on the demonstrations' first frames (`--blob-data`). One thread; each fit about a minute. Usage:

    python scripts/perception_probe.py --task push-v3 --train rendered:25 rendered:200 demos:DATA \\
        [--blob-data DATA] [--steps 3000] [--image-size 64] [--camera workspace]
    python scripts/perception_probe.py --task push-v3 --train rendered:200 rendered:1000 --features CHECKPOINT
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gigaworld_policy.data.lerobot import open_dataset
from gigaworld_policy.data.stats import ENV_STATE_KEY
from gigaworld_policy.policy import Policy
from gigaworld_policy.sim.collect import start_offset
from gigaworld_policy.sim.envs import make_env
from gigaworld_policy.sim.evaluate import checkpoint_cameras, checkpoint_image_size, eval_seed


class FrameRegressor(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 32, 4, 2, 1), nn.GELU(),
                                   nn.Conv2d(32, 32, 4, 2, 1), nn.GELU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (size // 8) ** 2, 256), nn.GELU(), nn.Linear(256, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


def as_batch(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def rendered_obs(env, n: int, seed: int, jitter: float) -> tuple[list, np.ndarray]:
    """Reset observations of collection seeds seed .. seed + n - 1 (collection's hand start) and the object's
    (x, y) in each."""
    obs, xy = [], []
    for i in range(n):
        obs.append(env.reset(seed + i, hand_offset=start_offset(seed + i, jitter) if jitter else None))
        xy.append(env.environment_state()[:2])
    return obs, np.stack(xy)


def rendered(env, n: int, seed: int, jitter: float) -> tuple[list[np.ndarray], np.ndarray]:
    obs, xy = rendered_obs(env, n, seed, jitter)
    return [o.images[env.cameras[0]] for o in obs], xy


def task_episodes(root: str, prompt: str):
    """The dataset and its episodes of the env's instruction (collection writes it as the task)."""
    ds = open_dataset(root)
    eps = [e for e in ds.episode_indices if ds.task_of(e, 0) == prompt]
    if not eps:
        texts = sorted({ds.task_of(e, 0) for e in ds.episode_indices})
        raise SystemExit(f"perception_probe: {root} has no episode of {prompt!r} (tasks: {texts})")
    return ds, eps


def demos(root: str, prompt: str, camera: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Every frame of the task's episodes, their object (x, y), and the episodes' first-frame (x, y)."""
    ds, eps = task_episodes(root, prompt)
    key = f"observation.images.{camera}"
    frames, xy = [], []
    for e in eps:
        idx = np.arange(ds.episode_length(e))
        frames += ds.get_images(e, key, idx)
        xy.append(ds.get_numeric(e, ENV_STATE_KEY, idx)[:, :2])
    return frames, np.concatenate(xy), np.stack([a[0] for a in xy])


def fit(frames: list[np.ndarray], xy: np.ndarray, size: int, steps: int) -> tuple[FrameRegressor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = as_batch(frames), torch.from_numpy(xy).float()
    mu, sd = y.mean(0), y.std(0) + 1e-6
    net = FrameRegressor(size)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    for _ in range(steps):
        i = torch.randint(0, len(x), (32,))
        loss = F.mse_loss(net(x[i]), (y[i] - mu) / sd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), mu, sd


def ridge_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge regression x [n, d] -> y [n, 2] in the dual (n << d), strength picked on the last fifth.
    Returns (x mean, dual weights' primal map [d, 2], y mean, strength)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cut = max(1, len(x) * 4 // 5)
    scale = float((xc[:cut] ** 2).sum(1).mean())

    def solve(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
        k = a @ a.T
        return a.T @ np.linalg.solve(k + lam * scale * np.eye(len(a)), b)

    best = min((1e-3, 1e-2, 1e-1, 1.0),
               key=lambda lam: float(np.linalg.norm(xc[cut:] @ solve(xc[:cut], yc[:cut], lam) - yc[cut:], axis=1).mean()))
    return mx, solve(xc, yc, best), my, best


def blob_centroid(frame: np.ndarray) -> tuple[float, float] | None:
    """Centroid of the puck's dark red pixels below the upper 45% of the frame (the arm is brighter red)."""
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    mask = (r > 50) & (r < 140) & (g < 25) & (b < 25)
    mask[: int(0.45 * frame.shape[0])] = False
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--env", default="metaworld-goal")
    p.add_argument("--train", nargs="+", required=True, metavar="rendered:N|demos:DATA")
    p.add_argument("--blob-data", default=None, help="dataset whose first frames fit the colour threshold's map")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--camera", default="workspace")
    p.add_argument("--seed", type=int, default=0, help="first collection seed of the rendered layouts")
    p.add_argument("--start-jitter", type=float, default=0.1)
    p.add_argument("--episodes", type=int, default=50, help="evaluation layouts tested on")
    p.add_argument("--features", default=None, metavar="CHECKPOINT",
                   help="ridge on this policy's reference-token features instead of a CNN on pixels")
    args = p.parse_args()
    torch.set_num_threads(1)
    policy = None
    if args.features:
        policy = Policy.from_checkpoint(args.features)
        args.image_size = checkpoint_image_size(policy, args.env) or args.image_size
        (args.camera,) = checkpoint_cameras(policy, args.env)
    env = make_env(args.env, args.task, image_size=args.image_size, cameras=(args.camera,))
    test = [env.reset(eval_seed(0, i)) for i in range(args.episodes)]
    test_x = as_batch([o.images[args.camera] for o in test])
    env_test = []
    for i in range(args.episodes):
        env.reset(eval_seed(0, i))
        env_test.append(env.environment_state()[:2])
    test_y = torch.from_numpy(np.stack(env_test)).float()
    print(f"{args.task}: {args.episodes} evaluation layouts, {args.image_size}x{args.image_size} {args.camera}")
    print(f"{'trained on':>34} {'frames':>7} {'median':>7} {'mean':>6} {'mean answer':>12}")
    for spec in args.train:
        kind, _, value = spec.partition(":")
        if policy is not None:
            if kind != "rendered":
                raise SystemExit(f"perception_probe: --features takes rendered:N only, got {spec!r}")
            t0 = time.time()
            obs, xy = rendered_obs(env, int(value), args.seed, args.start_jitter)
            feats = np.stack([policy.reference_features(o.to_policy_obs()).ravel() for o in obs])
            mx, w, my, lam = ridge_fit(feats, xy)
            test_f = np.stack([policy.reference_features(o.to_policy_obs()).ravel() for o in test])
            err = np.linalg.norm((test_f - mx) @ w + my - test_y.numpy(), axis=1) * 100
            base = np.linalg.norm(xy.mean(0) - test_y.numpy(), axis=1) * 100
            print(f"{'features, ' + spec + f' (ridge {lam:g})':>34} {len(obs):7d} {np.median(err):6.1f}  "
                  f"{err.mean():5.1f}  {base.mean():11.1f}   ({time.time() - t0:.0f} s)", flush=True)
            continue
        if kind == "rendered":
            frames, xy = rendered(env, int(value), args.seed, args.start_jitter)
            name, layouts = spec, xy
        elif kind == "demos":
            frames, xy, layouts = demos(value, env.prompt, args.camera)
            name = f"demos:{len(layouts)} episodes"
        else:
            raise SystemExit(f"perception_probe: --train {spec!r}: expected rendered:N or demos:DATA")
        t0 = time.time()
        net, mu, sd = fit(frames, xy, args.image_size, args.steps)
        with torch.no_grad():
            err = ((net(test_x) * sd + mu) - test_y).norm(dim=1).mul(100)
        base = (torch.from_numpy(layouts).float().mean(0) - test_y).norm(dim=1).mul(100)
        print(f"{name:>34} {len(frames):7d} {err.median():6.1f}  {err.mean():5.1f}  {base.mean():11.1f}"
              f"   ({time.time() - t0:.0f} s)", flush=True)
    if args.blob_data:
        ds, eps = task_episodes(args.blob_data, env.prompt)
        key = f"observation.images.{args.camera}"
        pts, xy = [], []
        for e in eps:
            c = blob_centroid(ds.get_images(e, key, [0])[0])
            if c is not None:
                pts.append([*c, 1.0])
                xy.append(ds.get_numeric(e, ENV_STATE_KEY, np.arange(1))[0, :2])
        w, *_ = np.linalg.lstsq(np.array(pts), np.array(xy), rcond=None)
        found = [(blob_centroid(o.images[args.camera]), y) for o, y in zip(test, test_y.numpy())]
        err = [np.linalg.norm(np.array([*c, 1.0]) @ w - y) * 100 for c, y in found if c is not None]
        print(f"{'colour threshold, ' + str(len(pts)) + ' demo first frames':>34} {len(pts):7d} "
              f"{np.median(err):6.1f}  {np.mean(err):5.1f}  (found on {len(err)} of {len(found)})")


if __name__ == "__main__":
    main()
