"""The batch and observation layout of the model: the one place that defines keys, shapes and dtypes.

Legend: b batch, t action steps (action_horizon), a padded action dims, s padded state dims,
f future pixel frames, c image channels (3), h/w composed frame height/width, l text tokens,
e text width (text_dim); C latent channels, n_lat = 1 + future latent frames (1 for no_video),
h_lat/w_lat latent height/width (``ModelConfig.latent_hw``).

Observation (``predict_actions`` / ``generate``) — everything already normalized by the data
pipeline or the Policy (robot units never reach the model):

  state          float32 [b, s]        normalized, padded with zeros past the robot's state dims
  image          float32 [b, c, h, w]  current composed multi-view frame, values in [-1, 1]
  text           float32 [b, l, e]     per-token prompt embeddings from the text encoder
  text_mask      bool    [b, l]        True for real prompt tokens (at least one per row)
  embodiment_id  int64   [b]           row of the per-embodiment state/action encoders/decoders

Training batch (``compute_loss``) = observation plus:

  actions          float32 [b, t, a]        normalized ground-truth chunk (delta dims already relative)
  action_is_pad    bool    [b, t]           True for steps past the episode end (excluded from the loss)
  action_dim_mask  bool    [b, a]           True for the robot's real action dims (padding excluded)
  future_frames    float32 [b, f, c, h, w]  future frames in [-1, 1] (absent for attention_mode=no_video)
  future_is_pad    bool    [b, f]           True for frames past the episode end (excluded from the loss)
  aux_target       float32 [b, x]           required when model.aux_dim = x > 0: the normalized scene
                                            state (``observation.environment_state``) the auxiliary head
                                            predicts; never part of an observation
  latents          float32 [b, C, n_lat, h_lat, w_lat]  optional: the tokenizer's latents of image + future
                                            frames (reference latent frame first, as ``encode_video``
                                            returns them; only the reference for no_video), e.g. from the
                                            offline cache (data/latent_cache.py). When present the loss uses
                                            them and ``image``/``future_frames`` are not required (checked
                                            if present, never encoded).

``action_is_pad``, ``action_dim_mask`` and ``future_is_pad`` are optional (default: nothing padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gigaworld_policy.config import ModelConfig

Batch = dict[str, torch.Tensor]


class BatchError(ValueError):
    """A batch/observation does not match the documented layout; the message names the key."""


@dataclass(frozen=True)
class KeySpec:
    shape: tuple[str | int, ...]  # symbolic dims resolved against the config ("b" is free)
    dtype: torch.dtype
    finite: bool = False
    value_range: tuple[float, float] | None = None


def _dims(cfg: ModelConfig) -> dict[str, int]:
    return {
        "t": cfg.action_horizon, "a": cfg.action_dim, "s": cfg.state_dim, "f": cfg.num_future_frames,
        "c": 3, "h": cfg.image_height, "w": cfg.image_width, "e": cfg.text_dim,
        "C": cfg.latent_channels, "n_lat": 1 + cfg.future_latent_frames, "h_lat": cfg.latent_hw[0],
        "w_lat": cfg.latent_hw[1], "x": cfg.aux_dim,
    }


OBSERVATION_SPEC: dict[str, KeySpec] = {
    "state": KeySpec(("b", "s"), torch.float32, finite=True),
    "image": KeySpec(("b", "c", "h", "w"), torch.float32, finite=True, value_range=(-1.0, 1.0)),
    "text": KeySpec(("b", "l", "e"), torch.float32, finite=True),
    "text_mask": KeySpec(("b", "l"), torch.bool),
    "embodiment_id": KeySpec(("b",), torch.int64),
}
TRAIN_SPEC: dict[str, KeySpec] = {
    "actions": KeySpec(("b", "t", "a"), torch.float32, finite=True),
    "future_frames": KeySpec(("b", "f", "c", "h", "w"), torch.float32, finite=True, value_range=(-1.0, 1.0)),
    "latents": KeySpec(("b", "C", "n_lat", "h_lat", "w_lat"), torch.float32, finite=True),
    "aux_target": KeySpec(("b", "x"), torch.float32, finite=True),
}
OPTIONAL_SPEC: dict[str, KeySpec] = {
    "action_is_pad": KeySpec(("b", "t"), torch.bool),
    "action_dim_mask": KeySpec(("b", "a"), torch.bool),
    "future_is_pad": KeySpec(("b", "f"), torch.bool),
}


def _check_key(name: str, x: object, spec: KeySpec, dims: dict[str, int]) -> None:
    if not isinstance(x, torch.Tensor):
        raise BatchError(f"{name!r}: expected a torch.Tensor, got {type(x).__name__}")
    expected = tuple(dims.get(d, d) if isinstance(d, str) else d for d in spec.shape)
    readable = "[" + ", ".join(f"{d}={dims[d]}" if isinstance(d, str) and d in dims else str(d)
                               for d in spec.shape) + "]"
    if x.ndim != len(expected) or any(isinstance(e, int) and e != n for e, n in zip(expected, x.shape)):
        raise BatchError(f"{name!r}: expected shape {readable}, got {list(x.shape)}")
    if x.dtype != spec.dtype:
        raise BatchError(f"{name!r}: expected dtype {spec.dtype}, got {x.dtype}")
    for d, n in zip(spec.shape, x.shape):
        if isinstance(d, str) and d in dims and dims[d] != n:
            raise BatchError(f"{name!r}: dimension {d!r} is {n}, expected {dims[d]}")
    if spec.finite and not bool(torch.isfinite(x).all()):
        raise BatchError(f"{name!r}: contains NaN or inf")
    if spec.value_range is not None and x.numel():
        lo, hi = spec.value_range
        if float(x.min()) < lo - 1e-3 or float(x.max()) > hi + 1e-3:
            raise BatchError(f"{name!r}: values must lie in [{lo}, {hi}], got [{float(x.min()):.3g}, "
                             f"{float(x.max()):.3g}]")


def validate(batch: Batch, cfg: ModelConfig, *, training: bool) -> int:
    """Check ``batch`` against the layout for ``cfg``; return the batch size. Raises BatchError."""
    if not isinstance(batch, dict):
        raise BatchError(f"expected a dict of tensors, got {type(batch).__name__}")
    dims = _dims(cfg)
    specs = dict(OBSERVATION_SPEC)
    video = cfg.attention_mode != "no_video"
    if training:
        specs["actions"] = TRAIN_SPEC["actions"]
        if cfg.aux_dim:
            specs["aux_target"] = TRAIN_SPEC["aux_target"]
        if "latents" in batch:  # cached latents stand in for the pixels; pixels given anyway are still checked
            specs["latents"] = TRAIN_SPEC["latents"]
            if "image" not in batch:
                del specs["image"]
            if video and "future_frames" in batch:
                specs["future_frames"] = TRAIN_SPEC["future_frames"]
        elif video:
            specs["future_frames"] = TRAIN_SPEC["future_frames"]
    for name, spec in specs.items():
        if name not in batch:
            alt = "; or cached 'latents' instead" if training and name in ("image", "future_frames") else ""
            raise BatchError(f"missing key {name!r} (expected shape {list(spec.shape)}, dtype {spec.dtype}{alt}); "
                             f"keys present: {sorted(batch)}")
    b = int(batch["state"].shape[0]) if isinstance(batch["state"], torch.Tensor) and batch["state"].ndim else -1
    dims["b"] = b
    dims["l"] = int(batch["text"].shape[1]) if isinstance(batch["text"], torch.Tensor) and batch["text"].ndim == 3 else -1
    for name, spec in specs.items():
        _check_key(name, batch[name], spec, dims)
    for name, spec in OPTIONAL_SPEC.items():
        if training and name in batch:
            _check_key(name, batch[name], spec, dims)
    emb = batch["embodiment_id"]
    if bool((emb < 0).any()) or bool((emb >= cfg.num_embodiments).any()):
        raise BatchError(f"'embodiment_id': unknown embodiment id(s) {sorted(set(emb.tolist()))}; this model "
                         f"has num_embodiments={cfg.num_embodiments} (ids 0..{cfg.num_embodiments - 1})")
    if not bool(batch["text_mask"].any(dim=1).all()):
        raise BatchError("'text_mask': every row needs at least one True (real) prompt token")
    return b


def example_batch(cfg: ModelConfig, batch_size: int = 2, *, training: bool = True,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  latents: bool = False) -> Batch:
    """Random but valid tensors in the documented layout (for tests, benchmarks, and learning the API).

    ``latents`` (training only): cached-latent batches, as the latent cache gives them: ``latents`` in place
    of ``image`` and ``future_frames``."""
    if latents and not training:
        raise ValueError("example_batch: latents=True is a training batch (observations carry pixels)")
    g = generator
    b, d = batch_size, _dims(cfg)
    n_text = min(cfg.max_text_tokens, 8)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    def img(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) * 2 - 1

    text_mask = torch.ones(b, n_text, dtype=torch.bool)
    text_mask[:, n_text // 2 + 1:] = torch.rand(b, n_text - n_text // 2 - 1, generator=g) < 0.5
    out: Batch = {
        "state": randn(b, d["s"]).clamp(-1, 1),
        "image": img(b, 3, d["h"], d["w"]),
        "text": randn(b, n_text, d["e"]),
        "text_mask": text_mask,
        "embodiment_id": torch.randint(0, cfg.num_embodiments, (b,), generator=g),
    }
    if training:
        out["actions"] = randn(b, d["t"], d["a"]).clamp(-1, 1)
        out["action_is_pad"] = torch.zeros(b, d["t"], dtype=torch.bool)
        out["action_is_pad"][0, -max(1, d["t"] // 4):] = True  # one sample ends inside the chunk
        out["action_dim_mask"] = torch.ones(b, d["a"], dtype=torch.bool)
        out["action_dim_mask"][:, max(1, d["a"] - 2):] = False  # last dims are padding
        if cfg.aux_dim:
            out["aux_target"] = randn(b, d["x"])
        if cfg.attention_mode != "no_video":
            out["future_frames"] = img(b, d["f"], 3, d["h"], d["w"])
            out["future_is_pad"] = torch.zeros(b, d["f"], dtype=torch.bool)
        if latents:
            del out["image"]
            out.pop("future_frames", None)
            out["latents"] = randn(b, cfg.latent_channels, 1 + cfg.future_latent_frames, *cfg.latent_hw)
    return {k: v.to(device) for k, v in out.items()}
