"""`gwp bench latency`: the three decoding paths at the tiny preset and at the 5B presets' layout."""

from __future__ import annotations

import json

import pytest

from gigaworld_policy.bench.latency import matmul_floor, run_latency
from gigaworld_policy.cli import main as gwp
from gigaworld_policy.config import get_preset
from gigaworld_policy.model.layout import token_passes


def test_cli_json_line_has_the_documented_fields(capsys) -> None:
    assert gwp(["bench", "latency", "--preset", "tiny", "--repeats", "2", "--warmup", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("joint_ms", "action_only_ms", "action_only_cached_ms", "speedup", "ideal_speedup", "encode_ms"):
        assert r[key] > 0, key
    m = get_preset("tiny").model
    n_ctx, n_a, n_f = 1 + m.num_reference_tokens, m.action_horizon, m.num_future_tokens
    joint = token_passes(10, n_ctx, n_a, n_f, cached=False, with_video=True)
    cached = token_passes(10, n_ctx, n_a, n_f, cached=True, with_video=False)
    assert r["ideal_speedup"] == pytest.approx(joint / cached, rel=1e-3)
    assert r["speedup"] == pytest.approx(r["joint_ms"] / r["action_only_cached_ms"], rel=1e-2)
    assert r["floor_speedup"] == pytest.approx(r["floor_joint_ms"] / r["floor_cached_ms"], rel=1e-2)


def test_matmul_floor_does_the_token_count_work() -> None:
    """The floor's FLOPs are the blocks' token-wise GEMMs at exactly the token passes of each path, so the
    joint/cached FLOP ratio is the ideal speedup (only the time ratio may fall short of it)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gigaworld_policy.model import WorldActionModel

    model = WorldActionModel(get_preset("tiny")).eval()
    m = model.cfg
    n_ctx, n_a, n_f = 1 + m.num_reference_tokens, m.action_horizon, m.num_future_tokens
    fns = matmul_floor(model, 10, n_ctx, n_a, n_f)
    per_token = 2 * sum(blk.get_submodule(n).weight.numel() for blk in model.blocks for n in (
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
        "ffn.net.0.proj", "ffn.net.2"))
    flops = {}
    for name, fn in fns.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops()
    assert flops["floor_joint"] == per_token * token_passes(10, n_ctx, n_a, n_f, cached=False, with_video=True)
    assert flops["floor_cached"] == per_token * token_passes(10, n_ctx, n_a, n_f, cached=True, with_video=False)


@pytest.mark.parametrize("preset", ["wan2.2-5b", "wan2.2-5b-mot"])
def test_runs_at_the_5b_layout_with_a_wan_vae(preset: str, wan_shaped_config, narrow_wan_vae) -> None:
    """The 5B presets' token layout through the Wan VAE tokenizer (random weights, narrow), every path."""
    r = run_latency(wan_shaped_config(preset), repeats=1, warmup=0, video_tokenizer=narrow_wan_vae)
    # 64x64 frame -> 4x4 latents -> 2x2 patches: 4 tokens per latent frame; 4 future frames -> 1 latent frame
    assert r["tokens"] == {"context": 5, "action": 4, "future": 4}
    assert r["video_tokenizer"] == "wan2.2-vae" and r["encode_ms"] > 0
    assert ("floor_speedup" in r) == (preset == "wan2.2-5b")  # no floor for two weight sets per layer (MoT)


@pytest.mark.slow
def test_compiled_paths_are_timed_like_for_like() -> None:
    """--compile times joint decoding compiled too; speedup_compiled is compiled joint over compiled cached."""
    r = run_latency(get_preset("tiny"), repeats=1, warmup=0, compile=True)
    for key in ("joint_compiled_ms", "action_only_cached_compiled_ms", "compile_s"):
        assert r[key] > 0, key
    assert r["speedup_compiled"] == pytest.approx(r["joint_compiled_ms"] / r["action_only_cached_compiled_ms"],
                                                  rel=1e-2)
    assert r["token_passes"]["joint_compiled"] == r["token_passes"]["joint"]
