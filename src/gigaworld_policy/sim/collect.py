"""``gwp collect``: scripted-expert demonstrations as a LeRobot v3.0 dataset.

Per task, episodes use seeds ``seed, seed + 1, ...`` (evaluation adds EVAL_SEED_OFFSET, so the two
never share a layout). Only successful episodes are kept; a failed attempt moves on to the next seed,
up to ``max_attempts_factor x episodes`` attempts per task. The dataset is written through
``gigaworld_policy.data.LeRobotWriter``, which publishes it atomically at ``out_dir`` on finalize.

Meta-World: the expert acts on the privileged state; each frame records the observation (images,
4-d state) and the action taken from it. ALOHA: our end-effector expert runs in the mocap env, its
joint trajectory is replayed in the joint-position env, which gives the observations; actions are the
replayed joint targets.

``action_noise`` (Meta-World, DART-style noise injection): the env executes the expert's action plus
Gaussian noise (std ``action_noise`` on the xyz dims, clipped to the action bounds; the gripper is left
alone) while the frame records the expert's clean action for the state it saw. Demonstrations then cover
states off the expert's path, labelled with the correction, and the hand's path stops being a perfect
proxy for the goal (on reach this did not raise success, docs/results.md).

``start_jitter`` (Meta-World): each episode starts the hand at the task's start plus an offset drawn
uniformly from [-start_jitter, start_jitter] metres per axis (from the episode's seed; the layout is
unchanged). With the fixed start, the hand's position part-way along a demonstration tells where the
goal is, which a policy can learn in place of reading the goal from the image; from scattered starts it
cannot. Evaluation always starts from the task's own start, which lies inside the jittered range.
Measured (docs/results.md, one training seed per row): MT10 0.52 with 0.1 m against 0.45 without; reach alone
not helped (0.10).

``reach_aim`` (Meta-World reach tasks): "hand" (default) is the shipped scripted policy, whose demonstrations
end within 1.6 cm of the success radius; "fingertips" steers the point Meta-World scores onto the goal
(experts.MetaWorldExpert). Recorded in meta/provenance.json. Measured (docs/results.md, one training seed):
on MT10 the fingertip-aimed data lowered reach (0.36 against 0.64-0.76 for the same config).

``steps_after_success``: frames recorded after the expert's success (default 10), for every task or per
task (``steps_after_success_per_task``, CLI ``--steps-after-success 10 reach-v3=40``). Measured
(docs/results.md): 40 for every MT10 task raised reach from 0.72 to 0.90 and lowered peg-insert-side;
10 for peg-insert-side and 40 for the rest left it as low (one training seed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gigaworld_policy.data.stats import ENV_STATE_KEY
from gigaworld_policy.sim.common import REACH_AIMS, SimError

EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds = EVAL_SEED_OFFSET + seed + episode


def features_for(env: Any) -> dict[str, dict[str, Any]]:
    """LeRobot features of an env's frames (camera names = obs["images"] keys of the eval harness)."""
    feats: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": [len(env.state_names)], "names": list(env.state_names)},
        "action": {"dtype": "float32", "shape": [len(env.action_names)], "names": list(env.action_names)},
    }
    env_state = getattr(env, "environment_state_names", ())
    if env_state:  # privileged scene state (Meta-World: the object's position), a training target only
        feats[ENV_STATE_KEY] = {"dtype": "float32", "shape": [len(env_state)], "names": list(env_state)}
    for cam in env.cameras:
        feats[f"observation.images.{cam}"] = {"dtype": "video", "shape": [env.image_size, env.image_size, 3],
                                              "names": None}
    return feats


def start_offset(seed: int, start_jitter: float) -> np.ndarray:
    """The hand's scattered start of collection seed ``seed`` (xyz metres, uniform in +-start_jitter)."""
    return np.random.default_rng([seed, 0x6A6974]).uniform(-start_jitter, start_jitter, 3)


def expert_episode(env: Any, seed: int, steps_after_success: int = 10, expert: Any = None,
                   action_noise: float = 0.0, start_jitter: float = 0.0,
                   reach_aim: str = "hand") -> tuple[list[dict[str, np.ndarray]], bool]:
    """Run the scripted expert for one episode; returns (frames, success). Frames hold the observation
    before each action and that action. Recording stops ``steps_after_success`` steps after success.
    ``action_noise``, ``start_jitter``: see the module docstring (Meta-World only; drawn from ``seed``).
    ``reach_aim``: for a Meta-World expert made here (experts.MetaWorldExpert); a given ``expert`` keeps its own."""
    check_metaworld_only(env.env_name, action_noise, start_jitter)
    frames: list[dict[str, np.ndarray]] = []
    if start_jitter > 0:
        obs = env.reset(seed, hand_offset=start_offset(seed, start_jitter))
    else:
        obs = env.reset(seed)
    rng = np.random.default_rng([seed, 0x6E6F6973])
    if env.env_name == "metaworld":
        from gigaworld_policy.sim.experts import MetaWorldExpert

        expert = expert or MetaWorldExpert(env.task, reach_aim=reach_aim)
        aim_tips = getattr(expert, "aims_fingertips", False)
        next_action = lambda t: expert.act(env.expert_state(),  # noqa: E731
                                           fingertips=env.fingertip_position() if aim_tips else None)
        horizon = env.max_steps
    else:
        from gigaworld_policy.sim.experts import aloha_expert_actions

        rollout = aloha_expert_actions(env.task, seed, max_steps=env.max_steps, ee_env=expert)
        if not rollout.success:  # the mocap expert already failed: no need to replay
            return frames, False
        next_action = lambda t: rollout.actions[t]  # noqa: E731
        horizon = len(rollout.actions)
    success_at: int | None = None
    for t in range(horizon):
        action = np.asarray(next_action(t), dtype=np.float32)
        frame = {"observation.state": obs.state, "action": action}
        if getattr(env, "environment_state_names", ()):
            frame[ENV_STATE_KEY] = env.environment_state()
        frame.update({f"observation.images.{cam}": img for cam, img in obs.images.items()})
        frames.append(frame)
        if action_noise > 0:
            executed = action.copy()
            executed[:3] += rng.normal(0.0, action_noise, 3).astype(np.float32)
            action = np.clip(executed, env.action_low, env.action_high).astype(np.float32)
        result = env.step(action)
        obs = result.obs
        if result.success and success_at is None:
            success_at = t
        if result.done or (success_at is not None and t - success_at >= steps_after_success):
            break
    return frames, success_at is not None


def check_metaworld_only(env_name: str, action_noise: float, start_jitter: float) -> None:
    """Refuse the Meta-World-only collection options elsewhere, and negative ones."""
    for name, value in (("action_noise", action_noise), ("start_jitter", start_jitter)):
        if not value >= 0:
            raise SimError(f"{name}: must be >= 0, got {value}")
    from gigaworld_policy.sim.envs import METAWORLD_ENVS

    if action_noise > 0 and env_name not in METAWORLD_ENVS:
        raise SimError(f"action_noise: only Meta-World experts act on the live state; the {env_name} expert "
                       "replays a fixed trajectory, which injected noise would break")
    if start_jitter > 0 and env_name not in METAWORLD_ENVS:
        raise SimError(f"start_jitter: only Meta-World starts the hand at a settable pose; the {env_name} expert "
                       "replays a trajectory planned from the fixed start")


def parse_steps_after_success(values: Sequence[str]) -> tuple[int, dict[str, int]]:
    """``--steps-after-success 10 reach-v3=40``: a bare number for every task (at most one, default 10),
    ``TASK=N`` for one task. Returns (default, {task: n}); SimError names the value it cannot read."""
    default: int | None = None
    per_task: dict[str, int] = {}
    for value in values:
        task, sep, number = value.rpartition("=")
        if sep and not task:
            raise SimError(f"steps_after_success: {value!r} names no task (write TASK=N)")
        try:
            n = int(number)
        except ValueError:
            raise SimError(f"steps_after_success: {value!r} is neither N nor TASK=N") from None
        if not sep:
            if default is not None:
                raise SimError(f"steps_after_success: two numbers for every task ({default} and {n})")
            default = n
        elif task in per_task:
            raise SimError(f"steps_after_success: {task} given twice")
        else:
            per_task[task] = n
    return (10 if default is None else default), per_task


def collect(env_name: str, tasks: str | list[str], episodes_per_task: int, out_dir: str | Path, seed: int = 0,
            image_size: int = 64, cameras: tuple[str, ...] | None = None, max_steps: int | None = None,
            steps_after_success: int = 10, max_attempts_factor: int = 3, overwrite: bool = False,
            progress: bool = True, encode_retries: int = 1, codec: str | None = None,
            action_noise: float = 0.0, start_jitter: float = 0.0, reach_aim: str = "hand",
            steps_after_success_per_task: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Collect ``episodes_per_task`` successful expert episodes per task into a LeRobot v3.0 dataset.

    Returns a summary: {"out_dir", "env", "tasks": {task: {"episodes", "attempts", "failed", "frames"}},
    "episodes", "failed", "frames", "short", "seconds", "encode_retries"}. A task whose expert fails often
    can run out of its ``max_attempts_factor x episodes_per_task`` seeds; it keeps what succeeded and is
    listed in ``short`` (task -> episodes kept).

    Collection is deterministic in its seeds, so when the video encoder fails (VideoEncodeError: an
    encoder/muxer fault, not bad frames) the whole collection runs again, up to ``encode_retries`` times;
    the failed attempt's files are discarded, nothing of it reaches ``out_dir``. ``codec``: the video
    encoder (None: H.264; "libsvtav1" for AV1, see data/video.py ``pick_video_codec``). ``action_noise``:
    DART-style noise on the executed actions (module docstring); labels stay the expert's.
    ``start_jitter``: scattered hand starts (module docstring). ``reach_aim``: the Meta-World reach experts'
    aim (module docstring). ``steps_after_success_per_task``: {task: n} in place of ``steps_after_success``
    for those tasks, each one of the collected tasks.
    """
    check_metaworld_only(env_name, action_noise, start_jitter)
    per_task = dict(steps_after_success_per_task or {})
    for name, n in [("steps_after_success", steps_after_success)] + [
            (f"steps_after_success[{t}]", n) for t, n in per_task.items()]:
        if n < 0:
            raise SimError(f"{name}: must be >= 0, got {n}")
    if reach_aim not in REACH_AIMS:
        raise SimError(f"reach_aim: must be one of {', '.join(REACH_AIMS)}, got {reach_aim!r}")
    if reach_aim != REACH_AIMS[0] and env_name == "aloha":
        raise SimError(f"reach_aim: {reach_aim!r} steers Meta-World's reach experts; the aloha experts have no such aim")
    from gigaworld_policy.data import VideoEncodeError

    t0 = time.perf_counter()
    for retry in range(encode_retries + 1):
        try:
            summary = _collect_once(env_name, tasks, episodes_per_task, out_dir, seed, image_size, cameras, max_steps,
                                    (steps_after_success, per_task), max_attempts_factor, overwrite, progress,
                                    codec, action_noise, start_jitter, reach_aim)
        except VideoEncodeError as e:
            if retry == encode_retries:
                raise
            print(f"warning: video encoding failed ({e}); collecting again with the same seeds "
                  f"(retry {retry + 1}/{encode_retries})", flush=True)
            continue
        summary["encode_retries"] = retry
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        return summary
    raise AssertionError("unreachable")


def _collect_once(env_name: str, tasks: str | list[str], episodes_per_task: int, out_dir: str | Path, seed: int,
                  image_size: int, cameras: tuple[str, ...] | None, max_steps: int | None,
                  steps_after_success: tuple[int, dict[str, int]], max_attempts_factor: int, overwrite: bool,
                  progress: bool, codec: str | None, action_noise: float, start_jitter: float,
                  reach_aim: str) -> dict[str, Any]:
    from tqdm import tqdm

    from gigaworld_policy.data import LeRobotWriter
    from gigaworld_policy.provenance import git_commit
    from gigaworld_policy.sim.envs import make_env, resolve_tasks

    commit = git_commit()  # the code that runs: read at the start, a collection can outlast a commit
    task_list = resolve_tasks(env_name, tasks)
    default_after, per_task_after = steps_after_success
    unknown = sorted(set(per_task_after) - set(task_list))
    if unknown:
        raise SimError(f"steps_after_success: {', '.join(unknown)} not among the collected tasks "
                       f"({', '.join(task_list)})")
    if episodes_per_task < 1:
        raise SimError(f"episodes_per_task: must be >= 1, got {episodes_per_task}")
    if max_attempts_factor < 1:
        raise SimError(f"max_attempts_factor: must be >= 1, got {max_attempts_factor}")
    max_attempts = max_attempts_factor * episodes_per_task
    if seed < 0 or seed + max_attempts > EVAL_SEED_OFFSET:
        raise SimError(f"seed: collection seeds {seed}..{seed + max_attempts} must lie in [0, {EVAL_SEED_OFFSET}) "
                       "so they never overlap evaluation seeds")
    writer = None
    summary: dict[str, Any] = {"out_dir": str(out_dir), "env": env_name, "seed": seed, "image_size": image_size,
                               "action_noise": action_noise, "start_jitter": start_jitter,
                               "reach_aim": reach_aim if env_name != "aloha" else None, "tasks": {}}
    env_cameras: tuple[str, ...] = ()
    kept_seeds: dict[str, list[int]] = {}
    bar = tqdm(total=episodes_per_task * len(task_list), desc=f"collect {env_name}", unit="ep", disable=not progress)
    try:
        for task in task_list:
            env = make_env(env_name, task, image_size=image_size, cameras=cameras, max_steps=max_steps)
            env_cameras = env.cameras
            if writer is None:
                writer = LeRobotWriter(out_dir, fps=round(env.fps), robot_type=env.robot_type,
                                       features=features_for(env), overwrite=overwrite, codec=codec)
            expert: Any = None
            if env_name == "aloha":
                from gigaworld_policy.sim.aloha_env import AlohaEEEnv

                expert = AlohaEEEnv(env.task)
            kept = attempts = frames_total = 0
            kept_seeds[task] = []
            while kept < episodes_per_task and attempts < max_attempts:
                after = per_task_after.get(task, default_after)
                frames, ok = expert_episode(env, seed + attempts, after, expert=expert, action_noise=action_noise,
                                            start_jitter=start_jitter, reach_aim=reach_aim)
                attempts += 1
                if not ok:
                    bar.set_postfix(task=task, failed=attempts - kept)
                    continue
                for f in frames:
                    writer.add_frame(f, task=env.prompt)
                writer.save_episode()
                kept_seeds[task].append(seed + attempts - 1)
                kept += 1
                frames_total += len(frames)
                bar.update(1)
            env.close()
            summary["tasks"][task] = {"episodes": kept, "attempts": attempts, "failed": attempts - kept,
                                      "frames": frames_total, "prompt": env.prompt}
        assert writer is not None
        writer.finalize(provenance=_provenance(summary, kept_seeds, episodes_per_task, env_cameras, writer.codec,
                                               max_steps, default_after, per_task_after, commit))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    summary["episodes"] = sum(t["episodes"] for t in summary["tasks"].values())
    summary["failed"] = sum(t["failed"] for t in summary["tasks"].values())
    summary["frames"] = sum(t["frames"] for t in summary["tasks"].values())
    summary["short"] = {t: v["episodes"] for t, v in summary["tasks"].items() if v["episodes"] < episodes_per_task}
    return summary


def _provenance(summary: dict[str, Any], kept_seeds: dict[str, list[int]], episodes_per_task: int,
                cameras: tuple[str, ...], codec: str | None, max_steps: int | None,
                steps_after_success: int, steps_after_success_per_task: dict[str, int],
                commit: str | None) -> dict[str, Any]:
    """What meta/provenance.json records: enough to tell how the data was made and to make it again
    (``seeds``: each task's kept episodes in dataset order; failed attempts' seeds are skipped;
    ``steps_after_success_per_task``: the tasks recorded for another length than ``steps_after_success``)."""
    from gigaworld_policy import __version__

    return {"collector": "gwp collect", "gigaworld_policy": __version__, "commit": commit,
            "env": summary["env"],
            "tasks": {t: {"prompt": v["prompt"], "attempts": v["attempts"], "seeds": kept_seeds[t]}
                      for t, v in summary["tasks"].items()},
            "episodes_per_task": episodes_per_task, "seed": summary["seed"], "image_size": summary["image_size"],
            "cameras": list(cameras), "video_codec": codec, "max_steps": max_steps,
            "steps_after_success": steps_after_success,
            "steps_after_success_per_task": steps_after_success_per_task, "action_noise": summary["action_noise"],
            "start_jitter": summary["start_jitter"], "reach_aim": summary["reach_aim"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gigaworld_policy.data.video import VIDEO_CODECS
    from gigaworld_policy.sim.envs import ENV_HELP, ENV_NAMES

    parser.add_argument("--env", required=True, choices=ENV_NAMES, help=ENV_HELP)
    parser.add_argument("--tasks", required=True, nargs="+",
                        help="task names and/or sets (Meta-World: MT10, MT50, ML45-train, ML45-test; ALOHA: all)")
    parser.add_argument("--episodes", type=int, required=True, help="successful episodes per task")
    parser.add_argument("--out", required=True, help="dataset root (published atomically)")
    parser.add_argument("--seed", type=int, default=0, help="first collection seed")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="camera names (Meta-World: corner2 workspace gripper ...; ALOHA: top left_wrist right_wrist)")
    parser.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: per env)")
    parser.add_argument("--steps-after-success", nargs="+", default=["10"], metavar="N|TASK=N",
                        help="frames recorded after the expert's success: N for every task (default 10), "
                             "TASK=N for one task (e.g. 10 reach-v3=40)")
    parser.add_argument("--max-attempts-factor", type=int, default=3,
                        help="seeds tried per task, as a multiple of --episodes (failed expert attempts are "
                             "skipped; ALOHA Insertion's expert succeeds on a quarter to a third of seeds)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--vcodec", default=None, choices=list(VIDEO_CODECS),
                        help="video encoder (default libx264, 4:2:0; libsvtav1 writes AV1 like lerobot 0.4; "
                             "libx264rgb is lossless RGB, for cues a few pixels wide)")
    parser.add_argument("--action-noise", type=float, default=0.0,
                        help="Meta-World: std of Gaussian noise added to the executed xyz actions (labels stay "
                             "the expert's; DART-style)")
    parser.add_argument("--start-jitter", type=float, default=0.0,
                        help="Meta-World: start each episode's hand up to this many metres (per axis, uniform) "
                             "from the task's start (clipped to the mocap range), so the hand's path stops giving the goal away")
    parser.add_argument("--reach-aim", default=REACH_AIMS[0], choices=list(REACH_AIMS),
                        help="Meta-World reach experts: steer the hand (the shipped policy) or the fingertips "
                             "(the point Meta-World scores, 4.5 cm lower) onto the goal")


def run(args: argparse.Namespace) -> int:
    import json

    # bad input raises SimError, which gwp's main prints as one line
    after, after_per_task = parse_steps_after_success(args.steps_after_success)
    summary = collect(args.env, args.tasks, args.episodes, args.out, seed=args.seed, image_size=args.image_size,
                      cameras=tuple(args.cameras) if args.cameras else None, max_steps=args.max_steps,
                      steps_after_success=after, steps_after_success_per_task=after_per_task,
                      overwrite=args.overwrite,
                      codec=args.vcodec, action_noise=args.action_noise,
                      start_jitter=args.start_jitter, max_attempts_factor=args.max_attempts_factor,
                      reach_aim=args.reach_aim)
    print(json.dumps(summary, indent=2))
    print(f"kept {summary['episodes']} episodes ({summary['frames']} frames), {summary['failed']} failed attempts")
    for task, kept in summary["short"].items():
        print(f"warning: {task}: {kept} of {args.episodes} episodes; its expert failed "
              f"{summary['tasks'][task]['failed']} of {summary['tasks'][task]['attempts']} seeds (raise "
              f"--max-attempts-factor, now {args.max_attempts_factor}, to try more)", file=sys.stderr)
    return 0
