from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gigaworld_policy.checkpoint import update_latest
from gigaworld_policy.data import Normalizer
from gigaworld_policy.model.text import NullTextEncoder
from gigaworld_policy.policy import Policy, PolicyInputError

from .conftest import CAMERA, ROBOT, make_obs, tiny_config


def test_lazy_export() -> None:
    import gigaworld_policy

    assert gigaworld_policy.Policy is Policy
    assert gigaworld_policy.PolicyInputError is PolicyInputError


def test_infer_shapes_timing_and_determinism(policy: Policy) -> None:
    obs = make_obs(1)
    out = policy.infer(obs, seed=7, num_steps=3)
    cfg = policy.config.model
    assert out["actions"].shape == (cfg.action_horizon, 14) and out["actions"].dtype == np.float32
    assert set(out["timing"]) == {"preprocess_ms", "model_ms", "postprocess_ms", "total_ms"}
    assert all(v >= 0 for v in out["timing"].values())
    np.testing.assert_array_equal(out["actions"], policy.infer(obs, seed=7, num_steps=3)["actions"])
    assert not np.allclose(out["actions"], policy.infer(obs, seed=8, num_steps=3)["actions"])
    # explicit noise == the noise the seed draws
    noise = torch.randn((1, cfg.action_horizon, cfg.action_dim), generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(out["actions"], policy.infer(obs, noise=noise[0].numpy(), num_steps=3)["actions"])


def test_reset_seed_replays_an_episode(policy: Policy) -> None:
    """reset(seed=s): unseeded calls draw their noise from s, so an episode's chunks replay exactly."""
    obs = make_obs(2)

    def episode(seed: int | None) -> list[np.ndarray]:
        policy.reset(seed=seed)
        return [policy.infer(obs, num_steps=2)["actions"] for _ in range(2)]

    try:
        first, again, other = episode(5), episode(5), episode(6)
        np.testing.assert_array_equal(np.stack(first), np.stack(again))
        assert not np.allclose(first[0], first[1])  # the generator advances within the episode
        assert not np.allclose(first[0], other[0])
        policy.reset(seed=5)  # an explicit per-call seed still wins
        np.testing.assert_array_equal(policy.infer(obs, seed=7, num_steps=2)["actions"],
                                      policy.infer(obs, seed=7, num_steps=2)["actions"])
        with pytest.raises(PolicyInputError, match="reset 'seed'"):
            policy.reset(seed="5")  # type: ignore[arg-type]
    finally:
        policy.reset()  # back to torch's global generator for the other tests
    unseeded = episode(None)
    assert not np.allclose(unseeded[0], first[0])


def test_video_matches_action_only_decoding(policy: Policy) -> None:
    obs = make_obs(2)
    plain = policy.infer(obs, seed=3, num_steps=2)
    out = policy.infer(obs, seed=3, num_steps=2, return_video=True)
    m = policy.config.model
    assert out["video"].shape == (m.num_future_frames, m.image_height, m.image_width, 3)
    assert out["video"].dtype == np.uint8
    # action-centered mask: the actions do not depend on the imagined future
    np.testing.assert_allclose(out["actions"], plain["actions"], atol=1e-5)


def test_from_run_directory_loads_latest(checkpoint: Path, tmp_path: Path, policy: Policy) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(checkpoint, run / "checkpoints" / checkpoint.name)
    update_latest(run, checkpoint.name)
    p = Policy.from_checkpoint(run)
    assert Path(p.checkpoint) == run / "checkpoints" / checkpoint.name
    obs = make_obs(3)
    np.testing.assert_array_equal(p.infer(obs, seed=1, num_steps=2)["actions"],
                                  policy.infer(obs, seed=1, num_steps=2)["actions"])


def test_postprocessing_round_trips_delta_actions(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    """unnormalize(normalize(x)) == x through the Policy, delta dims absolute again (state added back)."""
    spec = policy.robots[ROBOT]
    norm: Normalizer = spec.normalizer
    delta = spec.embodiment.delta_mask_array()
    assert delta.any() and not delta.all()
    obs = make_obs(4)
    state = np.asarray(obs["state"], np.float64) + 0.02  # inside the statistics' range
    obs["state"] = state
    m = policy.config.model
    rng = np.random.default_rng(0)
    # absolute targets near the state, so the normalized values stay inside the clip range
    target = (state[None, :] + rng.normal(0, 0.01, (m.action_horizon, 14))).astype(np.float64)
    normalized = norm.normalize_actions(target, state)
    assert np.abs(normalized).max() < norm.clip
    padded = np.zeros((1, m.action_horizon, m.action_dim), np.float32)
    padded[0, :, :14] = normalized
    padded[0, :, 14:] = 123.0  # padding dims must be dropped
    monkeypatch.setattr(policy.model, "predict_actions", lambda *a, **k: torch.from_numpy(padded))
    out = policy.infer(obs)["actions"]
    np.testing.assert_allclose(out, target, atol=1e-4)
    # the delta dims really were relative: without adding the state back they would be far off
    relative = norm.to_model_actions(target, state)
    assert np.abs(relative[:, delta] - target[:, delta]).min() > 1e-3


class CountingEncoder(NullTextEncoder):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.calls: list[list[str]] = []

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(list(prompts))
        return super().encode(prompts)


def test_prompt_embeddings_are_cached(policy: Policy, norm_stats: dict[str, Any]) -> None:
    enc = CountingEncoder(policy.config.model.text_dim)
    p = Policy.from_model(policy.model, policy.config, norm_stats, text_encoder=enc)
    for prompt in ["a", "b", "a", "a", "b", "c"]:
        p.infer({**make_obs(0), "prompt": prompt}, num_steps=1)
    assert enc.calls == [["a"], ["b"], ["c"]]
    p.reset()
    p.infer({**make_obs(0), "prompt": "a"}, num_steps=1)
    assert len(enc.calls) == 3


def _bad_observations() -> list[tuple[str, dict[str, Any] | Any, str]]:
    good = make_obs(0)
    out: list[tuple[str, Any, str]] = []
    for key in ("images", "state", "prompt", "robot_type"):
        out.append((f"missing {key}", {k: v for k, v in good.items() if k != key}, key))
    out += [
        ("not a dict", [1, 2], "observation"),
        ("missing camera", {**good, "images": {"other": good["images"][CAMERA]}}, CAMERA),
        ("float image", {**good, "images": {CAMERA: good["images"][CAMERA].astype(np.float32)}}, "uint8"),
        ("gray image", {**good, "images": {CAMERA: good["images"][CAMERA][..., 0]}}, r"\[H, W, 3\]"),
        ("rgba image", {**good, "images": {CAMERA: np.zeros((8, 8, 4), np.uint8)}}, r"\[H, W, 3\]"),
        ("empty image", {**good, "images": {CAMERA: np.zeros((0, 8, 3), np.uint8)}}, r"\[H, W, 3\]"),
        ("list image", {**good, "images": {CAMERA: [[0]]}}, "numpy"),
        ("images not a dict", {**good, "images": [good["images"][CAMERA]]}, "images"),
        ("nan state", {**good, "state": np.full(14, np.nan)}, "NaN"),
        ("inf state", {**good, "state": np.r_[np.zeros(13), np.inf]}, "inf"),
        ("short state", {**good, "state": np.zeros(4)}, r"\[14\]"),
        ("text state", {**good, "state": "zeros"}, "state"),
        ("unknown robot", {**good, "robot_type": "marsrover"}, "unknown robot type"),
        ("robot without stats", {**good, "robot_type": "metaworld_sawyer"}, "no normalization statistics"),
        ("prompt not str", {**good, "prompt": 3}, "prompt"),
    ]
    return out


@pytest.mark.parametrize("name, obs, match", _bad_observations(), ids=[b[0] for b in _bad_observations()])
def test_bad_inputs_raise_policy_input_error(policy: Policy, name: str, obs: Any, match: str) -> None:
    with pytest.raises(PolicyInputError, match=match):
        policy.infer(copy.deepcopy(obs))


def test_metadata(policy: Policy) -> None:
    md = policy.metadata()
    r = md["robot_types"][ROBOT]
    assert r["cameras"] == [CAMERA] and r["state_dim"] == 14 and r["action_dim"] == 14
    assert r["control_rate_hz"] == 50.0 and r["image_sizes"][CAMERA] == [md["image_size"][0], md["image_size"][1]]
    assert md["chunk_length"] == tiny_config().model.action_horizon
    assert md["num_steps"] == tiny_config().flow.num_inference_steps


def test_sim_harness_drives_policy(checkpoint: Path) -> None:
    """gwp eval's make_policy + run_episode work with the trained-policy class (fake env, no simulator)."""
    from gigaworld_policy.sim.common import Observation, StepResult
    from gigaworld_policy.sim.evaluate import make_policy, run_episode

    class FakeEnv:
        env_name, task, cameras = "fake", "fake", (CAMERA,)
        action_names = tuple(f"a{j}" for j in range(14))

        def __init__(self) -> None:
            self.t = 0
            self.actions: list[np.ndarray] = []

        def _obs(self) -> Observation:
            o = make_obs(self.t)
            return Observation(o["images"], o["state"], o["prompt"], o["robot_type"])

        def reset(self, seed: int) -> Observation:
            self.t = 0
            return self._obs()

        def step(self, action: np.ndarray) -> StepResult:
            assert action.shape == (14,) and np.isfinite(action).all()
            self.actions.append(action)
            self.t += 1
            return StepResult(self._obs(), 0.0, False, self.t >= 10)

    pol = make_policy("model", str(checkpoint))
    res = run_episode(pol, FakeEnv(), seed=0, replan_every=4)
    assert res["length"] == 10 and len(res["latency_ms"]) == 3
    res = run_episode(pol, FakeEnv(), seed=0, replan_every=8, imagine=True, record=True)
    assert res["length"] == 10 and len(res["frames"]) > 0
    # the episode seed seeds the policy's sampling noise: a rerun of an episode takes the same actions
    envs = [FakeEnv() for _ in range(3)]
    for env, seed in zip(envs, (3, 3, 4)):
        run_episode(pol, env, seed=seed, replan_every=4)
    np.testing.assert_array_equal(np.stack(envs[0].actions), np.stack(envs[1].actions))
    assert not np.allclose(np.stack(envs[0].actions), np.stack(envs[2].actions))
    # on_step sees the first observation and every step's, and watching does not change the episode
    seen: list[Observation] = []
    watched = FakeEnv()
    res = run_episode(pol, watched, seed=3, replan_every=4, on_step=seen.append)
    assert len(seen) == res["length"] + 1 == 11
    np.testing.assert_array_equal(seen[-1].state, make_obs(watched.t)["state"])
    np.testing.assert_array_equal(np.stack(watched.actions), np.stack(envs[0].actions))



def test_noise_scale_scales_the_sampled_action_noise(checkpoint: Path) -> None:
    """noise_scale multiplies the noise the policy draws: 0 decodes every chunk from the zero vector (the same
    chunk whatever the seed), 0.5 equals passing half the seeded draw; gwp eval names a bad value."""
    from gigaworld_policy.sim.common import SimError
    from gigaworld_policy.sim.evaluate import make_policy

    obs = make_obs(0)
    base = make_policy("model", str(checkpoint))
    zero = make_policy("model", str(checkpoint), noise_scale=0.0)
    half = make_policy("model", str(checkpoint), noise_scale=0.5)
    a0, a1 = zero.infer(obs, seed=1)["actions"], zero.infer(obs, seed=2)["actions"]
    np.testing.assert_array_equal(a0, a1)
    m = base.config.model
    np.testing.assert_allclose(a0, base.infer(obs, noise=np.zeros((m.action_horizon, m.action_dim)))["actions"],
                               atol=1e-6)
    draw = torch.randn((1, m.action_horizon, m.action_dim), generator=torch.Generator().manual_seed(7))
    half.reset(seed=7)
    np.testing.assert_allclose(half.infer(obs)["actions"], base.infer(obs, noise=0.5 * draw[0])["actions"], atol=1e-6)
    assert not np.allclose(half.infer(obs, seed=3)["actions"], base.infer(obs, seed=3)["actions"])
    with pytest.raises(SimError, match="noise_scale"):
        make_policy("model", str(checkpoint), noise_scale=-1.0)
    with pytest.raises(SimError, match=r"noise_scale.*expert"):
        make_policy("expert", None, noise_scale=0.0)


def test_num_steps_sets_the_sampler_steps_of_calls_that_pass_none(checkpoint: Path) -> None:
    """num_steps (gwp eval --num-steps) replaces the checkpoint's flow.num_inference_steps for calls that do not
    pass their own (the sampler receives it; an explicit per-call count still wins); bad values are named."""
    from gigaworld_policy.policy import PolicyInputError
    from gigaworld_policy.sim.common import SimError
    from gigaworld_policy.sim.evaluate import make_policy

    obs = make_obs(0)
    base = make_policy("model", str(checkpoint))
    assert base.num_steps == base.config.flow.num_inference_steps
    two = make_policy("model", str(checkpoint), num_steps=2)
    assert two.num_steps == 2
    np.testing.assert_array_equal(two.infer(obs, seed=5)["actions"], base.infer(obs, seed=5, num_steps=2)["actions"])
    np.testing.assert_array_equal(base.infer(obs, seed=5)["actions"],
                                  two.infer(obs, seed=5, num_steps=base.num_steps)["actions"])
    # (an untrained head's velocity does not depend on the step, so the count is checked where it is used)
    seen, predict = [], two.model.predict_actions
    two.model.predict_actions = lambda *a, num_steps=None, **k: seen.append(num_steps) or predict(
        *a, num_steps=num_steps, **k)
    two.infer(obs)
    two.infer(obs, num_steps=7)
    assert seen == [2, 7]
    with pytest.raises(SimError, match=r"'num_steps'.*got 0"):
        make_policy("model", str(checkpoint), num_steps=0)
    with pytest.raises(PolicyInputError, match=r"'num_steps'.*got 2\.5"):
        two.infer(obs, num_steps=2.5)
    with pytest.raises(SimError, match=r"num_steps.*expert"):
        make_policy("expert", None, num_steps=4)


def test_wan_vae_checkpoint_needs_and_uses_its_vae(tmp_path: Path, norm_stats, wan_shaped_config,
                                                    narrow_wan_vae) -> None:
    """A wan2.2-vae checkpoint is refused without the VAE folder (naming --vae) and serves with it."""
    from gigaworld_policy.checkpoint import CheckpointError, save_checkpoint
    from gigaworld_policy.model.world_action_model import WorldActionModel

    cfg = wan_shaped_config("wan2.2-5b", "model.action_dim=16", "model.state_dim=16")
    ckpt = save_checkpoint(tmp_path / "step_00000001", config=cfg, model_state=WorldActionModel(cfg).state_dict(),
                           norm_stats=norm_stats)
    with pytest.raises(CheckpointError, match="--vae"):
        Policy.from_checkpoint(ckpt)
    narrow_wan_vae.vae.save_pretrained(tmp_path / "vae")
    policy = Policy.from_checkpoint(ckpt, vae=tmp_path / "vae")
    out = policy.infer(make_obs(2, size=(64, 64)), seed=0, num_steps=2)
    assert out["actions"].shape == (cfg.model.action_horizon, 14) and np.isfinite(out["actions"]).all()
