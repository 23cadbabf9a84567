"""Memory plan for the 5B presets: the numbers behind docs/memory.md, measured, not guessed.

- parameter counts per component from a ``meta``-device build (no memory allocated);
- activation bytes kept for backward, measured with autograd saved-tensor hooks on a truncated model of the
  preset's exact widths and token counts (1 and 2 layers: the difference is one layer), bf16 weights and
  inputs as under FSDP2 mixed precision, with and without gradient checkpointing.

Run: ``python -m gigaworld_policy.model.memory [--presets wan2.2-5b wan2.2-5b-mot] [--batch 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from gigaworld_policy.config import Config, get_preset

GROUPS = ("backbone", "expert", "robot")


def component_of(name: str) -> str:
    if name.startswith(("action_blocks.", "action_time_proj.")):
        return "expert"
    if name.startswith(("state_encoder.", "action_encoder.", "action_decoder.", "action_out_modulation.")):
        return "robot"
    return "backbone"


def parameter_breakdown(config: Config) -> dict[str, int]:
    """Parameters per component (backbone = Wan-named modules, expert = MoT action stream, robot = new MLPs)."""
    from gigaworld_policy.model.world_action_model import WorldActionModel

    with torch.device("meta"):
        model = WorldActionModel(config)
    counts = dict.fromkeys(GROUPS, 0)
    for n, p in model.named_parameters():
        counts[component_of(n)] += p.numel()
    return counts


def saved_activation_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """Bytes of distinct storages autograd saves for backward while ``fn`` runs (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _random_model(config: Config, num_layers: int, dtype: torch.dtype) -> nn.Module:
    from gigaworld_policy.model.world_action_model import WorldActionModel

    cfg = dataclasses.replace(config, model=dataclasses.replace(config.model, num_layers=num_layers))
    with torch.device("meta"):
        model = WorldActionModel(cfg)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.data = torch.empty(p.shape, dtype=dtype).normal_(0.0, 0.02)
    model.init_non_persistent_buffers("cpu")
    return model.train()


def training_step_inputs(config: Config, batch_size: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    m = config.model
    lh, lw = m.latent_hw
    b = batch_size
    return {
        "state": torch.randn(b, m.state_dim, dtype=dtype),
        "reference_latents": torch.randn(b, m.latent_channels, 1, lh, lw, dtype=dtype),
        "text": torch.randn(b, m.max_text_tokens, m.text_dim, dtype=dtype),
        "text_mask": torch.ones(b, m.max_text_tokens, dtype=torch.bool),
        "embodiment_id": torch.zeros(b, dtype=torch.long),
        "noisy_actions": torch.randn(b, m.action_horizon, m.action_dim, dtype=dtype),
        "noisy_future": torch.randn(b, m.latent_channels, m.future_latent_frames, lh, lw, dtype=dtype),
        "sigma": torch.full((b,), 0.5, dtype=dtype),
    }


def training_forward(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training forward pass on already-encoded latents (S, R, A, F tokens; the loss's network part)."""
    ctx = model.encode_context(state=x["state"], reference_latents=x["reference_latents"], text=x["text"],
                               text_mask=x["text_mask"], embodiment_id=x["embodiment_id"], use_cache=False)
    a, v = model(ctx, noisy_actions=x["noisy_actions"], action_sigma=x["sigma"], noisy_future=x["noisy_future"],
                 future_sigma=x["sigma"])
    return a.float().square().mean() + v.float().square().mean()


def measure_activations(config: Config, *, batch_size: int = 1, dtype: torch.dtype = torch.bfloat16,
                        checkpointing: bool = False) -> dict[str, int]:
    """Saved-for-backward bytes: ``per_layer`` (one transformer layer) and ``outside`` (embeddings, heads)."""
    out = {}
    for n in (1, 2):
        model = _random_model(config, n, dtype)
        model.gradient_checkpointing = checkpointing
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        x = training_step_inputs(config, batch_size, dtype)
        out[n] = saved_activation_bytes(lambda m=model, x=x: training_forward(m, x), params)
        del model
    return {"per_layer": out[2] - out[1], "outside": 2 * out[1] - out[2]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["wan2.2-5b", "wan2.2-5b-mot"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-measure", action="store_true", help="parameter counts only")
    args = ap.parse_args(argv)
    for name in args.presets:
        cfg = get_preset(name)
        counts = parameter_breakdown(cfg)
        total = sum(counts.values())
        print(f"{name}: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()) + f", total {total / 1e9:.3f} B")
        if args.no_measure:
            continue
        m = cfg.model
        n_tok = m.num_state_tokens + m.num_reference_tokens + m.action_horizon + m.num_future_tokens
        for ckpt in (False, True):
            r = measure_activations(cfg, batch_size=args.batch, checkpointing=ckpt)
            full = r["outside"] + m.num_layers * r["per_layer"]
            print(f"  checkpointing={ckpt}: {n_tok} tokens, batch {args.batch}: per layer {r['per_layer'] / 2**20:.1f} MiB "
                  f"({r['per_layer'] / n_tok / args.batch / 1024:.1f} KiB/token), outside layers "
                  f"{r['outside'] / 2**20:.1f} MiB, {m.num_layers} layers {full / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
