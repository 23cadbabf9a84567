"""Core model: every path (loss, backward, action-only, joint) in every attention mode, the method's
invariants (mask, cache), an overfitting check, and input validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gigaworld_policy.config import Config, ConfigError, apply_overrides, get_preset
from gigaworld_policy.model import BatchError, WorldActionModel
from gigaworld_policy.model.transformer import IMAGE_FEATURES

MODES = ["action_centered", "joint", "no_video"]


def tiny(mode: str = "action_centered", mot: bool = False, **flow) -> Config:
    over = [f"model.attention_mode={mode}"]
    if mot:
        over += ["model.action_expert_dim=32", "model.action_expert_ffn_dim=64"]
    over += [f"flow.{k}={v}" for k, v in flow.items()]
    return apply_overrides(get_preset("tiny"), over)


def randomize_zero_init(model: WorldActionModel) -> WorldActionModel:
    """Zero-initialized heads make every output 0; give them weights so comparisons can fail."""
    with torch.no_grad():
        for p in model.parameters():
            if bool((p == 0).all()):
                p.normal_(0.0, 0.2)
    return model


def make(mode: str = "action_centered", mot: bool = False, **flow) -> WorldActionModel:
    return randomize_zero_init(WorldActionModel(tiny(mode, mot, **flow))).eval()


def keep_output_grad(outputs: list[torch.Tensor]):
    """Forward hook that keeps a module's output and its gradient (to see what the loss reaches)."""

    def hook(_module, _inputs, output):
        output.retain_grad()
        outputs.append(output)

    return hook


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mot", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_forward_backward_and_sampling(mode: str, mot: bool) -> None:
    model = make(mode, mot).train()
    batch = model.example_batch(3, generator=gen(0))
    out = model.compute_loss(batch, generator=gen(1))
    assert set(out) >= {"loss", "action_loss", "video_loss"}
    assert torch.isfinite(out["loss"]) and out["action_loss"] > 0
    assert (out["video_loss"] > 0) == (mode != "no_video")
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["blocks.0.attn1.to_q.weight"] is not None
    if mode != "no_video":
        assert grads["proj_out.weight"].abs().sum() > 0  # the video head is trained
    used = set(batch["embodiment_id"].tolist())
    for e in range(model.cfg.num_embodiments):
        g = grads[f"action_decoder.mlps.{e}.2.weight"]
        assert (g is not None and g.abs().sum() > 0) == (e in used)
    obs = model.example_observation(2, generator=gen(2))
    actions = model.predict_actions(obs, num_steps=3)
    assert actions.shape == (2, model.cfg.action_horizon, model.cfg.action_dim)
    assert torch.isfinite(actions).all()
    if mode != "no_video":
        a, video = model.generate(obs, num_steps=3)
        assert a.shape == actions.shape
        assert video.shape == (2, 3, model.cfg.future_latent_frames, model.cfg.image_height, model.cfg.image_width)
    else:
        with pytest.raises(ValueError, match="no_video"):
            model.generate(obs)


@pytest.mark.parametrize("mot", [False, True])
def test_action_loss_ignores_future_frames_in_action_centered(mot: bool) -> None:
    model = make("action_centered", mot)
    batch = model.example_batch(3, generator=gen(0))
    ref = model.compute_loss(batch, generator=gen(1))
    batch["future_frames"] = torch.rand_like(batch["future_frames"]) * 2 - 1
    changed = model.compute_loss(batch, generator=gen(1))
    assert torch.equal(ref["action_loss"], changed["action_loss"])  # bit-identical
    assert not torch.equal(ref["video_loss"], changed["video_loss"])


@pytest.mark.parametrize("mot", [False, True])
def test_action_loss_depends_on_future_frames_in_joint(mot: bool) -> None:
    model = make("joint", mot)
    batch = model.example_batch(3, generator=gen(0))
    ref = model.compute_loss(batch, generator=gen(1))
    batch["future_frames"] = torch.rand_like(batch["future_frames"]) * 2 - 1
    changed = model.compute_loss(batch, generator=gen(1))
    assert not torch.allclose(ref["action_loss"], changed["action_loss"])


@pytest.mark.parametrize("mot", [False, True])
def test_generate_actions_equal_action_only_actions(mot: bool) -> None:
    model = make("action_centered", mot)
    obs = model.example_observation(2, generator=gen(3))
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(4))
    only = model.predict_actions(obs, noise=noise)
    joint, _ = model.generate(obs, noise=noise)
    assert only.abs().max() > 1e-2  # the comparison is not between zeros
    torch.testing.assert_close(joint, only, atol=1e-5, rtol=0)


def test_joint_predict_actions_decodes_the_video_with_them() -> None:
    """A ``joint`` model's actions come from joint decoding (what `gwp eval` runs for the `joint` row):
    predict_actions is generate's actions under the same noise, and the video noise changes them."""
    model = make("joint")
    obs = model.example_observation(2, generator=gen(3))
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(4))
    vshape = (2, 3, model.cfg.future_latent_frames, 32, 32)
    torch.manual_seed(11)  # predict_actions draws the video noise from the global generator
    via_policy_path = model.predict_actions(obs, noise=noise)
    same, _ = model.generate(obs, noise=noise, video_noise=torch.randn(vshape, generator=gen(11)), use_cache=True)
    other, _ = model.generate(obs, noise=noise, video_noise=torch.randn(vshape, generator=gen(12)), use_cache=True)
    torch.testing.assert_close(via_policy_path, same, atol=1e-5, rtol=0)
    assert (via_policy_path - other).abs().max() > 1e-3


@pytest.mark.parametrize("mot", [False, True])
@pytest.mark.parametrize("mode", ["action_centered", "no_video"])
def test_prefix_cache_matches_full_recompute(mode: str, mot: bool) -> None:
    model = make(mode, mot)
    obs = model.example_observation(2, generator=gen(5))
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(6))
    cached = model.predict_actions(obs, noise=noise, use_cache=True)
    full = model.predict_actions(obs, noise=noise, use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


def test_joint_generate_cache_matches_full_recompute() -> None:
    model = make("joint")
    obs = model.example_observation(2, generator=gen(5))
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(6))
    vnoise = torch.randn(2, 3, model.cfg.future_latent_frames, 32, 32, generator=gen(7))
    a1, v1 = model.generate(obs, noise=noise, video_noise=vnoise, use_cache=True)
    a2, v2 = model.generate(obs, noise=noise, video_noise=vnoise, use_cache=False)
    torch.testing.assert_close(a1, a2, atol=1e-5, rtol=0)
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=0)


def test_world_model_generation_keeps_given_actions_and_depends_on_them() -> None:
    model = make("action_centered")
    obs = model.example_observation(1, generator=gen(8))
    vnoise = torch.randn(1, 3, model.cfg.future_latent_frames, 32, 32, generator=gen(9))
    a = torch.rand(1, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(10)) * 2 - 1
    a_out, v1 = model.generate(obs, actions=a, video_noise=vnoise)
    assert torch.equal(a_out, a)
    _, v2 = model.generate(obs, actions=-a, video_noise=vnoise)
    assert not torch.allclose(v1, v2)  # the imagined future is conditioned on the actions


def test_embodiment_id_selects_the_robot_modules() -> None:
    model = make("action_centered")
    obs = model.example_observation(1, generator=gen(11))
    noise = torch.randn(1, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(12))
    obs["embodiment_id"] = torch.tensor([0])
    a0 = model.predict_actions(obs, noise=noise)
    obs["embodiment_id"] = torch.tensor([1])
    a1 = model.predict_actions(obs, noise=noise)
    assert not torch.allclose(a0, a1)


def test_mixed_embodiment_batch_equals_per_sample() -> None:
    model = make("action_centered")
    obs = model.example_observation(2, generator=gen(13))
    obs["embodiment_id"] = torch.tensor([0, 1])
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(14))
    both = model.predict_actions(obs, noise=noise)
    for i in range(2):
        one = model.predict_actions({k: v[i:i + 1] for k, v in obs.items()}, noise=noise[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], one, atol=1e-5, rtol=0)


def test_use_state_false_makes_actions_and_loss_blind_to_the_state() -> None:
    noise = torch.randn(1, 8, 8, generator=gen(15))
    for use_state in (True, False):
        model = randomize_zero_init(WorldActionModel(apply_overrides(get_preset("tiny"), [
            f"model.use_state={str(use_state).lower()}"]))).eval()
        obs = model.example_observation(1, generator=gen(16))
        batch = model.example_batch(2, generator=gen(17))
        a0, l0 = model.predict_actions(obs, noise=noise), model.compute_loss(batch, generator=gen(18))["loss"]
        obs["state"], batch["state"] = obs["state"] + 0.5, batch["state"] + 0.5
        a1, l1 = model.predict_actions(obs, noise=noise), model.compute_loss(batch, generator=gen(18))["loss"]
        assert torch.equal(a0, a1) == (not use_state)  # True: the state must matter, else the check is void
        assert torch.equal(l0, l1) == (not use_state)


@pytest.mark.parametrize("mode", MODES)
def test_reference_sees_state_false_keeps_the_image_tokens_blind_to_the_state(mode: str) -> None:
    """model.reference_sees_state=False: the image tokens (read by the auxiliary head) no longer change with
    the state, the actions still do, and the prefix cache stays exact."""
    noise = torch.randn(2, 8, 8, generator=gen(19))
    for sees in (True, False):
        model = randomize_zero_init(WorldActionModel(apply_overrides(tiny(mode), [
            "model.aux_dim=3", f"model.reference_sees_state={str(sees).lower()}"]))).eval()
        obs = model.example_observation(2, generator=gen(20))
        aux0, a0 = model.observe_aux(obs), model.predict_actions(obs, noise=noise)
        if mode != "joint":
            torch.testing.assert_close(model.predict_actions(obs, noise=noise, use_cache=False), a0, atol=1e-5, rtol=0)
        obs["state"] = obs["state"] + 0.5
        aux1, a1 = model.observe_aux(obs), model.predict_actions(obs, noise=noise)
        assert torch.equal(aux0, aux1) == (not sees)  # True: the state reaches the image tokens by default
        assert (a0 - a1).abs().max() > 1e-3  # the actions still read the state


def test_state_dropout_zeroes_the_state_of_some_training_samples() -> None:
    model = make(state_dropout=0.5).train()
    seen: list[torch.Tensor] = []
    model.state_encoder.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach()))
    batch = model.example_batch(64, generator=gen(19))
    batch["state"] = batch["state"].abs() + 0.1  # no sample's state is zero by chance
    model.compute_loss(batch, generator=gen(20))
    zeroed = (seen[-1][:, 0] == 0).all(dim=-1)
    assert 16 <= int(zeroed.sum()) <= 48  # Binomial(64, 0.5): outside this is < 1e-4 likely
    torch.testing.assert_close(seen[-1][~zeroed, 0], batch["state"][~zeroed])
    seen.clear()
    model.eval().predict_actions(model.example_observation(4, generator=gen(21)))  # inference keeps the state
    assert not (seen[-1] == 0).all(dim=-1).any()
    with pytest.raises(Exception, match=r"flow\.state_dropout.*model\.use_state"):
        tiny(state_dropout=1.0)


def test_padding_is_excluded_from_the_action_loss() -> None:
    """Padded steps and padded dims get zero gradient at the action output; real entries do not."""
    model = make("action_centered")
    batch = model.example_batch(2, generator=gen(15))
    batch["action_is_pad"][:] = False
    batch["action_is_pad"][0, -3:] = True
    batch["action_dim_mask"][:] = True
    batch["action_dim_mask"][:, -2:] = False
    outputs: list[torch.Tensor] = []
    handle = model.action_decoder.register_forward_hook(keep_output_grad(outputs))
    model.compute_loss(batch, generator=gen(16))["loss"].backward()
    handle.remove()
    g = outputs[0].grad.abs()  # [b, t, a]
    assert float(g[0, -3:].max()) == 0.0 and float(g[:, :, -2:].max()) == 0.0
    assert float(g[1, :, :-2].min()) > 0.0 and float(g[0, :-3, :-2].min()) > 0.0


def test_padded_future_frames_are_excluded_from_the_video_loss() -> None:
    model = make("action_centered")
    batch = model.example_batch(2, generator=gen(17))
    batch["future_is_pad"][0, -1] = True
    outputs: list[torch.Tensor] = []
    handle = model.proj_out.register_forward_hook(keep_output_grad(outputs))
    model.compute_loss(batch, generator=gen(18))["loss"].backward()
    handle.remove()
    per_frame = model.cfg.tokens_per_latent_frame
    g = outputs[0].grad.abs()  # [b, n_future_tokens, patch values]
    assert float(g[0, -per_frame:].max()) == 0.0
    assert float(g[0, :-per_frame].amax(dim=-1).min()) > 0.0 and float(g[1].amax(dim=-1).min()) > 0.0


def cached(batch: dict, latents: torch.Tensor) -> dict:
    """``batch`` as the latent cache delivers it: ``latents`` instead of the pixel keys."""
    return {k: v for k, v in batch.items() if k not in ("image", "future_frames")} | {"latents": latents}


@pytest.mark.parametrize("mode", MODES)
def test_cached_latents_give_the_pixel_loss(mode: str) -> None:
    """A batch carrying the tokenizer's latents of its frames (the offline cache: reference frame only for
    no_video) trains exactly like the pixel batch, and the latents are what the loss reads."""
    model = make(mode).train()
    batch = model.example_batch(3, generator=gen(21))
    frames = batch["image"][:, None]
    if mode != "no_video":
        frames = torch.cat([frames, batch["future_frames"]], dim=1)
    latents = model.encode_video(frames).contiguous()  # [b, 3, 1 + f_lat, h, w]
    assert latents.shape[2] == 1 + model.cfg.future_latent_frames
    want = model.compute_loss(batch, generator=gen(22))
    got = model.compute_loss(cached(batch, latents), generator=gen(22))
    assert all(torch.allclose(want[k], got[k]) for k in want)
    other = model.compute_loss(cached(batch, latents.flip(0)), generator=gen(22))
    assert not torch.allclose(want["action_loss"], other["action_loss"])  # the reference latents are read
    if mode != "no_video":
        assert not torch.allclose(want["video_loss"], other["video_loss"])


def test_bad_or_missing_latents_are_refused_naming_the_key() -> None:
    model = make()
    batch = model.example_batch(2, generator=gen(23))
    lat = model.encode_video(torch.cat([batch["image"][:, None], batch["future_frames"]], dim=1))
    with pytest.raises(BatchError, match=r"'latents': expected shape \[b=2, C=3, n_lat=3, h_lat=32, w_lat=32\], "
                                         r"got \[2, 3, 2, 32, 32\]"):
        model.compute_loss(cached(batch, lat[:, :, :2]))
    with pytest.raises(BatchError, match=r"'latents': expected dtype torch.float32"):
        model.compute_loss(cached(batch, lat.double()))
    with pytest.raises(BatchError, match=r"missing key 'image'.*or cached 'latents' instead"):
        model.compute_loss({k: v for k, v in batch.items() if k != "image"})


def test_world_model_objective_has_no_action_loss() -> None:
    model = make("action_centered", world_model_prob=1.0)
    out = model.compute_loss(model.example_batch(2, generator=gen(19)), generator=gen(20))
    assert float(out["world_model_fraction"]) == 1.0
    assert float(out["action_loss"]) == 0.0 and float(out["video_loss"]) > 0


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = WorldActionModel(tiny("action_centered")).train()
    batch = model.example_batch(4, generator=gen(21))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    fixed = gen(22)

    def action_loss(seed: int) -> float:
        with torch.no_grad():
            return float(model.compute_loss(batch, generator=gen(seed))["action_loss"])

    before = sum(action_loss(s) for s in range(100, 104)) / 4
    for _ in range(300):
        fixed.manual_seed(int(torch.randint(0, 10_000, (1,))))
        loss = model.compute_loss(batch, generator=fixed)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sum(action_loss(s) for s in range(100, 104)) / 4
    assert after < before / 10, (before, after)


# -- validation --------------------------------------------------------------------------------------


def test_missing_key_names_the_key_and_shape() -> None:
    model = make()
    batch = model.example_batch(2)
    del batch["actions"]
    with pytest.raises(BatchError, match=r"'actions'.*\['b', 't', 'a'\]"):
        model.compute_loss(batch)


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("state", torch.zeros(2, 5), r"'state': expected shape \[b=2, s=8\], got \[2, 5\]"),
        ("image", torch.zeros(2, 3, 16, 32), r"'image': expected shape \[b=2, c=3, h=32, w=32\]"),
        ("image", torch.zeros(2, 3, 32, 32, dtype=torch.float64), r"'image': expected dtype torch.float32"),
        ("state", torch.full((2, 8), float("nan")), r"'state': contains NaN or inf"),
        ("image", torch.full((2, 3, 32, 32), float("inf")), r"'image': contains NaN or inf"),
        ("image", torch.full((2, 3, 32, 32), 255.0), r"'image': values must lie in \[-1.0, 1.0\]"),
        ("embodiment_id", torch.tensor([0, 7]), r"'embodiment_id': unknown embodiment id"),
        ("embodiment_id", torch.tensor([0.0, 1.0]), r"'embodiment_id': expected dtype torch.int64"),
    ],
)
def test_bad_observation_is_refused_with_a_clear_error(key: str, value: torch.Tensor, pattern: str) -> None:
    model = make()
    obs = model.example_observation(2)
    obs[key] = value
    with pytest.raises(BatchError, match=pattern):
        model.predict_actions(obs)


def test_presets_build_and_5b_presets_build_on_meta_without_memory() -> None:
    for name in ("tiny", "cpu-small"):
        n = sum(p.numel() for p in WorldActionModel(get_preset(name)).parameters())
        if name == "cpu-small":
            assert 5e6 <= n <= 15e6
    for name in ("wan2.2-5b", "wan2.2-5b-mot"):
        with torch.device("meta"):
            model = WorldActionModel(get_preset(name))
        assert all(p.is_meta for p in model.parameters())
        wan = sum(p.numel() for k, p in model.named_parameters()
                  if k.startswith(("blocks.", "patch_embedding", "condition_embedder", "proj_out", "scale_shift")))
        assert 4.9e9 < wan < 5.1e9  # Wan2.2-TI2V-5B's transformer
        m = model.cfg
        assert (m.num_layers, m.num_heads, m.head_dim, m.ffn_dim) == (30, 24, 128, 14336)
        assert (m.num_reference_tokens, m.num_future_tokens, m.action_horizon) == (120, 120, 48)


def test_wan_parameter_names() -> None:
    keys = set(WorldActionModel(get_preset("tiny")).state_dict())
    for k in ["patch_embedding.weight", "condition_embedder.time_embedder.linear_1.weight",
              "condition_embedder.time_embedder.linear_2.weight", "condition_embedder.time_proj.weight",
              "condition_embedder.text_embedder.linear_1.weight", "condition_embedder.text_embedder.linear_2.weight",
              "blocks.0.attn1.to_q.weight", "blocks.0.attn1.to_out.0.weight", "blocks.0.attn1.norm_q.weight",
              "blocks.0.attn2.to_k.weight", "blocks.0.attn2.norm_k.weight", "blocks.0.norm2.weight",
              "blocks.0.ffn.net.0.proj.weight", "blocks.0.ffn.net.2.weight", "blocks.0.scale_shift_table",
              "scale_shift_table", "proj_out.weight"]:
        assert k in keys, k


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.attention_mode"):
        apply_overrides(get_preset("tiny"), ["model.attention_mode=bogus"])
    with pytest.raises(ConfigError, match=r"data\.future_offsets"):
        apply_overrides(get_preset("tiny"), ["model.num_future_frames=3"])
    with pytest.raises(ConfigError, match=r"model\.nope"):
        apply_overrides(get_preset("tiny"), ["model.nope=1"])
    cfg = get_preset("cpu-small")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg.model, num_layers=3).num_layers == 3


def test_dtype_casts_keep_rotary_angles_exact() -> None:
    """model.to(dtype) must not touch the RoPE tables (complex -> real casts would corrupt them)."""
    model = make("action_centered")
    obs = model.example_observation(1, generator=gen(30))
    noise = torch.randn(1, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(31))
    ref = model.predict_actions(obs, noise=noise)
    model64 = model.to(torch.float64)
    video, robot = model64.rope_tables(torch.device("cpu"))
    assert video.is_complex() and robot.is_complex()
    model32 = model64.to(torch.float32)
    torch.testing.assert_close(model32.predict_actions(obs, noise=noise), ref, atol=1e-5, rtol=0)


def test_compiled_action_decoding_matches_eager() -> None:
    """compile_action_decoding (torch.compile, weights frozen) gives the eager cached path's actions."""
    model = make("action_centered").eval()
    obs = model.example_observation(2, generator=gen(40))
    noise = torch.randn(2, model.cfg.action_horizon, model.cfg.action_dim, generator=gen(41))
    ref = model.predict_actions(obs, num_steps=2, noise=noise)
    model.compile_action_decoding(freeze=True)
    torch.testing.assert_close(model.predict_actions(obs, num_steps=2, noise=noise), ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # frozen weights: a later weight change must not be silently ignored
        model.action_decoder.mlps[0][-1].bias.add_(1.0)
    with pytest.raises(RuntimeError, match="compile_action_decoding"):
        model.predict_actions(obs, num_steps=2, noise=noise)


def test_conv_patch_stem_trains_and_keeps_the_cache_exact() -> None:
    """model.patch_stem_channels: a strided-conv stem instead of the linear patch embedding. Same token grid,
    gradients reach the stem, the prefix cache still matches full recompute; bad settings name the field."""
    cfg = apply_overrides(get_preset("tiny"), ["model.patch_stem_channels=[8,16,32]"])  # 8x8 patches: 3 halvings
    model = randomize_zero_init(WorldActionModel(cfg)).train()
    assert isinstance(model.patch_stem[0], torch.nn.Conv3d) and model.patch_embedding.kernel_size[1:] == (1, 1)
    batch = model.example_batch(2, generator=gen(30))
    out = model.compute_loss(batch, generator=gen(31))
    out["loss"].backward()
    assert model.patch_stem[0].weight.grad is not None and model.patch_stem[0].weight.grad.abs().sum() > 0
    model.eval()
    obs = model.example_observation(2, generator=gen(32))
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(33))
    torch.testing.assert_close(model.predict_actions(obs, noise=noise, use_cache=True),
                               model.predict_actions(obs, noise=noise, use_cache=False))
    with pytest.raises(ConfigError, match=r"model\.patch_stem_channels"):
        apply_overrides(get_preset("tiny"), ["model.patch_stem_channels=[8]"])  # one halving for an 8x8 patch
    with pytest.raises(ConfigError, match=r"model\.patch_stem_channels.*pixel tokenizer"):
        dataclasses.replace(get_preset("wan2.2-5b").model, patch_stem_channels=(16, 32))


def test_spatial_keypoints_locate_a_pixel_and_feed_the_state_token() -> None:
    """model.keypoints: expected (x, y) of each softmax map, in [-1, 1] along width and height; added to the
    state token through a zero-initialized layer; trains; the prefix cache stays exact."""
    from gigaworld_policy.model.transformer import SpatialKeypoints

    sk = SpatialKeypoints(3, 4, 1, 2)
    sk.net = torch.nn.Conv2d(3, 1, 1)  # the map is the red channel
    with torch.no_grad():
        sk.net.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        sk.net.bias.zero_()
        sk.log_sharpness.fill_(math.log(2.0))
        sk.proj.weight.copy_(torch.eye(2))
        sk.proj.bias.zero_()
    frame = torch.zeros(1, 3, 16, 32)
    frame[0, 0, 5, 12] = 1.0  # a one-pixel red dot at row 5, column 12
    torch.testing.assert_close(sk(frame), torch.tensor([[-1 + 2 * 12 / 31, -1 + 2 * 5 / 15]]), atol=1e-4, rtol=0)

    cfg = apply_overrides(get_preset("tiny"), ["model.keypoints=4", "model.keypoint_hidden=8"])
    fresh = WorldActionModel(cfg)
    assert bool((fresh.keypoints.proj.weight == 0).all())  # a no-op at init: the plain model's outputs
    # ... but its keypoints already sit somewhere: a flat softmax would leave them all at the centre for good
    with torch.no_grad():
        start = fresh.keypoints.coordinates(fresh.example_observation(4, generator=gen(44))["image"])
    assert float(start.abs().max()) > 0.1
    model = randomize_zero_init(fresh).train()
    out = model.compute_loss(model.example_batch(2, generator=gen(40)), generator=gen(41))
    out["loss"].backward()
    assert model.keypoints.net[0].weight.grad is not None and model.keypoints.net[0].weight.grad.abs().sum() > 0
    model.eval()
    obs = model.example_observation(2, generator=gen(42))
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(43))
    torch.testing.assert_close(model.predict_actions(obs, noise=noise, use_cache=True),
                               model.predict_actions(obs, noise=noise, use_cache=False))
    with_keypoints = model.predict_actions(obs, noise=noise, use_cache=True)
    with torch.no_grad():
        model.keypoints.proj.weight.zero_()
        model.keypoints.proj.bias.zero_()
    assert not torch.allclose(model.predict_actions(obs, noise=noise, use_cache=True), with_keypoints)
    with pytest.raises(ConfigError, match=r"model\.keypoints.*pixel tokenizer"):
        dataclasses.replace(get_preset("wan2.2-5b").model, keypoints=8)
    with pytest.raises(ConfigError, match=r"model\.keypoints"):
        apply_overrides(get_preset("tiny"), ["model.keypoints=-1"])


@pytest.mark.parametrize("head", ["tokens", "image_encoder"])
def test_aux_head_learns_a_target_from_the_image_alone(head: str) -> None:
    """model.aux_dim: the head reads the reference-frame tokens (or, model.aux_head="image_encoder", the
    image encoder's features); its loss reaches what it reads, it is part of ``loss`` at
    flow.aux_loss_weight, and it can learn where a bright square is from the image (held-out positions),
    which it could not if it read anything but the image."""
    extra = ["model.image_encoder=32", "model.aux_head=image_encoder"] if head == "image_encoder" else []
    cfg = apply_overrides(get_preset("tiny"), ["model.aux_dim=2", "flow.action_loss_weight=0",
                                               "flow.video_loss_weight=0", "flow.aux_loss_weight=2.5", *extra])
    torch.manual_seed(0)
    model = WorldActionModel(cfg).train()
    h, w = cfg.model.image_height, cfg.model.image_width

    def batch(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        out = model.example_batch(n, generator=g)
        ys = torch.randint(0, h - 6, (n,), generator=g)
        xs = torch.randint(0, w - 6, (n,), generator=g)
        image = torch.full((n, 3, h, w), -1.0)
        for i in range(n):
            image[i, :, ys[i]:ys[i] + 6, xs[i]:xs[i] + 6] = 1.0
        out["image"] = image
        out["future_frames"] = image[:, None].expand(-1, cfg.model.num_future_frames, -1, -1, -1).clone()
        out["aux_target"] = torch.stack([xs, ys], 1).float() / (h - 6) * 2 - 1  # in [-1, 1]
        return out

    first = batch(4, gen(50))
    out = model.compute_loss(first, generator=gen(51))
    assert set(out) >= {"aux_loss"} and float(out["aux_loss"]) > 0
    torch.testing.assert_close(out["loss"], 2.5 * out["aux_loss"])  # the only term left on
    out["loss"].backward()
    if head == "tokens":
        reads = (model.patch_embedding.weight, model.blocks[0].attn1.to_q.weight, model.aux_head.value.weight)
    else:
        reads = (model.image_encoder.convs[0].weight, model.image_encoder.dense.weight, model.aux_head.weight)
    for p in reads:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    del first["aux_target"]
    with pytest.raises(BatchError, match="aux_target"):
        model.compute_loss(first)

    held_out = batch(64, gen(52))
    obs = {k: held_out[k] for k in ("state", "image", "text", "text_mask", "embodiment_id")}
    model.eval()
    before = float(((model.observe_aux(obs) - held_out["aux_target"]) ** 2).mean())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = gen(53)
    for _ in range(150):
        loss = model.compute_loss(batch(16, g), generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = float(((model.observe_aux(obs) - held_out["aux_target"]) ** 2).mean())
    spread = float(held_out["aux_target"].var(0).mean())  # what predicting the mean scores
    assert after < 0.25 * spread and after < 0.25 * before, (before, after, spread)
    # the image-encoder head's probe skips the transformer pass: the same answer as reading it after one
    torch.testing.assert_close(model.observe_aux(obs), model.predict_aux(*model._observe_prefix(obs)))
    # deployment never runs the head: predict_actions is the same with and without its weights
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(54))
    two = {k: v[:2] for k, v in obs.items()}
    acts = model.predict_actions(two, noise=noise)
    with torch.no_grad():
        (model.aux_head.value.weight if head == "tokens" else model.aux_head.weight).normal_()
    torch.testing.assert_close(model.predict_actions(two, noise=noise), acts)
    with pytest.raises(ValueError, match="aux_dim=0"):
        make().observe_aux(two)
    with pytest.raises(ConfigError, match=r"model\.aux_dim"):
        apply_overrides(get_preset("tiny"), ["model.aux_dim=-1"])


def test_image_encoder_starts_as_a_no_op_on_the_state_token_and_then_steers_actions() -> None:
    """model.image_encoder: zero at init (the same actions whatever its convolutions hold), then its
    features reach the actions through the state token, the same with the prefix cache or without;
    config errors name the field."""
    cfg = apply_overrides(get_preset("tiny"), ["model.image_encoder=16"])
    fresh = WorldActionModel(cfg)
    assert bool((fresh.image_encoder.to_state.weight == 0).all()) and bool((fresh.image_encoder.to_state.bias == 0).all())
    model = randomize_zero_init(fresh).eval()
    with torch.no_grad():  # the encoder alone starts at zero
        model.image_encoder.to_state.weight.zero_()
        model.image_encoder.to_state.bias.zero_()
    obs = model.example_observation(2, generator=gen(60))
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(61))
    before = model.predict_actions(obs, noise=noise)
    with torch.no_grad():
        model.image_encoder.convs[0].weight.normal_()
    torch.testing.assert_close(model.predict_actions(obs, noise=noise), before)
    with torch.no_grad():
        model.image_encoder.to_state.weight.normal_()
    steered = model.predict_actions(obs, noise=noise, use_cache=True)
    assert not torch.allclose(steered, before)
    torch.testing.assert_close(model.predict_actions(obs, noise=noise, use_cache=False), steered)
    with pytest.raises(ConfigError, match=r"model\.aux_head.*model\.image_encoder > 0"):
        apply_overrides(get_preset("tiny"), ["model.aux_dim=2", "model.aux_head=image_encoder"])
    with pytest.raises(ConfigError, match=r"model\.aux_head.*'tokens'"):
        apply_overrides(get_preset("tiny"), ["model.aux_head=pooled"])
    with pytest.raises(ConfigError, match=r"model\.image_encoder.*pixel tokenizer"):
        dataclasses.replace(get_preset("wan2.2-5b").model, image_encoder=8)


@pytest.mark.parametrize("mot", [False, True])
def test_image_encoder_token_is_a_second_state_token_that_steers_actions_not_the_state_token(mot: bool) -> None:
    """model.image_encoder_token: the features become an S token of their own (two S tokens in the context),
    not added to the state token; they steer the actions, the prefix cache stays exact, and the action loss
    still ignores the future frames (the token is clean context, before A)."""
    over = ["model.image_encoder=16", "model.image_encoder_token=true"]
    if mot:
        over += ["model.action_expert_dim=32", "model.action_expert_ffn_dim=64"]
    cfg = apply_overrides(get_preset("tiny"), over)
    model = randomize_zero_init(WorldActionModel(cfg)).eval()
    assert not bool((model.image_encoder.to_state.weight == 0).all())  # no zero init: it adds to no token
    obs = model.example_observation(2, generator=gen(70))
    ctx = model._context(obs, use_cache=False)
    assert cfg.model.num_state_tokens == 2 and ctx.prefix[0].x.shape[1] == 2 and ctx.prefix[0].freqs.shape[0] == 2
    torch.testing.assert_close(ctx.prefix[0].x[:, :1], model.state_encoder(
        obs["state"][:, None].to(ctx.prefix[0].x.dtype), ctx.embodiment_id, ctx.embodiments))
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(71))
    before = model.predict_actions(obs, noise=noise, use_cache=True)
    torch.testing.assert_close(model.predict_actions(obs, noise=noise, use_cache=False), before)
    with torch.no_grad():
        model.image_encoder.to_state.weight.mul_(3.0)
    assert not torch.allclose(model.predict_actions(obs, noise=noise), before)
    batch = model.example_batch(3, generator=gen(72))
    ref = model.compute_loss(batch, generator=gen(73))
    batch["future_frames"] = torch.rand_like(batch["future_frames"]) * 2 - 1
    assert torch.equal(ref["action_loss"], model.compute_loss(batch, generator=gen(73))["action_loss"])
    with pytest.raises(ConfigError, match=r"model\.image_encoder_token.*model\.image_encoder > 0"):
        apply_overrides(get_preset("tiny"), ["model.image_encoder_token=true"])


def test_aux_in_state_feeds_the_heads_estimate_to_the_state_encoder_with_its_gradient_stopped() -> None:
    """model.aux_in_state: the state encoder reads [state, head's estimate]; the estimate steers the actions
    (without the flag the head's weights do not reach them), the prefix cache stays exact, and only the
    auxiliary loss trains the head: the action loss stops at the estimate."""
    base = ["model.image_encoder=16", "model.aux_dim=3", "model.aux_head=image_encoder"]
    cfg = apply_overrides(get_preset("tiny"), [*base, "model.aux_in_state=true"])
    model = randomize_zero_init(WorldActionModel(cfg)).eval()
    obs = model.example_observation(2, generator=gen(80))
    ctx = model._context(obs, use_cache=False)
    dtype = ctx.prefix[0].x.dtype
    estimate = model.aux_head(ctx.extras[IMAGE_FEATURES])
    torch.testing.assert_close(ctx.prefix[0].x, model.state_encoder(
        torch.cat([obs["state"].to(dtype), estimate], -1)[:, None], ctx.embodiment_id, ctx.embodiments)
        + model.image_encoder.to_state(ctx.extras[IMAGE_FEATURES])[:, None])
    noise = torch.randn(2, cfg.model.action_horizon, cfg.model.action_dim, generator=gen(81))
    for flag, model_ in ((True, model), (False, randomize_zero_init(WorldActionModel(
            apply_overrides(get_preset("tiny"), base))).eval())):
        before = model_.predict_actions(obs, noise=noise, use_cache=True)
        torch.testing.assert_close(model_.predict_actions(obs, noise=noise, use_cache=False), before)
        with torch.no_grad():
            model_.aux_head.weight.mul_(3.0)
            model_.aux_head.bias.add_(1.0)
        assert torch.allclose(model_.predict_actions(obs, noise=noise), before) is not flag

    model.train()
    batch = model.example_batch(3, generator=gen(82))
    batch["aux_target"] = torch.randn(3, 3, generator=gen(83))
    aux_weight = model.flow_cfg.aux_loss_weight
    model.flow_cfg = dataclasses.replace(model.flow_cfg, aux_loss_weight=0.0, video_loss_weight=0.0)
    out = model.compute_loss(batch, generator=gen(84))
    torch.testing.assert_close(out["loss"], model.flow_cfg.action_loss_weight * out["action_loss"])
    out["loss"].backward()  # the action loss alone: nothing reaches the head, the encoder it reads does
    assert model.aux_head.weight.grad is None or float(model.aux_head.weight.grad.abs().sum()) == 0
    assert sum(float(m[0].weight.grad.abs().sum()) for m in model.state_encoder.mlps if m[0].weight.grad is not None) > 0
    assert float(model.image_encoder.dense.weight.grad.abs().sum()) > 0
    model.zero_grad()
    model.flow_cfg = dataclasses.replace(model.flow_cfg, aux_loss_weight=aux_weight, action_loss_weight=0.0)
    model.compute_loss(batch, generator=gen(84))["loss"].backward()
    assert float(model.aux_head.weight.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match=r"model\.aux_in_state.*aux_head='image_encoder'"):
        apply_overrides(get_preset("tiny"), ["model.image_encoder=16", "model.aux_dim=3", "model.aux_in_state=true"])
