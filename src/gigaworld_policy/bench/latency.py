"""`gwp bench latency`: time one action chunk for joint, action-only, and cached action-only decoding.

All three run the same model at the same number of denoising steps:
  joint          ``generate`` without the prefix cache: actions and future video denoised together,
                 the whole sequence at every step (what a Motus-style joint model must do);
  action_only    ``predict_actions(use_cache=False)``: no F tokens, S/R/A recomputed every step;
  cached         ``predict_actions(use_cache=True)``: S/R and text keys/values once, then A tokens only.
``ideal_speedup`` is joint over cached counted in token passes (layout.token_passes): what an
implementation whose cost were exactly proportional to tokens would get. ``floor_*`` times only the
transformer blocks' token-wise matmuls of each path (:func:`matmul_floor`, the model's own weights): what
an implementation with no cost besides those GEMMs would get on this machine, so ``floor_speedup`` is the
reachable counterpart of ``ideal_speedup``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable

import torch

from gigaworld_policy.config import Config, apply_overrides, get_preset
from gigaworld_policy.model import WorldActionModel
from gigaworld_policy.model.layout import token_passes
from gigaworld_policy.model.tokenizers import VideoTokenizer


def paper_geometry(cfg: Config) -> Config:
    """The paper's token counts on a pixel tokenizer: 1 + 120 clean, 48 action, 120 future tokens."""
    if cfg.model.video_tokenizer != "pixel":
        return cfg
    p = cfg.model.patch_size[1]
    model = dataclasses.replace(cfg.model, image_height=12 * p, image_width=10 * p, num_future_frames=1,
                                action_horizon=48, patch_size=(1, p, p))
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, future_offsets=(48,)))


# the blocks' linears that act on sequence tokens (diffusers WanTransformerBlock names), Q/K/V fused into one
# GEMM as under compile; attn2.to_k/to_v act on the text, which both paths project once per chunk
_TOKEN_LINEARS = (("attn1.to_q", "attn1.to_k", "attn1.to_v"), ("attn1.to_out.0",), ("attn2.to_q",),
                  ("attn2.to_out.0",), ("ffn.net.0.proj",), ("ffn.net.2",))


def matmul_floor(model: WorldActionModel, steps: int, n_ctx: int, n_a: int, n_f: int
                 ) -> dict[str, Callable[[], object]] | None:
    """Two callables that run only the token-wise matmuls of joint decoding (every step: all
    ``n_ctx + n_a + n_f`` tokens through every block) and of cached action-only decoding (the context once,
    then ``n_a`` tokens per step): 6 GEMMs per block (Q/K/V fused) with the model's weights; attention,
    norms, modulation and elementwise work are left out, so an implementation of this layer structure
    cannot beat it. None for Mixture-of-Transformers models (two weight sets per layer)."""
    if model.is_mot:
        return None
    import torch.nn.functional as F

    gemms = []  # (weight [out, in], bias [out])
    for blk in model.blocks:
        for names in _TOKEN_LINEARS:
            mods = [blk.get_submodule(n) for n in names]
            gemms.append((torch.cat([m.weight.detach() for m in mods]), torch.cat([m.bias.detach() for m in mods])))
    ref = gemms[0][0]
    inputs: dict[tuple[int, int], torch.Tensor] = {}

    def run(rows: int, times: int) -> None:
        for _ in range(times):
            for w, b in gemms:
                key = (rows, w.shape[1])
                if key not in inputs:
                    inputs[key] = torch.randn(1, rows, w.shape[1], device=ref.device, dtype=ref.dtype)
                F.linear(inputs[key], w, b)

    def cached() -> None:
        run(n_ctx, 1)
        run(n_a, steps)

    return {"floor_joint": lambda: run(n_ctx + n_a + n_f, steps), "floor_cached": cached}


def _time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                      sync: Callable[[], None]) -> dict[str, list[float]]:
    """Milliseconds per call, the paths interleaved round-robin so machine noise hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            out[k].append((time.perf_counter() - t0) * 1e3)
    return out


def run_latency(cfg: Config, *, device: str = "cpu", num_steps: int | None = None, repeats: int = 20,
                warmup: int = 3, dtype: torch.dtype | None = None, seed: int = 0, compile: bool = False,
                video_tokenizer: VideoTokenizer | None = None, vae: str | None = None) -> dict[str, object]:
    """Median milliseconds per chunk (batch 1) for the three decoding paths, plus token-count ratios.

    Every path includes encoding the current frame with the video tokenizer (also timed alone as
    ``encode_ms``). A Wan-VAE config takes ``video_tokenizer``, else the VAE folder ``vae``, else the Wan 2.2
    VAE architecture with random weights.
    """
    if cfg.model.attention_mode != "action_centered":
        cfg = apply_overrides(cfg, ["model.attention_mode=action_centered"])
    torch.manual_seed(seed)
    dev = torch.device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    random_vae = video_tokenizer is None and vae is None and cfg.model.video_tokenizer == "wan2.2-vae"
    if video_tokenizer is None:
        from gigaworld_policy.model.wan import video_tokenizer_for

        video_tokenizer = video_tokenizer_for(cfg.model, vae, device=dev, dtype=dtype, allow_random=True)
    with dev:
        model = WorldActionModel(cfg, video_tokenizer=video_tokenizer).to(dtype).eval()
    model.init_non_persistent_buffers(dev)
    obs = model.example_observation(1, generator=torch.Generator().manual_seed(seed))  # fp32, as a robot sends
    obs = {k: v.to(dev) for k, v in obs.items()}
    steps = num_steps or cfg.flow.num_inference_steps
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    m = cfg.model
    n_ctx, n_a, n_f = m.num_state_tokens + m.num_reference_tokens, m.action_horizon, m.num_future_tokens
    runs = {
        "joint": lambda: model.generate(obs, num_steps=steps, use_cache=False),
        "action_only": lambda: model.predict_actions(obs, num_steps=steps, use_cache=False),
        "action_only_cached": lambda: model.predict_actions(obs, num_steps=steps, use_cache=True),
        "encode": lambda: model.encode_video(obs["image"][:, None]),  # part of every path above
    }
    floor = matmul_floor(model, steps, n_ctx, n_a, n_f)
    runs.update(floor or {})
    compile_s = None
    if compile:  # the cached path and joint decoding, each compiled (weights frozen into the graph)
        compiled = WorldActionModel(cfg, video_tokenizer=video_tokenizer).to(device=dev, dtype=dtype).eval()
        compiled.load_state_dict(model.state_dict())
        compiled.compile_action_decoding(freeze=True)
        joint_compiled = torch.compile(compiled.generate, dynamic=False, options={"freezing": True})
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled.predict_actions(obs, num_steps=steps)  # compiles
            sync()
            compile_s = time.perf_counter() - t0
            joint_compiled(obs, num_steps=steps)
        runs["joint_compiled"] = lambda: joint_compiled(obs, num_steps=steps)
        runs["action_only_cached_compiled"] = lambda: compiled.predict_actions(obs, num_steps=steps)
    with torch.inference_mode():
        times = _time_interleaved(runs, repeats, warmup, sync)
    med = {k: statistics.median(v) for k, v in times.items()}
    passes = {
        "joint": token_passes(steps, n_ctx, n_a, n_f, cached=False, with_video=True),
        "action_only": token_passes(steps, n_ctx, n_a, n_f, cached=False, with_video=False),
        "action_only_cached": token_passes(steps, n_ctx, n_a, n_f, cached=True, with_video=False),
    }
    if compile:
        passes["joint_compiled"] = passes["joint"]
        passes["action_only_cached_compiled"] = passes["action_only_cached"]
    ideal = passes["joint"] / passes["action_only_cached"]
    speedup = med["joint"] / med["action_only_cached"]
    return {
        "preset": cfg.name, "device": str(dev), "dtype": str(dtype).replace("torch.", ""), "steps": steps,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "tokens": {"context": n_ctx, "action": n_a, "future": n_f},
        "joint_ms": round(med["joint"], 3), "action_only_ms": round(med["action_only"], 3),
        "action_only_cached_ms": round(med["action_only_cached"], 3), "encode_ms": round(med["encode"], 3),
        "video_tokenizer": cfg.model.video_tokenizer + (" (random weights)" if random_vae else ""),
        "p90_ms": {k: round(sorted(v)[int(0.9 * (len(v) - 1))], 3) for k, v in times.items()},
        "token_passes": passes, "speedup": round(speedup, 3),
        "speedup_uncached_over_cached": round(med["action_only"] / med["action_only_cached"], 3),
        "ideal_speedup": round(ideal, 3), "fraction_of_ideal": round(speedup / ideal, 3),
        "repeats": repeats, "torch_threads": torch.get_num_threads(),
    } | ({} if floor is None else {
        "floor_joint_ms": round(med["floor_joint"], 3), "floor_cached_ms": round(med["floor_cached"], 3),
        "floor_speedup": round(med["floor_joint"] / med["floor_cached"], 3),
        "floor_fraction_of_ideal": round(med["floor_joint"] / med["floor_cached"] / ideal, 3),
    }) | ({} if not compile else {
        "action_only_cached_compiled_ms": round(med["action_only_cached_compiled"], 3),
        "compile_s": round(compile_s, 1),
        "joint_compiled_ms": round(med["joint_compiled"], 3),
        # both paths compiled: the like-for-like ratio to hold against ideal_speedup
        "speedup_compiled": round(med["joint_compiled"] / med["action_only_cached_compiled"], 3),
        # eager joint over compiled cached: mixes an optimisation into the comparison
        "speedup_eager_joint_over_compiled": round(med["joint"] / med["action_only_cached_compiled"], 3),
    })


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, 10)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--geometry", choices=["preset", "paper"], default="preset",
                   help="'paper': 121 clean context, 48 action and 120 future tokens at the preset's width")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--compile", action="store_true",
                   help="also time the cached path and joint decoding under torch.compile (weights frozen; "
                   "compiling takes minutes on 2 CPU cores)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON line")
    p.add_argument("--vae", default=None, help="Wan 2.2 VAE directory for wan2.2-vae presets (default: the "
                   "architecture with random weights)")


def run(args: argparse.Namespace) -> int:
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    if args.geometry == "paper":
        cfg = paper_geometry(cfg)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    r = run_latency(cfg, device=args.device, num_steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                    compile=args.compile, vae=args.vae)
    r["geometry"] = args.geometry
    if args.json:
        print(json.dumps(r))
        return 0
    tok = r["tokens"]
    print(f"preset={r['preset']} geometry={args.geometry} device={r['device']} dtype={r['dtype']} "
          f"params={r['params_m']}M steps={r['steps']} tokens: context={tok['context']} action={tok['action']} "
          f"future={tok['future']}")
    print(f"{'path':28s} {'median ms':>10s} {'p90 ms':>10s} {'token passes':>13s}")
    for k in r["token_passes"]:
        print(f"{k:28s} {r[k + '_ms']:10.2f} {r['p90_ms'][k]:10.2f} {r['token_passes'][k]:13d}")
    print(f"speedup joint/cached = {r['speedup']:.2f}x (ideal {r['ideal_speedup']:.2f}x, "
          f"{100 * r['fraction_of_ideal']:.0f}% of ideal); uncached/cached = {r['speedup_uncached_over_cached']:.2f}x")
    print(f"{'(of which: encode the frame)':28s} {r['encode_ms']:10.2f} {r['p90_ms']['encode']:10.2f}   "
          f"tokenizer {r['video_tokenizer']}")
    if "floor_speedup" in r:
        print(f"matmul floor (the blocks' token-wise GEMMs only): joint {r['floor_joint_ms']:.2f} ms, cached "
              f"{r['floor_cached_ms']:.2f} ms = {r['floor_speedup']:.2f}x ({100 * r['floor_fraction_of_ideal']:.0f}% "
              f"of ideal): the most this layer structure gets here")
    if "speedup_compiled" in r:
        print(f"compiled: joint/cached = {r['speedup_compiled']:.2f}x "
              f"({100 * r['speedup_compiled'] / r['ideal_speedup']:.0f}% of ideal); cached compile "
              f"{r['compile_s']} s; joint (eager)/compiled cached = {r['speedup_eager_joint_over_compiled']:.2f}x")
    return 0


__all__ = ["matmul_floor", "paper_geometry", "run_latency"]
