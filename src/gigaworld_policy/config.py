"""Configuration: frozen, validated dataclasses and a registry of named presets.

Every knob lives here; nothing is read from environment variables. The CLI overrides fields with
``--set section.field=value`` (see :func:`apply_overrides`). Errors name the offending field.

Sections:
  ModelConfig  network shape, token layout, attention mode, tokenizers (model/)
  FlowConfig   flow-matching noise process, loss weights, sampler (model/flow.py)
  DataConfig   views, geometry, windows, normalization (data/)
  TrainConfig  optimizer, schedule, EMA, checkpoints, distributed (train/)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

AttentionMode = Literal["action_centered", "joint", "no_video"]
ATTENTION_MODES: tuple[str, ...] = typing.get_args(AttentionMode)
VIDEO_TOKENIZERS = ("pixel", "wan2.2-vae")
AUX_HEADS = ("tokens", "image_encoder")  # model.aux_head
TEXT_ENCODERS = ("minilm", "umt5", "none")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {msg}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the world-action transformer (Wan 2.2 DiT block structure, DESIGN.md section 1).

    Token layout per sample: [S (1 state token), R (reference-frame latent tokens), A (action_horizon
    tokens), F (future latent tokens)]. ``attention_mode`` selects the mask (model/layout.py).
    """

    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    ffn_dim: int = 128
    freq_dim: int = 256  # sinusoidal timestep features (Wan: 256)
    eps: float = 1e-6
    cross_attn_norm: bool = True  # Wan 2.2: affine LayerNorm before text cross-attention
    rope_theta: float = 10000.0
    # text conditioning: per-token embeddings of this width enter by cross-attention
    text_dim: int = 384
    max_text_tokens: int = 16
    # video: pixels -> tokenizer latents [C, f, h, w] -> patches (pt, ph, pw) -> tokens
    video_tokenizer: str = "pixel"
    latent_channels: int = 3
    patch_size: tuple[int, int, int] = (1, 8, 8)
    # Channels of a convolutional patch stem (Xiao et al. 2021, "Early convolutions help transformers see
    # better"): one 3x3 stride-2 conv + GELU per entry, as many as halve the latent down to the patch grid
    # (log2 of the spatial patch size), then a 1x1 conv to the model width. Empty: Wan's linear patch
    # embedding (the only choice for Wan-initialized models). For the pixel tokenizer only.
    patch_stem_channels: tuple[int, ...] = ()
    # Spatial-softmax keypoints of the reference frame (Levine et al. 2016, "End-to-end training of deep
    # visuomotor policies"; the image head of robomimic / Diffusion Policy): a small full-resolution conv net
    # gives ``keypoints`` feature maps, a softmax over each map's positions gives its expected (x, y), and
    # a linear layer (zero at init) adds the 2 * keypoints coordinates to the state token. Explicit image
    # coordinates for small cues such as Meta-World's one-pixel reach goal. 0: off. Pixel tokenizer only.
    keypoints: int = 0
    keypoint_hidden: int = 32  # channels of the keypoint net's two 3x3 convs
    # Auxiliary scene-state head: the width of a training target read from the dataset's
    # ``observation.environment_state`` (LeRobot's key for the scene's state; Meta-World collection records
    # the object's position there), normalized by its dataset stats and predicted from the reference-frame
    # tokens' last hidden states (softmax pooling over the tokens of their values and patch-grid places;
    # transformer.py AuxHead). A training signal that makes the image tokens carry where the object is;
    # inference never runs the head (unless ``aux_in_state``) and the policy never receives the target.
    # 0: off. Its loss weight: flow.aux_loss_weight.
    aux_dim: int = 0
    # What the auxiliary head reads: "tokens" (above), or "image_encoder": a linear map of the image
    # encoder's features (``image_encoder``), which then learn the object's place for the state token.
    aux_head: str = "tokens"
    # Global image encoder (pixel tokenizer only), 0: off. Three 4x4 stride-2 convolutions (32 channels) of
    # the reference frame, flattened in place order, a dense layer to this many features (GELU), and a
    # linear map (zero at init) added to the state token: a readout that knows each feature's place by
    # its index, as a CNN's flatten-then-dense head does, where the image tokens carry no absolute position
    # and a softmax over them must first learn to single out a small object (docs/results.md, "A small
    # CNN reads the puck").
    image_encoder: int = 0
    # Where the image encoder's features go: False adds them to the state token (above); True gives them a
    # token of their own in S, beside the state token and at its position (a default-initialized linear
    # map), so the state token keeps the proprio and goal as they are while A and F attend to both.
    image_encoder_token: bool = False
    # The auxiliary head's estimate of the scene state (``aux_dim`` values, normalized units, gradient
    # stopped) appended to the state before the state encoder, in training and at inference: the actions
    # condition on where the head puts the object, as the privileged rows' do on where the simulator puts
    # it (docs/results.md). Needs aux_head="image_encoder": the estimate exists before the transformer runs.
    aux_in_state: bool = False
    image_height: int = 32  # height of the composed (multi-view) frame fed to the tokenizer
    image_width: int = 32
    num_future_frames: int = 2  # pixel frames predicted after the current one (paper: 4)
    # robot
    action_horizon: int = 8  # T, action tokens per chunk (paper: 48)
    action_dim: int = 8  # padded action width (paper: 32)
    state_dim: int = 8  # padded state width (paper: 32)
    num_embodiments: int = 2
    embodiment_hidden_dim: int = 0  # hidden width of per-embodiment MLPs; 0 = the action stream width
    # GigaWorld-Policy-0.5 Mixture-of-Transformers: a narrower action expert for S and A tokens.
    action_expert_dim: int | None = None
    action_expert_ffn_dim: int | None = None
    attention_mode: str = "action_centered"
    # False: the state token always sees a zero state (training and inference), so the policy acts from
    # images and text alone: a remedy when the state lets behaviour cloning skip the image (on Meta-World
    # reach it did not help, docs/results.md).
    use_state: bool = True
    # False: the reference-frame (image) tokens do not attend to the state token (model/layout.py), so they
    # carry only what the image and prompt hold; actions and future video still see the state. With
    # ``aux_dim`` this keeps the auxiliary head from reading the object's place off the hand's position in
    # the state once the hand is at the object.
    reference_sees_state: bool = True

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_heads", "head_dim", "ffn_dim", "freq_dim", "text_dim",
                     "max_text_tokens", "latent_channels", "image_height", "image_width",
                     "action_horizon", "action_dim", "state_dim", "num_embodiments"):
            _check(int(getattr(self, name)) > 0, f"model.{name}", f"must be > 0, got {getattr(self, name)}")
        _check(self.num_future_frames >= 0, "model.num_future_frames", "must be >= 0")
        _check(self.attention_mode in ATTENTION_MODES, "model.attention_mode",
               f"must be one of {ATTENTION_MODES}, got {self.attention_mode!r}")
        _check(self.video_tokenizer in VIDEO_TOKENIZERS, "model.video_tokenizer",
               f"must be one of {VIDEO_TOKENIZERS}, got {self.video_tokenizer!r}")
        _check(self.head_dim % 2 == 0, "model.head_dim", "must be even (rotary embeddings)")
        _check(len(self.patch_size) == 3 and all(p > 0 for p in self.patch_size), "model.patch_size",
               f"must be three positive ints (t, h, w), got {self.patch_size}")
        if self.patch_stem_channels:
            ph, pw = self.patch_size[1:]
            _check(self.video_tokenizer == "pixel", "model.patch_stem_channels",
                   f"a convolutional stem is for the pixel tokenizer, not {self.video_tokenizer!r} (Wan's "
                   "weights expect its linear patch embedding)")
            _check(ph == pw and ph > 1 and ph & (ph - 1) == 0 and 2 ** len(self.patch_stem_channels) == ph,
                   "model.patch_stem_channels", f"needs square power-of-two patches with one entry per "
                   f"halving: patch {self.patch_size[1:]} and {len(self.patch_stem_channels)} entries")
            _check(all(int(c) > 0 for c in self.patch_stem_channels), "model.patch_stem_channels", "must be > 0")
        _check(self.aux_dim >= 0, "model.aux_dim", f"must be >= 0, got {self.aux_dim}")
        _check(self.aux_head in AUX_HEADS, "model.aux_head", f"must be one of {AUX_HEADS}, got {self.aux_head!r}")
        _check(self.image_encoder >= 0, "model.image_encoder", f"must be >= 0, got {self.image_encoder}")
        if self.aux_head == "image_encoder":
            _check(self.image_encoder > 0, "model.aux_head",
                   "'image_encoder' reads the image encoder's features: set model.image_encoder > 0")
        if self.aux_in_state:
            _check(self.aux_dim > 0 and self.aux_head == "image_encoder", "model.aux_in_state",
                   "appends the auxiliary head's estimate to the state: set model.aux_dim > 0 and "
                   "model.aux_head='image_encoder'")
        if self.image_encoder_token:
            _check(self.image_encoder > 0, "model.image_encoder_token",
                   "gives the image encoder's features a token: set model.image_encoder > 0")
        if self.image_encoder:
            _check(self.video_tokenizer == "pixel", "model.image_encoder",
                   f"the image encoder is for the pixel tokenizer, not {self.video_tokenizer!r}")
            _check(self.latent_hw[0] % 8 == 0 and self.latent_hw[1] % 8 == 0, "model.image_encoder",
                   f"needs a frame side divisible by 8 (three stride-2 convolutions), got {self.latent_hw}")
        _check(self.keypoints >= 0 and self.keypoint_hidden > 0, "model.keypoints",
               f"keypoints must be >= 0 and keypoint_hidden > 0, got {self.keypoints} and {self.keypoint_hidden}")
        if self.keypoints:
            _check(self.video_tokenizer == "pixel", "model.keypoints",
                   f"spatial-softmax keypoints are for the pixel tokenizer, not {self.video_tokenizer!r}")
        lh, lw = self.latent_hw
        _check(lh % self.patch_size[1] == 0 and lw % self.patch_size[2] == 0, "model.patch_size",
               f"latent size {lh}x{lw} is not divisible by patch {self.patch_size[1:]}")
        if self.attention_mode != "no_video":
            _check(self.num_future_frames > 0, "model.num_future_frames",
                   f"must be > 0 for attention_mode={self.attention_mode!r}")
        _check((self.action_expert_dim is None) == (self.action_expert_ffn_dim is None),
               "model.action_expert_dim", "set both action_expert_dim and action_expert_ffn_dim, or neither")
        if self.action_expert_dim is not None:
            _check(self.action_expert_dim > 0, "model.action_expert_dim", "must be > 0")

    # -- derived geometry ------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def action_stream_dim(self) -> int:
        return self.action_expert_dim if self.action_expert_dim is not None else self.dim

    @property
    def spatial_compression(self) -> int:
        return 16 if self.video_tokenizer == "wan2.2-vae" else 1

    @property
    def temporal_compression(self) -> int:
        return 4 if self.video_tokenizer == "wan2.2-vae" else 1

    @property
    def latent_hw(self) -> tuple[int, int]:
        s = self.spatial_compression
        if self.image_height % s or self.image_width % s:
            raise ConfigError(f"model.image_height/image_width: {self.image_height}x{self.image_width} "
                              f"must be divisible by the tokenizer's spatial compression {s}")
        return self.image_height // s, self.image_width // s

    @property
    def future_latent_frames(self) -> int:
        """Latent frames holding the future (the reference frame is latent frame 0)."""
        if self.attention_mode == "no_video":
            return 0
        tc = self.temporal_compression
        return -(-self.num_future_frames // tc)  # causal VAE: 1 + 4k pixel frames -> 1 + k latents

    @property
    def tokens_per_latent_frame(self) -> int:
        lh, lw = self.latent_hw
        return (lh // self.patch_size[1]) * (lw // self.patch_size[2])

    @property
    def num_state_tokens(self) -> int:
        return 2 if self.image_encoder and self.image_encoder_token else 1  # the state's, the image features'

    @property
    def num_reference_tokens(self) -> int:
        return self.tokens_per_latent_frame  # one latent frame, patch_t = 1 for the reference

    @property
    def num_future_tokens(self) -> int:
        return self.future_latent_frames * self.tokens_per_latent_frame // self.patch_size[0]


@dataclass(frozen=True)
class FlowConfig:
    """Rectified-flow noise process and sampler (DESIGN.md: "Flow matching")."""

    action_shift: float = 5.0
    video_shift: float = 2.0  # GWP-0.5 samples video noise levels separately, shift 2
    shared_sigma: bool = False  # GWP-0: one sigma (action_shift) for actions and video
    action_loss_weight: float = 5.0
    video_loss_weight: float = 1.0
    world_model_prob: float = 0.0  # fraction of samples trained with the world-model objective
    # per training sample, the probability that the (normalized) state is zeroed: the policy must also
    # act from the images; inference always passes the state (model.use_state=false drops it for good)
    state_dropout: float = 0.0
    aux_loss_weight: float = 1.0  # weight of the auxiliary scene-state loss (model.aux_dim > 0)
    num_inference_steps: int = 10
    inference_shift: float = 5.0

    def __post_init__(self) -> None:
        for name in ("action_shift", "video_shift", "inference_shift"):
            _check(getattr(self, name) > 0, f"flow.{name}", "must be > 0")
        for name in ("action_loss_weight", "video_loss_weight", "aux_loss_weight"):
            _check(getattr(self, name) >= 0, f"flow.{name}", "must be >= 0")
        _check(0.0 <= self.world_model_prob <= 1.0, "flow.world_model_prob", "must be in [0, 1]")
        _check(0.0 <= self.state_dropout < 1.0, "flow.state_dropout",
               "must be in [0, 1) (to never use the state, set model.use_state=false)")
        _check(self.num_inference_steps >= 1, "flow.num_inference_steps", "must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    """How dataset frames become model samples (data/)."""

    # camera feature keys in tiling order: first on top, the rest side by side below (paper layout);
    # empty = the dataset's cameras in their declared order
    cameras: tuple[str, ...] = ()
    view_layout: str = "auto"  # "auto" (1 view: single, 3: paper tiling), "single", "top_bottom_pair"
    future_offsets: tuple[int, ...] = (4, 8)  # frame offsets of the future frames (paper: 12,24,36,48)
    normalization: str = "quantile"  # "quantile" (q01/q99 -> [-1, 1]) or "meanstd"
    augment: bool = True  # train-time random-resized crop + colour jitter; inference uses the same geometry
    crop_scale: float = 0.95  # side fraction of the deterministic (inference) crop
    text_encoder: str = "minilm"

    def __post_init__(self) -> None:
        _check(all(o > 0 for o in self.future_offsets), "data.future_offsets", "must be positive")
        _check(list(self.future_offsets) == sorted(set(self.future_offsets)), "data.future_offsets",
               "must be strictly increasing")
        _check(self.normalization in ("quantile", "meanstd"), "data.normalization",
               "must be 'quantile' or 'meanstd'")
        _check(0.5 <= self.crop_scale <= 1.0, "data.crop_scale", "must be in [0.5, 1]")
        _check(self.text_encoder in TEXT_ENCODERS, "data.text_encoder", f"must be one of {TEXT_ENCODERS}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and run management (train/)."""

    batch_size: int = 8  # global batch across ranks
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" or "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0 = never
    save_every: int = 500
    keep_checkpoints: int = 3
    mixed_precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; "fp32"; "bf16"
    strategy: str = "auto"  # "auto": FSDP2 for presets with fsdp=True, DDP otherwise; "ddp"; "fsdp"
    fsdp: bool = False
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.schedule in ("cosine", "constant"), "train.schedule", "must be 'cosine' or 'constant'")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
        _check(self.mixed_precision in ("auto", "fp32", "bf16"), "train.mixed_precision",
               "must be 'auto', 'fp32' or 'bf16'")
        _check(self.strategy in ("auto", "ddp", "fsdp"), "train.strategy", "must be 'auto', 'ddp' or 'fsdp'")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")


@dataclass(frozen=True)
class Config:
    name: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.attention_mode != "no_video":
            _check(len(self.data.future_offsets) == self.model.num_future_frames, "data.future_offsets",
                   f"has {len(self.data.future_offsets)} offsets but model.num_future_frames="
                   f"{self.model.num_future_frames}")

    # -- (de)serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _from_dict(cls, d, "")

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where + ".")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if (tp is int and isinstance(value, bool)) or (tp is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an int, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected a bool, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{prefix}{sorted(unknown)[0]}: unknown field (known: {sorted(names)})")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:
            return [_parse_value(t) for t in text.split(",")]
        return text


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` overrides (values parsed as JSON, else as strings; ``a,b`` lists)."""
    d = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.field=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"{key}: unknown config section {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"{key}: unknown field")
        node[parts[-1]] = _parse_value(text)
    return Config.from_dict(d)


# ------------------------------------------------------------------------------------------
# Presets
# ------------------------------------------------------------------------------------------
PRESETS: dict[str, Config] = {}


def register_preset(config: Config) -> Config:
    if config.name in PRESETS:
        raise ConfigError(f"preset {config.name!r} is already registered")
    PRESETS[config.name] = config
    return config


def get_preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


# Unit tests: a step in a few tens of milliseconds on 2 CPU cores.
register_preset(Config(name="tiny"))

# CPU training on 64x64 views (about 5 M parameters): 64 reference tokens (8x8 patches), 1 future frame at
# the chunk's end (64 tokens), a 16-step chunk of 16 padded action dims (Meta-World 4-d, ALOHA 14-d).
# Sized for 2 CPU cores (docs/benchmarks.md): 4 layers x 256 wide, FFN 640 trains at ~0.8 s per batch of 32
# (6 layers / FFN 1024 / 2 future frames took 2.1 s), and decodes a chunk in ~30 ms compiled.
_CPU_SMALL_MODEL = ModelConfig(
    num_layers=4, num_heads=4, head_dim=64, ffn_dim=640, text_dim=384, max_text_tokens=16,
    latent_channels=3, patch_size=(1, 8, 8), image_height=64, image_width=64, num_future_frames=1,
    action_horizon=16, action_dim=16, state_dim=16, num_embodiments=4,
)
register_preset(Config(
    name="cpu-small", model=_CPU_SMALL_MODEL, data=DataConfig(future_offsets=(16,)),
    train=TrainConfig(batch_size=32, lr=3e-4, warmup_steps=200, save_every=500),
))

# The paper's shape (DESIGN.md): Wan2.2-TI2V-5B, 3 views tiled to 320 wide x 384 high, Wan VAE
# (16x spatial, 4x temporal, 48 channels) -> 24x20 latents, patch 1x2x2 -> 120 tokens per latent
# frame; 4 future frames at offsets 12..48 -> 1 future latent frame; 48-step chunk, 32-dim padding.
_WAN_5B_MODEL = ModelConfig(
    num_layers=30, num_heads=24, head_dim=128, ffn_dim=14336, text_dim=4096, max_text_tokens=64,
    video_tokenizer="wan2.2-vae", latent_channels=48, patch_size=(1, 2, 2), image_height=384,
    image_width=320, num_future_frames=4, action_horizon=48, action_dim=32, state_dim=32,
    num_embodiments=8, embodiment_hidden_dim=1024,
)
_WAN_5B_TRAIN = TrainConfig(batch_size=256, lr=1e-4, warmup_steps=500, ema_decay=0.9999, save_every=1000,
                            fsdp=True, gradient_checkpointing=True, num_workers=8)
_WAN_5B_DATA = DataConfig(future_offsets=(12, 24, 36, 48), text_encoder="umt5")
register_preset(Config(name="wan2.2-5b", model=_WAN_5B_MODEL, data=_WAN_5B_DATA, train=_WAN_5B_TRAIN))
# GigaWorld-Policy-0.5: Mixture-of-Transformers action expert (width 1024, FFN 4096).
register_preset(Config(
    name="wan2.2-5b-mot",
    model=dataclasses.replace(_WAN_5B_MODEL, action_expert_dim=1024, action_expert_ffn_dim=4096),
    data=_WAN_5B_DATA, train=_WAN_5B_TRAIN,
))
