"""Wan 2.2 weights: the TI2V-5B transformer into our model, the Wan 2.2 VAE as a video tokenizer.

Legend: b batch, n pixel frames, c/f/h/w latent channels, frames, height, width, D visual width, Da
action-expert width, Fd/Fa dense/expert FFN width.

- :func:`load_wan_transformer` reads a diffusers ``WanTransformer3DModel`` directory (``config.json`` plus
  ``diffusion_pytorch_model.safetensors`` or shards listed in ``diffusion_pytorch_model.safetensors.index.json``)
  lazily, one tensor at a time with ``safetensors.safe_open``, into an already-built
  :class:`~gigaworld_policy.model.WorldActionModel` (copying into allocated parameters, or assigning onto a
  model built on the ``meta`` device: the 5B model never exists twice in memory). Config fields and tensor
  shapes are checked; errors name the field, tensor and file. Returns a printable :class:`LoadReport`.
- :func:`build_wan_model` does the meta-device build + load in one call.
- :func:`init_action_expert_from_visual`: the GWP-0.5 Mixture-of-Transformers expert from the dense weights.
- :class:`WanVAETokenizer`: diffusers ``AutoencoderKLWan`` behind the ``VideoTokenizer`` interface, latents
  normalized with the VAE config's ``latents_mean``/``latents_std`` (as Wan's pipelines do);
  :func:`wan_vae_tokenizer` loads it for a config, or builds the Wan 2.2 architecture with random weights
  for benchmarks and smoke runs of the 5B presets (no checkpoint on the machine).
- The offline latent cache that spares training the VAE encoder lives in ``data/latent_cache.py``.

Equivalence with diffusers (same checkpoint, same inputs, per-token timesteps) is tested in
tests/model/test_wan.py through :meth:`WorldActionTransformer.forward_video`.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from safetensors import safe_open
from torch import nn

from gigaworld_policy.checkpoint import CheckpointError
from gigaworld_policy.config import Config, ModelConfig
from gigaworld_policy.model.tokenizers import VideoTokenizer

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# Our modules with no Wan counterpart (transformer.py): never read from a Wan checkpoint.
NEW_MODULE_PREFIXES = ("state_encoder.", "action_encoder.", "action_decoder.", "action_out_modulation.",
                       "action_blocks.", "action_time_proj.", "aux_head.")


class WanLoadError(CheckpointError):
    """A Wan checkpoint does not fit the model; the message names the file, config field or tensor."""


# ------------------------------------------------------------------------------------------------
# Config correspondence
# ------------------------------------------------------------------------------------------------


def wan_transformer_config(cfg: ModelConfig) -> dict[str, Any]:
    """diffusers ``WanTransformer3DModel`` config matching our visual backbone (for tests and export)."""
    return dict(patch_size=list(cfg.patch_size), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
                in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, text_dim=cfg.text_dim,
                freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
                cross_attn_norm=cfg.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=cfg.eps,
                image_dim=None, added_kv_proj_dim=None)


def _diffusers_defaults() -> dict[str, Any]:
    from diffusers import WanTransformer3DModel

    sig = inspect.signature(WanTransformer3DModel.__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def check_wan_config(wan: dict[str, Any], cfg: ModelConfig, where: str = "config.json") -> None:
    """Refuse a Wan transformer config that does not match ``cfg``; the error names both fields."""
    cls = wan.get("_class_name", "WanTransformer3DModel")
    if cls != "WanTransformer3DModel":
        raise WanLoadError(f"{where}: _class_name={cls!r}, expected 'WanTransformer3DModel'")
    full = {**_diffusers_defaults(), **wan}
    if full.get("out_channels") is None:
        full["out_channels"] = full["in_channels"]
    ours = {  # diffusers field -> (our field, our value)
        "num_layers": ("num_layers", cfg.num_layers),
        "num_attention_heads": ("num_heads", cfg.num_heads),
        "attention_head_dim": ("head_dim", cfg.head_dim),
        "ffn_dim": ("ffn_dim", cfg.ffn_dim),
        "in_channels": ("latent_channels", cfg.latent_channels),
        "out_channels": ("latent_channels", cfg.latent_channels),
        "patch_size": ("patch_size", list(cfg.patch_size)),
        "text_dim": ("text_dim", cfg.text_dim),
        "freq_dim": ("freq_dim", cfg.freq_dim),
        "cross_attn_norm": ("cross_attn_norm", cfg.cross_attn_norm),
        "eps": ("eps", cfg.eps),
        # our blocks implement exactly this variant: RMS qk-norm over all heads, no image branch
        "qk_norm": ("(fixed)", "rms_norm_across_heads"),
        "image_dim": ("(fixed)", None),
        "added_kv_proj_dim": ("(fixed)", None),
    }
    for wan_field, (our_field, value) in ours.items():
        got = full.get(wan_field)
        got = list(got) if isinstance(got, list | tuple) else got
        same = math.isclose(got, value, rel_tol=1e-9) if wan_field == "eps" and got is not None else got == value
        if not same:
            raise WanLoadError(f"{where}: {wan_field}={got!r} does not match model.{our_field}={value!r}")


# ------------------------------------------------------------------------------------------------
# Checkpoint files
# ------------------------------------------------------------------------------------------------


def wan_weight_files(path: str | Path) -> dict[Path, list[str] | None]:
    """Weight files of a diffusers checkpoint dir -> the tensor names each holds (None: all of them)."""
    path = Path(path)
    index = path / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise WanLoadError(f"{index}: unreadable shard index ({e})") from e
        shards: dict[Path, list[str]] = defaultdict(list)
        for name, shard in weight_map.items():
            shards[path / shard].append(name)
        for shard in shards:
            if not shard.is_file():
                raise WanLoadError(f"{shard}: listed in {index.name} but missing")
        return dict(shards)
    single = path / WEIGHTS_NAME
    if single.is_file():
        return {single: None}
    raise WanLoadError(f"{path}: neither {WEIGHTS_INDEX_NAME} nor {WEIGHTS_NAME} found")


def read_wan_config(path: str | Path) -> dict[str, Any]:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise WanLoadError(f"{f}: missing (expected a diffusers WanTransformer3DModel directory)")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise WanLoadError(f"{f}: not valid JSON ({e})") from e


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a Wan load did to every tensor of the model: loaded, newly initialized (and how), ignored."""

    source: str
    loaded: list[str] = field(default_factory=list)
    initialized: dict[str, str] = field(default_factory=dict)  # name -> how
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for
    numel: dict[str, int] = field(default_factory=dict)

    def count(self, names: Iterable[str]) -> int:
        return sum(self.numel.get(n, 0) for n in names)

    def __str__(self) -> str:
        lines = [f"Wan checkpoint {self.source}",
                 f"  loaded:      {len(self.loaded)} tensors, {self.count(self.loaded) / 1e6:.2f} M parameters"]
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for name, how in self.initialized.items():
            groups[(name.split(".")[0], how)].append(name)
        lines.append(f"  initialized: {len(self.initialized)} tensors, "
                     f"{self.count(self.initialized) / 1e6:.2f} M parameters")
        for (prefix, how), names in sorted(groups.items()):
            lines.append(f"    {prefix}.*: {len(names)} tensors, {self.count(names) / 1e6:.2f} M ({how})")
        lines.append(f"  ignored:     {len(self.ignored)} tensors" + (f": {self.ignored[:8]}" if self.ignored else ""))
        return "\n".join(lines)


def _is_new(name: str) -> bool:
    return name.startswith(NEW_MODULE_PREFIXES)


def _tensor_slot(model: nn.Module, name: str) -> tuple[nn.Module, str, torch.Tensor, bool]:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if attr in module._parameters:
        return module, attr, module._parameters[attr], True
    return module, attr, module._buffers[attr], False


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor, dtype: torch.dtype | None,
                device: torch.device | str | None) -> None:
    """Copy into the allocated tensor, or (meta / dtype change) assign a new one: never two copies."""
    module, attr, cur, is_param = _tensor_slot(model, name)
    if cur.is_meta or (dtype is not None and cur.dtype != dtype):
        new = value.to(device=device or "cpu", dtype=dtype or cur.dtype)
        if is_param:
            module._parameters[attr] = nn.Parameter(new, requires_grad=cur.requires_grad)
        else:
            module._buffers[attr] = new
    else:
        with torch.no_grad():
            cur.copy_(value)


def load_wan_transformer(model: nn.Module, path: str | Path, *, strict_backbone: bool = True,
                         dtype: torch.dtype | None = None, device: torch.device | str | None = None
                         ) -> LoadReport:
    """Load a diffusers Wan 2.2 transformer checkpoint into ``model`` (a WorldActionModel); see module doc.

    Every tensor of our Wan-named backbone (all but ``NEW_MODULE_PREFIXES``) is read by name and shape
    checked. ``strict_backbone``: a backbone tensor missing from the checkpoint, or a checkpoint tensor
    the model has no place for, is an error; otherwise missing ones keep their initialization and extra
    ones are reported as ignored. New modules are initialized: robot modules keep their construction
    init (materialized and re-initialized if built on ``meta``); the MoT action expert is initialized
    from the dense weights (:func:`init_action_expert_from_visual`). ``dtype``/``device`` apply when
    tensors are assigned (meta-built models); otherwise values are copied into the existing tensors.
    """
    path = Path(path)
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    check_wan_config(read_wan_config(path), cfg, where=str(path / "config.json"))
    own = {n: t for n, t in model.state_dict(keep_vars=True).items()}
    backbone = {n for n in own if not _is_new(n)}
    report = LoadReport(source=str(path), numel={n: t.numel() for n, t in own.items()})
    seen: set[str] = set()
    for file, names in wan_weight_files(path).items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in names if names is not None else list(f.keys()):
                    if name not in backbone:
                        report.ignored.append(name)
                        continue
                    shape = list(f.get_slice(name).get_shape())
                    expected = list(own[name].shape)
                    if shape != expected:
                        raise WanLoadError(f"{file}: tensor {name!r} has shape {shape}, the model expects {expected}")
                    _set_tensor(model, name, f.get_tensor(name), dtype, device)
                    seen.add(name)
                    report.loaded.append(name)
        except WanLoadError:
            raise
        except Exception as e:  # safetensors raises several types for bad headers / missing names
            raise WanLoadError(f"{file}: cannot be read as safetensors ({e})") from e
    missing = sorted(backbone - seen)
    if strict_backbone and (missing or report.ignored):
        raise WanLoadError(f"{path}: missing backbone tensors {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                           f"unexpected tensors {report.ignored[:5]}{'...' if len(report.ignored) > 5 else ''} "
                           "(strict_backbone=True)")
    for name in missing:
        report.initialized[name] = "not in checkpoint: kept model init"
    if getattr(model, "is_mot", False):
        report.initialized.update(init_action_expert_from_visual(model, dtype=dtype, device=device))
    report.initialized.update(_materialize_rest(model, device, dtype))
    for name in own:
        if _is_new(name) and name not in report.initialized:
            report.initialized[name] = "construction init (random; output heads zero)"
    return report


def _materialize_rest(model: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None
                      ) -> dict[str, str]:
    """Allocate and initialize tensors still on ``meta`` (new robot modules of a meta-built model)."""
    done: dict[str, str] = {}
    for mname, module in model.named_modules():
        local = [n for n, t in list(module._parameters.items()) + list(module._buffers.items())
                 if t is not None and t.is_meta]
        if not local:
            continue
        module.to_empty(device=device or "cpu", recurse=False)
        if dtype is not None:
            for n in local:
                if n in module._parameters:
                    module._parameters[n] = nn.Parameter(module._parameters[n].to(dtype))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        for n in local:
            full = f"{mname}.{n}" if mname else n
            t = getattr(module, n)
            if n == "scale_shift_table":
                with torch.no_grad():
                    t.copy_(torch.randn(t.shape) / t.shape[-1] ** 0.5)
            elif not hasattr(module, "reset_parameters"):
                raise WanLoadError(f"tensor {full!r}: built on meta, not in the checkpoint, and no initializer")
            done[full] = "construction init (random; output heads zero)"
    if done and hasattr(model, "_init_new_modules"):
        model._init_new_modules()  # zero output heads again after reset_parameters
    return done


def build_wan_model(config: Config, transformer_path: str | Path, *, video_tokenizer: VideoTokenizer | None = None,
                    dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                    strict_backbone: bool = True) -> tuple[nn.Module, LoadReport]:
    """Build a WorldActionModel on ``meta`` and fill it from a Wan checkpoint: peak memory one model copy."""
    from gigaworld_policy.model.world_action_model import WorldActionModel

    with torch.device("meta"):
        model = WorldActionModel(config, video_tokenizer=video_tokenizer)
    report = load_wan_transformer(model, transformer_path, strict_backbone=strict_backbone, dtype=dtype,
                                  device=device)
    model.init_non_persistent_buffers(device)
    return model, report


# ------------------------------------------------------------------------------------------------
# Mixture-of-Transformers expert from the dense weights
# ------------------------------------------------------------------------------------------------


def _strided(n_from: int, n_to: int) -> torch.Tensor:
    """n_to evenly spread indices out of n_from (3072 -> 1024: every third channel)."""
    return torch.arange(n_to) * n_from // n_to


@torch.no_grad()
def _shrink(dense: torch.Tensor, shape: Sequence[int], is_weight: bool) -> torch.Tensor:
    """Slice ``dense`` to ``shape`` dimension by dimension (strided channel subset where a size shrinks).

    The input side of a linear weight (dim 1) is rescaled by sqrt(fan_in_dense / fan_in_expert): summing
    over fewer channels of unit-variance (LayerNorm-ed) inputs would otherwise shrink pre-activations.
    """
    out = dense.float()
    for d, (n_from, n_to) in enumerate(zip(dense.shape, shape)):
        if n_to != n_from:
            if n_to > n_from:
                raise WanLoadError(f"cannot initialize a {n_to}-wide expert dim from {n_from}-wide dense weights")
            out = out.index_select(d, _strided(n_from, n_to).to(out.device))
    if is_weight and out.ndim == 2 and shape[1] != dense.shape[1]:
        out = out * math.sqrt(dense.shape[1] / shape[1])
    return out


@torch.no_grad()
def init_action_expert_from_visual(model: nn.Module, *, dtype: torch.dtype | None = None,
                                   device: torch.device | str | None = None) -> dict[str, str]:
    """Initialize the GWP-0.5 action expert (``action_blocks``, ``action_time_proj``) from the dense Wan weights.

    Choice: *structured slicing*, not random init. Each expert tensor is the dense tensor restricted to an
    evenly strided subset of the residual channels (D -> Da, e.g. 3072 -> 1024, every third channel) and
    of the FFN hidden units (Fd -> Fa), with input-side weights rescaled by sqrt(fan-in ratio). The attention
    inner width (heads x head dim) is kept whole, so the expert's queries/keys/values start in the same
    per-head spaces (same qk-norm weights, same RoPE) as the visual stream's: the joint self-attention is
    meaningful from the first step, and the action tokens inherit Wan's pretrained text cross-attention
    (its text keys/values are shared width D and copied unchanged). A random expert would make the S/A
    keys noise to the pretrained visual stream. The time projection keeps, per modulation chunk, the
    same residual channels. Returns ``{tensor name: how}`` for the report.
    """
    D, Da = model.cfg.dim, model.cfg.action_stream_dim
    how: dict[str, str] = {}
    for i, (dense, expert) in enumerate(zip(model.blocks, model.action_blocks)):
        dense_params = dict(dense.named_parameters())
        for n, p in list(expert.named_parameters()):
            src = dense_params[n]
            _set_tensor(model, f"action_blocks.{i}.{n}", _shrink(src, p.shape, n.endswith("weight")).to(src.dtype),
                        dtype or src.dtype, device)
            how[f"action_blocks.{i}.{n}"] = f"sliced from blocks.{i}.{n}"
    tp = model.condition_embedder.time_proj  # [6 D, D] -> [6 Da, D]: the same channels in each of 6 chunks
    idx = _strided(D, Da).to(tp.weight.device)
    w = tp.weight.unflatten(0, (6, D)).index_select(1, idx).flatten(0, 1)
    b = tp.bias.unflatten(0, (6, D)).index_select(1, idx).flatten(0, 1)
    for n, v in (("weight", w), ("bias", b)):
        _set_tensor(model, f"action_time_proj.{n}", v, dtype or tp.weight.dtype, device)
        how[f"action_time_proj.{n}"] = f"sliced from condition_embedder.time_proj.{n}"
    return how


# ------------------------------------------------------------------------------------------------
# Wan 2.2 VAE as a video tokenizer
# ------------------------------------------------------------------------------------------------


# The Wan 2.2 VAE's architecture (Wan2.2-TI2V-5B-Diffusers vae/config.json): 705 M parameters, 12 input
# channels (RGB patchified 2x2), 48 latent channels, 16x spatial / 4x temporal compression. Its latents_mean and
# latents_std are statistics of the trained weights: they come with a checkpoint (from_pretrained).
WAN22_VAE_ARCHITECTURE: dict[str, Any] = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0, "is_residual": True,
    "in_channels": 12, "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
}


class WanVAETokenizer(VideoTokenizer):
    """diffusers ``AutoencoderKLWan`` (frozen): frames [b, n, 3, H, W] in [-1, 1] <-> normalized latents.

    ``encode`` takes n = 1 + k * temporal_compression frames (Wan's causal VAE: the first frame alone is
    latent frame 0) and returns the posterior mode normalized per channel, (mu - latents_mean) / latents_std,
    as Wan's pipelines feed the transformer; ``decode`` inverts it. Compression factors and channel count
    come from the VAE config (Wan 2.2: 48 channels, 16x spatial, 4x temporal).
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        c = vae.config
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = int(c.z_dim)
        self.temporal_compression = int(c.scale_factor_temporal)
        self.spatial_compression = int(c.scale_factor_spatial)
        for key in ("latents_mean", "latents_std"):
            if c[key] is None or len(c[key]) != self.latent_channels:
                raise WanLoadError(f"VAE config: {key} must list z_dim={self.latent_channels} values")
        self.register_buffer("latents_mean", torch.tensor(c.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(c.latents_std).view(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> WanVAETokenizer:
        from diffusers import AutoencoderKLWan

        path = Path(path)
        if not (path / "config.json").is_file():
            raise WanLoadError(f"{path / 'config.json'}: missing (expected a diffusers AutoencoderKLWan directory)")
        from gigaworld_policy.model.text import hf_offline

        with hf_offline():  # a local folder: never the network
            vae = AutoencoderKLWan.from_pretrained(str(path), torch_dtype=dtype)
        return cls(vae)

    @classmethod
    def random_weights(cls, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                       seed: int = 0, **architecture: Any) -> WanVAETokenizer:
        """The Wan 2.2 VAE architecture (``WAN22_VAE_ARCHITECTURE``, fields overridable) with random weights
        and identity latent normalization: the real tokenizer's compute and shapes, meaningless latents.
        For benchmarks and smoke runs of the 5B presets; training and deployment load a checkpoint."""
        from diffusers import AutoencoderKLWan

        arch = WAN22_VAE_ARCHITECTURE | architecture
        z = int(arch["z_dim"])
        with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):  # the caller's RNG stays as it was
            torch.manual_seed(seed)
            vae = AutoencoderKLWan(**arch, latents_mean=[0.0] * z, latents_std=[1.0] * z)
        return cls(vae if dtype == torch.float32 else vae.to(dtype))

    def check(self, cfg: ModelConfig) -> None:
        """Refuse a VAE that does not produce what ``cfg`` expects; errors name the field."""
        for ours, theirs, name in ((cfg.latent_channels, self.latent_channels, "latent_channels (VAE z_dim)"),
                                   (cfg.spatial_compression, self.spatial_compression,
                                    "spatial_compression (VAE scale_factor_spatial)"),
                                   (cfg.temporal_compression, self.temporal_compression,
                                    "temporal_compression (VAE scale_factor_temporal)")):
            if ours != theirs:
                raise WanLoadError(f"VAE: model.{name} is {ours}, the VAE gives {theirs}")

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:  # [b, n, 3, H, W] -> [b, C, f, h, w]
        _, n, _, H, W = frames.shape
        tc, s = self.temporal_compression, self.spatial_compression
        if (n - 1) % tc:
            raise ValueError(f"WanVAETokenizer.encode: {n} frames; Wan's causal VAE takes 1 + {tc} k frames")
        if H % s or W % s:
            raise ValueError(f"WanVAETokenizer.encode: frame size {H}x{W} is not divisible by {s}")
        x = rearrange(frames, "b n c h w -> b c n h w").to(self._dtype)
        mu = self.vae.encode(x).latent_dist.mode().float()
        return (mu - self.latents_mean) / self.latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # [b, C, f, h, w] -> [b, n, 3, H, W]
        z = (latents.float() * self.latents_std + self.latents_mean).to(self._dtype)
        x = self.vae.decode(z).sample.float()
        return rearrange(x, "b c n h w -> b n c h w").clamp(-1.0, 1.0)


def wan_vae_tokenizer(cfg: ModelConfig, path: str | Path | None, *, device: torch.device | str = "cpu",
                      dtype: torch.dtype | None = None) -> WanVAETokenizer:
    """The Wan 2.2 VAE for ``cfg``, checked against it: from the diffusers ``AutoencoderKLWan`` folder at
    ``path``, or, with ``path=None``, the architecture with random weights (benchmarks, smoke runs).
    ``dtype`` defaults to bf16 on CUDA, fp32 elsewhere."""
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if cfg.video_tokenizer != "wan2.2-vae":
        raise WanLoadError(f"model.video_tokenizer is {cfg.video_tokenizer!r}, not 'wan2.2-vae': no VAE to load")
    if path is None:
        tok = WanVAETokenizer.random_weights(dtype=dtype, device=device)
    else:
        tok = WanVAETokenizer.from_pretrained(path, dtype=dtype).to(device)
    tok.check(cfg)
    return tok


def video_tokenizer_for(cfg: ModelConfig, vae: str | Path | None, *, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, allow_random: bool = False) -> VideoTokenizer | None:
    """The tokenizer weights a config needs beyond our checkpoints: None for the pixel tokenizer (built in);
    for ``wan2.2-vae`` the VAE folder ``vae``, or, with ``allow_random`` (benchmarks, smoke runs), the
    architecture with random weights. Where the weights are required and missing the error names ``--vae``."""
    if cfg.video_tokenizer != "wan2.2-vae":
        return None
    if vae is None and not allow_random:
        raise WanLoadError("model.video_tokenizer='wan2.2-vae' needs the VAE weights: pass vae=DIR (--vae), a "
                           "diffusers AutoencoderKLWan folder such as Wan2.2-TI2V-5B-Diffusers/vae")
    return wan_vae_tokenizer(cfg, vae, device=device, dtype=dtype)
