"""Wan 2.2 loading: equivalence with diffusers' WanTransformer3DModel, strict checks that name the field or
tensor, sharded/single-file/meta loading, our own checkpoint round trip, the MoT expert (initialization and
expert-only cached decoding), the Wan VAE tokenizer, the latent cache and the umT5 text encoder.

Every checkpoint here is a small random one written by the test in the real on-disk format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gigaworld_policy.checkpoint import CheckpointError, load_checkpoint, load_model_weights, save_checkpoint
from gigaworld_policy.config import Config, DataConfig, ModelConfig
from gigaworld_policy.data.latent_cache import LatentCache, LatentCacheError, write_latent_cache
from gigaworld_policy.model import WorldActionModel
from gigaworld_policy.model.wan import (
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    WanLoadError,
    WanVAETokenizer,
    build_wan_model,
    load_wan_transformer,
    wan_transformer_config,
)

diffusers = pytest.importorskip("diffusers")

# 2 layers, 2 heads x 24 (RoPE split t/h/w = 8/8/8 like Wan's 44/42/42), 4x6 latents, patch 1x2x2 -> 6 tokens
# per latent frame; 8 future pixel frames -> 2 future latent frames (3 latent frames in all).
CFG = ModelConfig(num_layers=2, num_heads=2, head_dim=24, ffn_dim=64, text_dim=16, max_text_tokens=8,
                  video_tokenizer="wan2.2-vae", latent_channels=4, patch_size=(1, 2, 2), image_height=64,
                  image_width=96, num_future_frames=8, action_horizon=4, action_dim=4, state_dim=4,
                  num_embodiments=2)
MOT = dataclasses.replace(CFG, action_expert_dim=24, action_expert_ffn_dim=32)


def full_config(model_cfg: ModelConfig) -> Config:
    return Config(name="wan-test", model=model_cfg, data=DataConfig(future_offsets=tuple(range(1, 9)),
                                                                     text_encoder="none"))


def random_wan(cfg: ModelConfig = CFG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    ref = diffusers.WanTransformer3DModel(**wan_transformer_config(cfg)).eval()
    with torch.no_grad():  # zero-initialized diffusers tensors would hide mapping mistakes
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    ref = random_wan()
    path = tmp_path_factory.mktemp("wan") / "transformer"
    ref.save_pretrained(path, max_shard_size="20KB")  # several shards + index
    return ref, path


def single_file_copy(ref: torch.nn.Module, src: Path, dst: Path, edit=None) -> Path:
    dst.mkdir(parents=True)
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if edit is not None:
        edit(state)
    save_file(state, str(dst / WEIGHTS_NAME))
    return dst


def video_inputs(b: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, CFG.latent_channels, 3, 4, 6, generator=g)
    text = torch.randn(b, 5, CFG.text_dim, generator=g)
    sigma = torch.tensor([0.3, 0.8])[:b]
    return lat, text, sigma


def diffusers_ti2v(ref: torch.nn.Module, lat: torch.Tensor, text: torch.Tensor, sigma: torch.Tensor,
                   per_token: bool = True) -> torch.Tensor:
    """Wan 2.2 TI2V expanded timesteps [b, seq]: 0 on the first latent frame's tokens, 1000 sigma elsewhere."""
    b, _, f, h, w = lat.shape
    per_frame = (h // 2) * (w // 2)
    ts = (1000.0 * sigma)[:, None].expand(b, f * per_frame).clone()
    if per_token:
        ts[:, :per_frame] = 0.0
    with torch.no_grad():
        return ref(lat, ts, text, return_dict=False)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------------
# Transformer
# ------------------------------------------------------------------------------------------------


def test_sharded_load_reproduces_diffusers_with_per_token_timesteps(wan_dir) -> None:
    ref, path = wan_dir
    assert (path / WEIGHTS_INDEX_NAME).is_file() and len(list(path.glob("*.safetensors"))) > 2
    model = WorldActionModel(CFG).eval()
    report = load_wan_transformer(model, path)
    own = model.state_dict()
    assert sorted(report.loaded) == sorted(ref.state_dict())  # every Wan tensor has a place, name for name
    assert not report.ignored
    assert set(report.initialized) == {k for k in own if k.split(".")[0] in
                                       ("state_encoder", "action_encoder", "action_decoder", "action_out_modulation")}
    text = str(report)
    assert "loaded:      69 tensors" in text and "action_decoder" in text
    for k, v in ref.state_dict().items():
        assert torch.equal(own[k], v), k

    lat, txt, sigma = video_inputs()
    want = diffusers_ti2v(ref, lat, txt, sigma)[:, :, 1:]  # frame 0 is the clean reference (not predicted)
    with torch.no_grad():
        got = model.forward_video(lat, sigma, text=txt, text_mask=torch.ones(2, 5, dtype=torch.bool))
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4
    # the comparison can fail: a uniform timestep (no clean first frame) gives a different answer
    assert rel_err(got, diffusers_ti2v(ref, lat, txt, sigma, per_token=False)[:, :, 1:]) > 1e-2


def test_single_file_and_meta_build_match_the_copy_load(wan_dir, tmp_path: Path) -> None:
    ref, path = wan_dir
    single = single_file_copy(ref, path, tmp_path / "single")
    model = WorldActionModel(CFG).eval()
    load_wan_transformer(model, single)
    meta_model, report = build_wan_model(full_config(CFG), path, dtype=torch.float32)
    meta_model.eval()
    assert len(report.loaded) == 69 and "state_encoder.mlps.0.0.weight" in report.initialized
    assert not any(t.is_meta for t in meta_model.state_dict().values())
    assert all(p.dtype == torch.float32 for p in meta_model.parameters())
    for k, v in model.state_dict().items():
        if k.startswith(("state_encoder", "action_encoder", "action_decoder.mlps.0.0", "action_decoder.mlps.1.0")):
            continue  # random construction init
        assert torch.equal(meta_model.state_dict()[k], v), k
    for mlp in meta_model.action_decoder.mlps:  # output heads start at zero velocity after materialization
        assert not mlp[-1].weight.any()
    lat, txt, sigma = video_inputs()
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(meta_model.forward_video(lat, sigma, text=txt, text_mask=mask),
                              model.forward_video(lat, sigma, text=txt, text_mask=mask))
    bf16, _ = build_wan_model(full_config(CFG), path)  # default: bf16 weights, one copy
    assert bf16.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("field,value", [("ffn_dim", 96), ("num_attention_heads", 3), ("in_channels", 8),
                                         ("patch_size", [1, 1, 1]), ("cross_attn_norm", False), ("eps", 1e-5),
                                         ("text_dim", 32), ("qk_norm", "rms_norm")])
def test_config_mismatch_is_refused_naming_the_field(wan_dir, tmp_path: Path, field: str, value) -> None:
    ref, path = wan_dir
    bad = single_file_copy(ref, path, tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg[field] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WanLoadError, match=rf"config\.json: {field}="):
        load_wan_transformer(WorldActionModel(CFG), bad)


def test_shape_mismatch_missing_and_extra_tensors(wan_dir, tmp_path: Path) -> None:
    ref, path = wan_dir
    name = "blocks.1.ffn.net.0.proj.weight"

    def widen(state):
        state[name] = torch.zeros(65, 48)

    bad = single_file_copy(ref, path, tmp_path / "shape", widen)
    with pytest.raises(WanLoadError, match=r"blocks\.1\.ffn\.net\.0\.proj\.weight.*\[65, 48\].*\[64, 48\]"):
        load_wan_transformer(WorldActionModel(CFG), bad)

    def drop_and_add(state):
        del state["blocks.0.norm2.weight"]
        state["blocks.0.attn2.norm_added_k.weight"] = torch.ones(48)

    odd = single_file_copy(ref, path, tmp_path / "odd", drop_and_add)
    with pytest.raises(WanLoadError, match=r"missing backbone tensors \['blocks\.0\.norm2\.weight'\]"):
        load_wan_transformer(WorldActionModel(CFG), odd)
    report = load_wan_transformer(WorldActionModel(CFG), odd, strict_backbone=False)
    assert report.ignored == ["blocks.0.attn2.norm_added_k.weight"]
    assert "blocks.0.norm2.weight" in report.initialized

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(WanLoadError, match=WEIGHTS_NAME):
        load_wan_transformer(WorldActionModel(CFG), tmp_path / "empty")


def test_own_checkpoint_round_trip_and_refusal(wan_dir, tmp_path: Path) -> None:
    _, path = wan_dir
    config = full_config(CFG)
    model = WorldActionModel(config).eval()
    load_wan_transformer(model, path)
    ckpt = save_checkpoint(tmp_path / "ckpt", config=config, model_state=model.state_dict(),
                           norm_stats={"sources": []})
    config2, weights, _, _ = load_checkpoint(ckpt)
    assert config2 == config
    fresh = WorldActionModel(config2).eval()
    load_model_weights(fresh, weights, where=str(ckpt))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    weights["proj_out.weight"] = torch.zeros(3, 48)
    with pytest.raises(CheckpointError, match=r"'proj_out\.weight' has shape \[3, 48\]"):
        load_model_weights(WorldActionModel(config2), weights)
    raw = load_file(str(ckpt / "model.safetensors"))
    assert set(raw) == set(model.state_dict())


# ------------------------------------------------------------------------------------------------
# Mixture-of-Transformers expert
# ------------------------------------------------------------------------------------------------


def test_mot_expert_initialized_from_dense_and_runs_alone_in_cached_decoding(wan_dir) -> None:
    ref, path = wan_dir
    model = WorldActionModel(MOT).eval()
    report = load_wan_transformer(model, path)
    D, Da = MOT.dim, MOT.action_stream_dim
    idx = torch.arange(Da) * D // Da
    assert report.initialized["action_blocks.1.attn1.to_q.weight"] == "sliced from blocks.1.attn1.to_q.weight"
    dense, expert = model.blocks[1], model.action_blocks[1]
    scale = (D / Da) ** 0.5
    assert torch.allclose(expert.attn1.to_q.weight, dense.attn1.to_q.weight[:, idx] * scale)
    assert torch.equal(expert.attn1.norm_k.weight, dense.attn1.norm_k.weight)  # per-head spaces kept whole
    assert torch.equal(expert.attn2.to_k.weight, dense.attn2.to_k.weight)  # shared D-wide text keys
    assert torch.equal(expert.attn1.to_out[0].weight, dense.attn1.to_out[0].weight[idx])
    assert torch.equal(expert.scale_shift_table, dense.scale_shift_table[:, :, idx])
    tp = model.condition_embedder.time_proj.weight.unflatten(0, (6, D))
    assert torch.equal(model.action_time_proj.weight.unflatten(0, (6, Da)), tp[:, idx])
    # the visual stream is untouched: still Wan's computation
    lat, txt, sigma = video_inputs()
    with torch.no_grad():
        got = model.forward_video(lat, sigma, text=txt, text_mask=torch.ones(2, 5, dtype=torch.bool))
    assert rel_err(got, diffusers_ti2v(ref, lat, txt, sigma)[:, :, 1:]) < 1e-4

    # action-only decoding with the prefix cache: after the observation is encoded, no visual-stream module
    # runs; every denoising step runs the expert only
    calls = {"visual": 0, "expert": 0}
    for name, mods in (("visual", model.blocks), ("expert", model.action_blocks)):
        for m in mods.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    for m in (model.patch_embedding, model.proj_out):
        m.register_forward_hook(lambda *_: calls.__setitem__("visual", calls["visual"] + 1))
    at_context = {}
    encode = model.encode_context

    def spy(**kw):
        ctx = encode(**kw)
        at_context.update(calls)
        return ctx

    model.encode_context = spy  # type: ignore[method-assign]
    obs = model.example_observation(2, generator=torch.Generator().manual_seed(0))
    model.set_video_tokenizer(_LatentStub())
    actions = model.predict_actions(obs, num_steps=3, use_cache=True)
    assert actions.shape == (2, MOT.action_horizon, MOT.action_dim)
    assert at_context["visual"] > 0  # the reference frame ran through the visual stream once
    assert calls["visual"] == at_context["visual"]  # ... and never again in the denoising loop
    assert calls["expert"] - at_context["expert"] >= 3 * MOT.num_layers * 6


class _LatentStub(torch.nn.Module):
    """VideoTokenizer stand-in (no VAE weights needed): [b, 1, 3, 64, 96] -> [b, 4, 1, 4, 6] by 16x pooling."""

    latent_channels, spatial_compression, temporal_compression = 4, 16, 4

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(frames.flatten(0, 1), 16)  # [b n, 3, 4, 6]
        return torch.cat([x, x[:, :1]], dim=1).unflatten(0, frames.shape[:2]).transpose(1, 2)


# ------------------------------------------------------------------------------------------------
# VAE tokenizer, latent cache, text encoder
# ------------------------------------------------------------------------------------------------

Z = 8


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wan 2.2-style VAE: residual blocks, patch 2, 12 patchified input channels, 16x / 4x compression."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(
        base_dim=16, decoder_base_dim=16, z_dim=Z, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_spatial=16, scale_factor_temporal=4,
        latents_mean=[0.1 * i for i in range(Z)], latents_std=[1.0 + 0.5 * i for i in range(Z)])
    path = tmp_path_factory.mktemp("vae") / "vae"
    vae.save_pretrained(path)
    return path


def test_vae_tokenizer_round_trip_shapes_and_normalization(vae_dir: Path) -> None:
    tok = WanVAETokenizer.from_pretrained(vae_dir)
    assert (tok.latent_channels, tok.spatial_compression, tok.temporal_compression) == (Z, 16, 4)
    frames = torch.rand(2, 5, 3, 32, 48) * 2 - 1
    lat = tok.encode(frames)
    assert lat.shape == (2, Z, 2, 2, 3)
    x = frames.permute(0, 2, 1, 3, 4)
    mu = tok.vae.encode(x).latent_dist.mode()
    mean = torch.tensor([0.1 * i for i in range(Z)]).view(1, Z, 1, 1, 1)
    std = torch.tensor([1.0 + 0.5 * i for i in range(Z)]).view(1, Z, 1, 1, 1)
    assert torch.allclose(lat, (mu - mean) / std, atol=1e-5)
    # the reference frame alone encodes to latent frame 0 (causal VAE): inference encodes it by itself
    assert torch.allclose(tok.encode(frames[:, :1]), lat[:, :, :1], atol=1e-4)
    out = tok.decode(lat)
    assert out.shape == frames.shape and out.abs().max() <= 1.0
    with torch.no_grad():
        assert torch.allclose(out, tok.vae.decode(mu).sample.permute(0, 2, 1, 3, 4).clamp(-1, 1), atol=1e-4)
    with pytest.raises(ValueError, match="1 \\+ 4 k frames"):
        tok.encode(frames[:, :3])
    tok.check(dataclasses.replace(CFG, latent_channels=Z))
    with pytest.raises(WanLoadError, match="latent_channels"):
        tok.check(CFG)


class _FakeWindows:
    """Dataset stand-in: episodes of 3 anchor frames (10, 11, 12), windows of 1 + 4 frames (default: 2 episodes
    of random 32x32 frames)."""

    def __init__(self, frames: torch.Tensor | None = None) -> None:  # [samples, 5, 3, H, W]
        g = torch.Generator().manual_seed(3)
        self.frames = torch.rand(6, 5, 3, 32, 32, generator=g) * 2 - 1 if frames is None else frames

    def __len__(self) -> int:
        return len(self.frames)

    def locate(self, i: int) -> tuple[int, int, int]:
        return 0, i // 3, 10 + i % 3

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.frames[i, 0], "future_frames": self.frames[i, 1:]}


def test_latent_cache_write_read(vae_dir: Path, tmp_path: Path) -> None:
    tok = WanVAETokenizer.from_pretrained(vae_dir)
    ds = _FakeWindows()
    root = write_latent_cache(ds, tok, tmp_path / "cache", batch_size=4, dtype=torch.float32)
    assert sorted(p.name for p in (root / "source_000").iterdir()) == ["episode_000000.safetensors",
                                                                       "episode_000001.safetensors"]
    cache = LatentCache(root, expect_shape=[Z, 2, 2, 2])
    want = tok.encode(ds.frames[4:5])[0]
    assert torch.allclose(cache.get(0, 1, 11), want, atol=1e-5)
    with pytest.raises(LatentCacheError, match=r"episode_000001\.safetensors: episode 1 has no cached frame 13"):
        cache.get(0, 1, 13)
    with pytest.raises(LatentCacheError, match="stale"):
        LatentCache(root, expect_shape=[Z, 1, 2, 2])
    # the VAE that wrote the cache: the same weights pass, other weights or another dtype are refused
    cache.check_tokenizer(WanVAETokenizer.from_pretrained(vae_dir))
    with pytest.raises(LatentCacheError, match=r"latent_cache\.json: written by another tokenizer"):
        cache.check_tokenizer(WanVAETokenizer.from_pretrained(vae_dir, dtype=torch.bfloat16))
    with torch.no_grad():
        next(tok.vae.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(LatentCacheError, match="another tokenizer"):
        cache.check_tokenizer(tok)
    meta = json.loads((root / "latent_cache.json").read_text())
    del meta["tokenizer"]
    (root / "latent_cache.json").write_text(json.dumps(meta))
    with pytest.raises(LatentCacheError, match="records no tokenizer fingerprint"):
        LatentCache(root).check_tokenizer(tok)


def test_loss_on_cached_wan_latents_equals_the_pixel_loss(wan_shaped_config, narrow_wan_vae, tmp_path: Path) -> None:
    """wan2.2-5b layout: latents written by the cache and read back give the loss that encodes the pixels."""
    cfg = wan_shaped_config("wan2.2-5b")
    model = WorldActionModel(cfg, video_tokenizer=narrow_wan_vae).train()
    batch = model.example_batch(2, generator=torch.Generator().manual_seed(4))
    windows = _FakeWindows(torch.cat([batch["image"][:, None], batch["future_frames"]], dim=1))
    root = write_latent_cache(windows, narrow_wan_vae, tmp_path / "cache", batch_size=1, dtype=torch.float32)
    m = cfg.model
    cache = LatentCache(root, expect_shape=[m.latent_channels, 1 + m.future_latent_frames, *m.latent_hw])
    latents = torch.stack([cache.get(0, 0, 10), cache.get(0, 0, 11)])  # [2, 48, 2, 4, 4]
    pixels_free = {k: v for k, v in batch.items() if k not in ("image", "future_frames")}
    want = model.compute_loss(batch, torch.Generator().manual_seed(5))
    got = model.compute_loss(pixels_free | {"latents": latents}, torch.Generator().manual_seed(5))
    assert all(torch.allclose(want[k], got[k], rtol=1e-4, atol=1e-6) for k in want), (want, got)
    other = model.compute_loss(pixels_free | {"latents": latents.flip(0)}, torch.Generator().manual_seed(5))
    assert not torch.allclose(want["video_loss"], other["video_loss"], rtol=1e-4)


def test_umt5_text_encoder_from_a_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from gigaworld_policy.model.text import build_text_encoder

    words = "pick up the red cube and place it in box".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    cfg = transformers.UMT5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                                  relative_attention_num_buckets=8)
    path = tmp_path / "umt5"
    fast.save_pretrained(path)
    transformers.UMT5EncoderModel(cfg).save_pretrained(path)
    enc = build_text_encoder("umt5", max_tokens=4, dim=16, path=path)
    emb, mask = enc.encode(["pick up the red cube", "place it"])
    assert emb.shape == (2, 4, 16) and mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert not emb[1, 2:].any() and emb[1, :2].abs().sum() > 0
    with pytest.raises(ValueError, match="text_dim=4096"):
        build_text_encoder("umt5", max_tokens=4, dim=4096, path=path)


# ------------------------------------------------------------------------------------------------
# Gradient checkpointing and the memory plan (docs/memory.md)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mot", [False, True])
def test_gradient_checkpointing_same_gradients_less_saved_memory(mot: bool) -> None:
    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.model.memory import saved_activation_bytes

    over = ["model.action_expert_dim=32", "model.action_expert_ffn_dim=64"] if mot else []
    config = apply_overrides(get_preset("tiny"), over)
    torch.manual_seed(0)
    model = WorldActionModel(config).train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # zero-initialized heads would zero most gradients
    batch = model.example_batch(2, generator=torch.Generator().manual_seed(1))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    grads, saved = {}, {}
    for ckpt in (False, True):
        model.gradient_checkpointing = ckpt
        model.zero_grad()
        saved[ckpt] = saved_activation_bytes(
            lambda: model.compute_loss(batch, generator=torch.Generator().manual_seed(2))["loss"].backward(), params)
        grads[ckpt] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    for n, g in grads[False].items():
        assert torch.allclose(grads[True][n], g, atol=1e-6, rtol=1e-4), n
    assert saved[True] < 0.5 * saved[False]


def test_memory_parameter_breakdown_of_the_5b_presets() -> None:
    from gigaworld_policy.config import get_preset
    from gigaworld_policy.model.memory import parameter_breakdown

    dense = parameter_breakdown(get_preset("wan2.2-5b"))
    mot = parameter_breakdown(get_preset("wan2.2-5b-mot"))
    assert 4.99e9 < dense["backbone"] == mot["backbone"] < 5.01e9  # Wan2.2-TI2V-5B: 5.0 B (DESIGN.md)
    assert dense["expert"] == 0 and 1.3e9 < mot["expert"] < 1.5e9


def test_wan22_vae_architecture_with_random_weights_matches_the_5b_presets() -> None:
    """The architecture benchmarks build without a checkpoint is Wan 2.2's VAE: 705 M parameters (DESIGN.md),
    48 latent channels, 16x / 4x compression, accepted by the 5B presets (built on meta: no memory)."""
    from gigaworld_policy.config import get_preset
    from gigaworld_policy.model.wan import WanLoadError, wan_vae_tokenizer

    tok = wan_vae_tokenizer(get_preset("wan2.2-5b").model, None, device="meta")
    n = sum(p.numel() for p in tok.vae.parameters())
    assert 700e6 < n < 710e6, n
    assert (tok.latent_channels, tok.spatial_compression, tok.temporal_compression) == (48, 16, 4)
    with pytest.raises(WanLoadError, match=r"model\.video_tokenizer"):
        wan_vae_tokenizer(get_preset("cpu-small").model, None, device="meta")
