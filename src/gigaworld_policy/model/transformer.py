"""The world-action transformer: Wan 2.2 DiT blocks over [state, reference, action, future] tokens.

Legend: b batch, n tokens, t action steps, a action dims, s state dims, l text tokens, e text width,
d stream width, D visual width (num_heads * head_dim), H heads, k head dim, c/f/h/w latent channels,
frames, height, width.

Parameter names follow diffusers' ``WanTransformer3DModel`` wherever a module has a Wan counterpart
(``patch_embedding``, ``condition_embedder.*``, ``blocks.N.attn1.to_q`` ..., ``scale_shift_table``,
``proj_out``) so Wan checkpoints load by name. New modules: per-embodiment ``state_encoder``,
``action_encoder``, ``action_decoder``; ``action_out_modulation``; and for the Mixture-of-Transformers
preset (GigaWorld-Policy-0.5) a narrower ``action_blocks.N`` expert for the S and A tokens.

Streams: every token belongs to a stream. Dense models have one (all tokens through ``blocks``); MoT
models have two, the visual stream (R, F through ``blocks``) and the action stream (S, A through
``action_blocks``), joined in each layer by one self-attention over all tokens under the same mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import (
    PixArtAlphaTextProjection,
    TimestepEmbedding,
    Timesteps,
    get_1d_rotary_pos_embed,
)
from diffusers.models.normalization import FP32LayerNorm
from einops import rearrange
from torch import nn

from gigaworld_policy.config import ModelConfig
from gigaworld_policy.model.layout import ACTION, FUTURE, REFERENCE, STATE, attention_mask

VISUAL, ACTION_STREAM = 0, 1

# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Wan attention projections (``to_q/to_k/to_v/to_out.0``, RMS qk-norm across heads)."""

    def __init__(self, q_dim: int, kv_dim: int, heads: int, head_dim: int, eps: float):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(q_dim, inner)
        self.to_k = nn.Linear(kv_dim, inner)
        self.to_v = nn.Linear(kv_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, q_dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(inner, eps=eps, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(inner, eps=eps, elementwise_affine=True)

    def query(self, x: torch.Tensor) -> torch.Tensor:  # [b, n, d] -> [b, n, H, k]
        return self.norm_q(self.to_q(x)).unflatten(2, (self.heads, -1))

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # -> 2 x [b, n, H, k]
        return (self.norm_k(self.to_k(x)).unflatten(2, (self.heads, -1)),
                self.to_v(x).unflatten(2, (self.heads, -1)))

    def query_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention q, k, v [b, n, H, k] from the same tokens.

        Under torch.compile: one matmul over the stacked weights (with frozen weights the stacking is
        folded into a constant once), three fewer weight streams per layer at a 16-token step.
        """
        if not torch.compiler.is_compiling():
            return self.query(x), *self.key_value(x)
        w = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        b = torch.cat([self.to_q.bias, self.to_k.bias, self.to_v.bias])
        q, k, v = F.linear(x, w, b).chunk(3, dim=-1)
        return (self.norm_q(q).unflatten(2, (self.heads, -1)), self.norm_k(k).unflatten(2, (self.heads, -1)),
                v.unflatten(2, (self.heads, -1)))

    def out(self, x: torch.Tensor) -> torch.Tensor:  # [b, n, H, k] -> [b, n, d]
        return self.to_out[0](x.flatten(2))


class WanBlock(nn.Module):
    """One Wan 2.2 DiT block's weights: adaLN (6 modulations), self-attn, text cross-attn, GELU FFN."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, head_dim: int, context_dim: int, eps: float,
                 cross_attn_norm: bool):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = Attention(dim, dim, heads, head_dim, eps)
        self.attn2 = Attention(dim, context_dim, heads, head_dim, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, layer_fn: Callable[..., tuple[torch.Tensor, ...]], *streams: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        """Run one layer's computation ``layer_fn(*streams)`` as this module's call.

        A layer's math lives in ``WorldActionTransformer._layer`` (a Mixture-of-Transformers layer spans two
        blocks in one joint attention); entering it through ``__call__`` lets module hooks fire around the
        block: FSDP2's per-block all-gather before it, reshard after it, and their backward counterparts.
        """
        return layer_fn(*streams)

    def modulation(self, mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """mod [b, n, 6, d] (time projection per token) -> 6 x [b, n, d] in fp32 (Wan's order)."""
        return (self.scale_shift_table.unsqueeze(0) + mod.float()).unbind(2)


class EmbodimentMLP(nn.Module):
    """One small MLP per embodiment; each sample goes through its own embodiment's MLP."""

    def __init__(self, num_embodiments: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))
            for _ in range(num_embodiments)
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, embodiment_id: torch.Tensor, ids: tuple[int, ...] | None = None
                ) -> torch.Tensor:  # [b, n, i] -> [b, n, o]
        """``ids``: ``embodiment_id`` as host ints when the caller has them (no device sync, no graph break)."""
        ids = tuple(embodiment_id.tolist()) if ids is None else ids
        if len(set(ids)) == 1:  # common case: one robot per batch, no scatter
            return self.mlps[ids[0]](x)
        out = x.new_empty(*x.shape[:-1], self.out_dim)
        for e in sorted(set(ids)):
            rows = (embodiment_id == e).nonzero(as_tuple=True)[0]
            out[rows] = self.mlps[e](x[rows]).to(out.dtype)
        return out


class SpatialKeypoints(nn.Module):
    """Reference frame [b, c, h, w] -> [b, out_dim]: conv features, a softmax over each of ``k`` maps'
    positions, its expected (x, y) in [-1, 1], then a linear layer (zero at init). ``model.keypoints``.

    Each map is standardized over its positions before the softmax, times a learned sharpness (3 at init):
    raw maps of a freshly initialized net are nearly flat, and a softmax over thousands of positions of a
    flat map puts every keypoint at the centre, where it stays (measured: all 16 keypoints at (0, 0) after
    500 steps on reach). A single outstanding pixel then dominates its map from the first step."""

    def __init__(self, in_channels: int, hidden: int, k: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, k, 1))
        self.log_sharpness = nn.Parameter(torch.full((), math.log(3.0)))
        self.proj = nn.Linear(2 * k, out_dim)

    def coordinates(self, frame: torch.Tensor) -> torch.Tensor:
        """[b, c, h, w] -> [b, k, 2]: each map's expected (x, y), -1 at the left/top edge, 1 at the right/bottom."""
        maps = self.net(frame)  # [b, k, h, w]
        h, w = maps.shape[-2:]
        logits = maps.flatten(2).float()  # [b, k, hw]
        logits = (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + 1e-5)
        attn = torch.softmax(logits * self.log_sharpness.float().exp(), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=frame.device)
        xs = torch.linspace(-1.0, 1.0, w, device=frame.device)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(h * w, 2)  # (x, y) per position
        return attn @ grid

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.proj(self.coordinates(frame).flatten(1).to(frame.dtype))  # x0, y0, x1, y1, ...


IMAGE_FEATURES = "image_features"  # Context.extras key of the image encoder's features [b, hidden]


class ImageEncoder(nn.Module):
    """Reference frame [b, c, h, w] -> features [b, hidden] (``model.image_encoder``): three 4x4 stride-2
    convolutions (32 channels, GELU), flattened in place order, then a dense layer (GELU). ``to_state``
    (zero at init, so the encoder starts as a no-op) adds them to the state token, or with
    ``model.image_encoder_token`` makes them a second S token; with ``model.aux_head="image_encoder"`` the
    auxiliary head is a linear map of them."""

    def __init__(self, in_channels: int, hw: tuple[int, int], hidden: int, out_dim: int, channels: int = 32):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.GELU(),
                                   nn.Conv2d(channels, channels, 4, 2, 1), nn.GELU(),
                                   nn.Conv2d(channels, channels, 4, 2, 1), nn.GELU())
        self.dense = nn.Linear(channels * (hw[0] // 8) * (hw[1] // 8), hidden)
        self.to_state = nn.Linear(hidden, out_dim)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(self.convs(frame).flatten(1)))


class AuxHead(nn.Module):
    """Reference-frame tokens' last hidden states [b, n, D] -> [b, out_dim] (``model.aux_dim``): a softmax over
    the tokens of a learned score weights, per token, a linear map of its hidden state plus a linear map of
    its (x, y) place in the patch grid. Hidden states carry no absolute position (RoPE acts inside attention
    only), so the grid term is how the head can say where: to lower its loss the tokens where the object is
    must score high. A training signal only (WorldActionModel.compute_loss)."""

    def __init__(self, dim: int, out_dim: int, grid: tuple[int, int], eps: float):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.score = nn.Linear(dim, 1)
        self.value = nn.Linear(dim, out_dim)
        self.place = nn.Linear(2, out_dim, bias=False)
        self.grid = grid

    def coordinates(self, device: torch.device) -> torch.Tensor:
        """[n, 2]: each reference token's (x, y) in the patch grid, -1 at the left/top edge, 1 at the right/bottom."""
        gh, gw = self.grid
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, gh, device=device),
                                torch.linspace(-1.0, 1.0, gw, device=device), indexing="ij")
        return torch.stack([xs, ys], -1).reshape(gh * gw, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.grid[0] * self.grid[1]
        if tokens.shape[1] != n:
            raise ValueError(f"aux head: {tokens.shape[1]} reference tokens, the patch grid {self.grid} has {n}")
        h = self.norm(tokens.float()).to(self.value.weight.dtype)
        weights = torch.softmax(self.score(h).float(), dim=1)  # [b, n, 1]
        per_token = self.value(h).float() + self.place(self.coordinates(h.device).to(h.dtype)).float()
        return (weights * per_token).sum(dim=1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) by per-token angles (Wan's RoPE convention).

    x [b, n, H, k]; freqs [n, k/2, 2] = (cos, sin). Eager: one complex multiply instead of ~10 real ops;
    under torch.compile the real form, which inductor fuses (it has no complex code generation).
    """
    xf = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        cos, sin = freqs[None, :, None, :, 0], freqs[None, :, None, :, 1]
        x0, x1 = xf[..., 0], xf[..., 1]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(xf) * torch.view_as_complex(freqs)[None, :, None, :]
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


def rope_1d(dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [n, dim/2] for integer positions (diffusers' frequencies, fp64 then fp32)."""
    cos, sin = get_1d_rotary_pos_embed(dim, positions.double(), theta, use_real=True, repeat_interleave_real=True,
                                       freqs_dtype=torch.float64)
    return cos[:, 0::2].float(), sin[:, 1::2].float()


def rope_3d(head_dim: int, frames: torch.Tensor, height: int, width: int, theta: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's 3D RoPE: head dim split t/h/w (128 -> 44/42/42), tokens ordered (frame, row, column)."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    f = frames.numel()
    grid_t = frames.view(f, 1, 1).expand(f, height, width).reshape(-1)
    grid_h = torch.arange(height).view(1, height, 1).expand(f, height, width).reshape(-1)
    grid_w = torch.arange(width).view(1, 1, width).expand(f, height, width).reshape(-1)
    parts = [rope_1d(d, g, theta) for d, g in ((t_dim, grid_t), (h_dim, grid_h), (w_dim, grid_w))]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


# ------------------------------------------------------------------------------------------------
# Per-call state
# ------------------------------------------------------------------------------------------------


@dataclass
class Tokens:
    """Tokens of one block (S, R, A or F) entering the transformer."""

    name: str
    x: torch.Tensor  # [b, n, d_stream]
    time_mod: torch.Tensor  # [b, 1, 6, d_stream] adaLN modulation from this block's timestep
    freqs: torch.Tensor  # [n, k/2, 2] rotary angles as (cos, sin) pairs


@dataclass
class ActionTime:
    """The action tokens' time conditioning for noise levels sigma [n] (n: the batch, or a sampler's steps)."""

    mod: torch.Tensor  # [n, 1, 6, d_action] adaLN modulation inside every block
    out_shift: torch.Tensor  # [n, 1, d_action] output-head modulation
    out_scale: torch.Tensor

    def step(self, i: int) -> ActionTime:
        """Row ``i`` (one noise level), broadcast over the batch."""
        return ActionTime(self.mod[i:i + 1], self.out_shift[i:i + 1], self.out_scale[i:i + 1])


@dataclass
class Context:
    """An encoded observation: what stays fixed over the denoising loop.

    With ``prefix_kv`` (the prefix cache) the S and R tokens have already been run through every layer
    and only their per-layer keys/values are kept; otherwise ``prefix`` holds their input tokens and
    they are recomputed with the noised tokens at every step.
    """

    embodiment_id: torch.Tensor  # [b]
    text: torch.Tensor  # [b, l, D] after the text embedder
    text_mask: torch.Tensor  # [b, 1, 1, l] for SDPA
    prefix: list[Tokens]  # S and R input tokens
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: [b, H, n_prefix, k] x2
    text_kv: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] | None = None  # per layer, per stream
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # IMAGE_FEATURES: model.image_encoder's
    # Wan's own video model: every token attends to every token (forward_video); no layout mask
    full_attention: bool = False

    # embodiment_id as host ints, read once per observation (not at every denoising step)
    embodiments: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.embodiments is None:
            self.embodiments = tuple(self.embodiment_id.tolist())

    @property
    def batch_size(self) -> int:
        return int(self.embodiment_id.shape[0])


# ------------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------------


class WorldActionTransformer(nn.Module):
    """Predicts flow-matching velocities for action and future-latent tokens (noise process: flow.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, Da = cfg.dim, cfg.action_stream_dim
        hid = cfg.embodiment_hidden_dim or Da
        # --- Wan modules (diffusers names) ---
        if cfg.patch_stem_channels:  # convolutional stem, then a 1x1 projection (config.py patch_stem_channels)
            layers: list[nn.Module] = []
            c_in = cfg.latent_channels
            for c in cfg.patch_stem_channels:
                layers += [nn.Conv3d(c_in, int(c), (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.GELU()]
                c_in = int(c)
            self.patch_stem = nn.Sequential(*layers)
            self.patch_embedding = nn.Conv3d(c_in, D, kernel_size=(cfg.patch_size[0], 1, 1),
                                             stride=(cfg.patch_size[0], 1, 1))
        else:
            self.patch_stem = nn.Identity()
            self.patch_embedding = nn.Conv3d(cfg.latent_channels, D, kernel_size=cfg.patch_size,
                                             stride=cfg.patch_size)
        self.condition_embedder = nn.Module()
        self.condition_embedder.timesteps_proj = Timesteps(cfg.freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.condition_embedder.time_embedder = TimestepEmbedding(in_channels=cfg.freq_dim, time_embed_dim=D)
        self.condition_embedder.act_fn = nn.SiLU()
        self.condition_embedder.time_proj = nn.Linear(D, 6 * D)
        self.condition_embedder.text_embedder = PixArtAlphaTextProjection(cfg.text_dim, D, act_fn="gelu_tanh")
        block = dict(heads=cfg.num_heads, head_dim=cfg.head_dim, context_dim=D, eps=cfg.eps,
                     cross_attn_norm=cfg.cross_attn_norm)
        self.blocks = nn.ModuleList(WanBlock(D, cfg.ffn_dim, **block) for _ in range(cfg.num_layers))
        self.norm_out = FP32LayerNorm(D, cfg.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(D, cfg.latent_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2])
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, D) / D**0.5)
        # --- Mixture-of-Transformers action expert (GWP-0.5) ---
        self.is_mot = cfg.action_expert_dim is not None
        if self.is_mot:
            assert cfg.action_expert_ffn_dim is not None
            self.action_blocks = nn.ModuleList(
                WanBlock(Da, cfg.action_expert_ffn_dim, **block) for _ in range(cfg.num_layers))
            self.action_time_proj = nn.Linear(D, 6 * Da)
        # --- robot modules ---
        E = cfg.num_embodiments
        # model.aux_in_state: the auxiliary head's estimate is appended to the state
        self.state_encoder = EmbodimentMLP(E, cfg.state_dim + (cfg.aux_dim if cfg.aux_in_state else 0), hid, Da)
        self.action_encoder = EmbodimentMLP(E, cfg.action_dim, hid, Da)
        self.action_decoder = EmbodimentMLP(E, Da, hid, cfg.action_dim)
        self.action_norm_out = FP32LayerNorm(Da, cfg.eps, elementwise_affine=False)
        self.action_out_modulation = nn.Linear(D, 2 * Da)
        self.keypoints = (SpatialKeypoints(cfg.latent_channels, cfg.keypoint_hidden, cfg.keypoints, Da)
                          if cfg.keypoints else None)
        lh, lw = cfg.latent_hw
        grid = (lh // cfg.patch_size[1], lw // cfg.patch_size[2])
        self.image_encoder = (ImageEncoder(cfg.latent_channels, (lh, lw), cfg.image_encoder, Da)
                              if cfg.image_encoder else None)
        self.aux_head: nn.Module | None = None
        if cfg.aux_dim:
            self.aux_head = (nn.Linear(cfg.image_encoder, cfg.aux_dim) if cfg.aux_head == "image_encoder"
                             else AuxHead(D, cfg.aux_dim, grid, cfg.eps))
        self._init_new_modules()
        self._build_rope_tables()

    # -- setup -------------------------------------------------------------------------------------
    def _init_new_modules(self) -> None:
        # Output heads start at zero velocity; the adaLN modulation of new heads starts at identity.
        for mlp in self.action_decoder.mlps:
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)
        nn.init.zeros_(self.action_out_modulation.weight)
        nn.init.zeros_(self.action_out_modulation.bias)
        if self.image_encoder is not None and not self.cfg.image_encoder_token:  # a no-op on the state token at init
            nn.init.zeros_(self.image_encoder.to_state.weight)
            nn.init.zeros_(self.image_encoder.to_state.bias)
        if self.keypoints is not None:  # starts as a no-op on the state token
            nn.init.zeros_(self.keypoints.proj.weight)
            nn.init.zeros_(self.keypoints.proj.bias)

    def _build_rope_tables(self, device: torch.device | str | None = None) -> None:
        """Forget cached RoPE tables; they are rebuilt on first use on the model's device.

        The tables are complex64 computed in fp64 from the config, kept out of the module's buffers on
        purpose: ``model.to(torch.bfloat16)`` would otherwise cast them (complex -> real, or to bf16
        angles), and a model built on ``meta`` would hold no values.
        """
        self._rope_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        lh, lw = self.cfg.latent_hw
        self._n_ref = (lh // self.cfg.patch_size[1]) * (lw // self.cfg.patch_size[2])
        self._n_state = self.cfg.num_state_tokens

    def init_non_persistent_buffers(self, device: torch.device | str | None = None) -> None:
        """Kept for callers that materialize a meta-built model (to_empty): resets the RoPE cache."""
        self._build_rope_tables(device)

    def rope_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(video, robot) complex rotary angles on ``device``: [n_video, k/2], [1 + T, k/2]."""
        key = str(device)
        if key not in self._rope_cache:
            cfg = self.cfg
            lh, lw = cfg.latent_hw
            gh, gw = lh // cfg.patch_size[1], lw // cfg.patch_size[2]
            n_frames = 1 + cfg.future_latent_frames // cfg.patch_size[0]
            with torch.device("cpu"):  # exact fp64 angles even while the model is built on ``meta``
                vcos, vsin = rope_3d(cfg.head_dim, torch.arange(n_frames), gh, gw, cfg.rope_theta)
                # S at position 0, actions at 1..T: 1D RoPE over the whole head dim (DESIGN.md "Positions").
                acos, asin = rope_1d(cfg.head_dim, torch.arange(cfg.action_horizon + 1), cfg.rope_theta)
                tables = (torch.complex(vcos, vsin), torch.complex(acos, asin))
            self._rope_cache[key] = (tables[0].to(device), tables[1].to(device))
            # the same angles as real (cos, sin) pairs [n, k/2, 2]: what the tokens carry (apply_rope)
            self._rope_cache[key + ":real"] = tuple(torch.view_as_real(t).contiguous() for t in self._rope_cache[key])
        return self._rope_cache[key]

    def rope(self, block: str) -> torch.Tensor:
        """Rotary angles of a block's tokens as (cos, sin) pairs [n, k/2, 2]."""
        device = self.patch_embedding.weight.device
        self.rope_tables(device)
        video, robot = self._rope_cache[str(device) + ":real"]
        if block == STATE:  # with model.image_encoder_token the features' token shares the state's position
            return robot[:1].expand(self._n_state, -1, -1)
        if block == ACTION:
            return robot[1:]
        if block == REFERENCE:
            return video[: self._n_ref]
        return video[self._n_ref:]

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the weights; inputs are cast to it and velocities returned in the inputs' dtype."""
        return self.patch_embedding.weight.dtype

    def stream_of(self, block: str) -> int:
        return ACTION_STREAM if self.is_mot and block in (STATE, ACTION) else VISUAL

    def layer(self, i: int, stream: int) -> WanBlock:
        return self.action_blocks[i] if stream == ACTION_STREAM else self.blocks[i]

    # -- embeddings ----------------------------------------------------------------------------------
    def time_embedding(self, sigma: torch.Tensor) -> torch.Tensor:
        """sigma [b] in [0, 1] -> Wan time embedding temb [b, D] (timestep = 1000 sigma)."""
        ce = self.condition_embedder
        t = ce.timesteps_proj(sigma * 1000.0)
        return ce.time_embedder(t.to(ce.time_embedder.linear_1.weight.dtype))

    def time_modulation(self, temb: torch.Tensor, stream: int) -> torch.Tensor:
        """temb [b, D] -> adaLN modulation [b, 1, 6, d_stream] for one block's tokens."""
        proj = self.action_time_proj if stream == ACTION_STREAM else self.condition_embedder.time_proj
        return proj(F.silu(temb)).unflatten(1, (6, -1)).unsqueeze(1)

    def action_time(self, sigma: torch.Tensor) -> ActionTime:
        """Everything the action tokens take from their noise level sigma [n]: computed once per forward, or
        once for all of a sampler's steps (a batched matmul instead of one per step)."""
        temb = self.time_embedding(sigma)
        shift, scale = self.action_out_modulation(F.silu(temb)).unflatten(1, (2, -1)).unsqueeze(1).unbind(2)
        return ActionTime(self.time_modulation(temb, self.stream_of(ACTION)), shift, scale)

    def make_tokens(self, name: str, x: torch.Tensor, temb: torch.Tensor) -> Tokens:
        """Wrap a block's input tokens with their adaLN modulation (from temb [b, D]) and RoPE angles."""
        return Tokens(name, x, self.time_modulation(temb, self.stream_of(name)), self.rope(name))

    def embed_latents(self, latents: torch.Tensor) -> torch.Tensor:  # [b, c, f, h, w] -> [b, n, D]
        return self.patch_embedding(self.patch_stem(latents)).flatten(2).transpose(1, 2)

    def unpatchify(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # [b, n, pt*ph*pw*c] -> [b, c, f, h, w]
        cfg = self.cfg
        pt, ph, pw = cfg.patch_size
        lh, lw = cfg.latent_hw
        return rearrange(x, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=frames // pt, h=lh // ph,
                         w=lw // pw, pt=pt, ph=ph, pw=pw)

    def encode_context(self, *, state: torch.Tensor, reference_latents: torch.Tensor, text: torch.Tensor,
                       text_mask: torch.Tensor, embodiment_id: torch.Tensor, use_cache: bool,
                       embodiments: tuple[int, ...] | None = None) -> Context:
        """Embed the clean observation; with ``use_cache`` also run it through every layer once.

        ``embodiments``: ``embodiment_id`` as host ints if the caller has them (saves a device sync).
        """
        b = state.shape[0]
        ids = tuple(embodiment_id.tolist()) if embodiments is None else tuple(embodiments)
        wd = self.compute_dtype  # inputs arrive in fp32 (batch.py); a bf16 model computes in bf16
        if not self.cfg.use_state:
            state = torch.zeros_like(state)
        state, reference_latents, text = state.to(wd), reference_latents.to(wd), text.to(wd)
        zero = self.time_embedding(torch.zeros(b, device=state.device, dtype=state.dtype))
        extras: dict[str, torch.Tensor] = {}
        if self.image_encoder is not None:
            extras[IMAGE_FEATURES] = self.image_encoder(reference_latents[:, :, 0])
        if self.cfg.aux_in_state:  # the head's estimate of the scene, as more state (config.py)
            assert self.aux_head is not None
            state = torch.cat([state, self.aux_head(extras[IMAGE_FEATURES]).detach()], dim=-1)
        state_token = self.state_encoder(state[:, None], embodiment_id, ids)  # [b, 1, Da]
        if self.keypoints is not None:
            state_token = state_token + self.keypoints(reference_latents[:, :, 0])[:, None]
        if self.image_encoder is not None:
            features = self.image_encoder.to_state(extras[IMAGE_FEATURES])[:, None]
            state_token = (torch.cat([state_token, features], dim=1) if self.cfg.image_encoder_token
                           else state_token + features)
        prefix = [
            self.make_tokens(STATE, state_token, zero),
            self.make_tokens(REFERENCE, self.embed_latents(reference_latents), zero),
        ]
        ctx = Context(embodiment_id=embodiment_id, text=self.condition_embedder.text_embedder(text),
                      text_mask=text_mask[:, None, None, :], prefix=prefix, embodiments=ids, extras=extras)
        if use_cache:
            ctx.text_kv = [
                {s: self.layer(i, s).attn2.key_value(ctx.text) for s in self._streams()}
                for i in range(self.cfg.num_layers)
            ]
            ctx.prefix_kv = []
            self._run(ctx, prefix, collect_kv=ctx.prefix_kv)
        return ctx

    def _streams(self) -> tuple[int, ...]:
        return (VISUAL, ACTION_STREAM) if self.is_mot else (VISUAL,)

    # -- the forward pass ----------------------------------------------------------------------------
    def forward(
        self,
        ctx: Context,
        *,
        noisy_actions: torch.Tensor | None,  # [b, t, a]
        action_sigma: torch.Tensor | None,  # [b]
        noisy_future: torch.Tensor | None,  # [b, c, f, h, w]
        future_sigma: torch.Tensor | None,  # [b]
        action_time: ActionTime | None = None,  # instead of action_sigma: precomputed (see action_time)
        prefix_out: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Velocities for the noised action chunk [b, t, a] and future latents [b, c, f, h, w].

        Tokens run: the S/R prefix unless it is cached in ``ctx``, then A if ``noisy_actions`` is
        given, then F if ``noisy_future`` is given. The attention mask (layout.py) decides who sees whom;
        the same code serves training, action-only decoding and joint decoding in every attention mode.
        ``prefix_out``: when given (and the prefix is not cached) it receives the S and R tokens' last hidden
        states by block name (the auxiliary head reads R).
        """
        tokens = [] if ctx.prefix_kv is not None else list(ctx.prefix)
        wd = self.compute_dtype
        if noisy_actions is not None:
            if action_time is None:
                assert action_sigma is not None
                action_time = self.action_time(action_sigma)
            x = self.action_encoder(noisy_actions.to(wd), ctx.embodiment_id, ctx.embodiments)
            tokens.append(Tokens(ACTION, x, action_time.mod, self.rope(ACTION)))
        if noisy_future is not None:
            assert future_sigma is not None
            if self.cfg.attention_mode == "no_video":
                raise ValueError("attention_mode='no_video' has no future-video tokens")
            future_temb = self.time_embedding(future_sigma)
            tokens.append(self.make_tokens(FUTURE, self.embed_latents(noisy_future.to(wd)), future_temb))
        out = self._run(ctx, tokens)
        if prefix_out is not None:
            if ctx.prefix_kv is not None:
                raise ValueError("prefix_out: the prefix is cached in ctx (use_cache=True), its outputs were not kept")
            prefix_out.update({t.name: out[t.name] for t in ctx.prefix})
        action_v = future_v = None
        if noisy_actions is not None:
            x = out[ACTION]
            x = (self.action_norm_out(x.float()) * (1 + action_time.out_scale) + action_time.out_shift).type_as(x)
            action_v = self.action_decoder(x, ctx.embodiment_id, ctx.embodiments).to(noisy_actions.dtype)
        if noisy_future is not None:
            x = out[FUTURE]
            shift, scale = (self.scale_shift_table + future_temb.unsqueeze(1)).unsqueeze(1).unbind(2)
            x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
            future_v = self.unpatchify(self.proj_out(x), noisy_future.shape[2]).to(noisy_future.dtype)
        return action_v, future_v

    def forward_video(self, latents: torch.Tensor, sigma: torch.Tensor, *, text: torch.Tensor,
                      text_mask: torch.Tensor) -> torch.Tensor:
        """Wan 2.2 TI2V's own computation: velocity [b, c, f-1, h, w] of latent frames 1.. given latents [b, c, f, h, w].

        Latent frame 0 is the clean reference (timestep 0), frames 1.. are noised at ``sigma`` [b]
        (timestep 1000 sigma): diffusers' per-token ``timestep`` [b, seq] path. Only R and F tokens, no
        state/action tokens, and full attention (no layout mask), so a loaded Wan checkpoint reproduces
        ``WanTransformer3DModel`` exactly (tests/model/test_wan.py); also a video-only pretraining path.
        """
        if latents.shape[2] != 1 + self.cfg.future_latent_frames:
            raise ValueError(f"forward_video: latents have {latents.shape[2]} frames, the config's RoPE table "
                             f"covers 1 + {self.cfg.future_latent_frames}")
        b = latents.shape[0]
        zero = self.time_embedding(torch.zeros(b, device=latents.device, dtype=sigma.dtype))
        ctx = Context(embodiment_id=torch.zeros(b, dtype=torch.long, device=latents.device),
                      text=self.condition_embedder.text_embedder(text), text_mask=text_mask[:, None, None, :],
                      prefix=[self.make_tokens(REFERENCE, self.embed_latents(latents[:, :, :1]), zero)],
                      full_attention=True)
        return self(ctx, noisy_actions=None, action_sigma=None, noisy_future=latents[:, :, 1:], future_sigma=sigma)[1]

    def _run(self, ctx: Context, tokens: list[Tokens],
             collect_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Run ``tokens`` through all layers (against the cached prefix if any); outputs per block."""
        # Group tokens by stream; within a layer each stream is one tensor, attention joins them.
        groups = {s: [t for t in tokens if self.stream_of(t.name) == s] for s in self._streams()}
        groups = {s: g for s, g in groups.items() if g}
        order = [t for g in groups.values() for t in g]  # attention sequence order
        b = ctx.batch_size
        x = {s: _cat([t.x for t in g]) for s, g in groups.items()}
        mod = {s: _cat([t.time_mod.expand(b, t.x.shape[1], -1, -1) for t in g]) for s, g in groups.items()}
        freqs = _cat([t.freqs for t in order], dim=0)
        sizes = [x[s].shape[1] for s in groups]
        query_blocks = [(t.name, t.x.shape[1]) for t in order]
        key_blocks = list(query_blocks)
        if ctx.prefix_kv is not None:
            key_blocks = [(t.name, t.x.shape[1]) for t in ctx.prefix] + key_blocks
        mask = None if ctx.full_attention else attention_mask(
            self.cfg.attention_mode, query_blocks, key_blocks, device=ctx.text.device,
            reference_sees_state=self.cfg.reference_sees_state)
        # Gradient checkpointing (train.gradient_checkpointing, set by the trainer): keep only each layer's input
        # streams and recompute the layer in backward (docs/memory.md).
        ckpt = getattr(self, "gradient_checkpointing", False) and torch.is_grad_enabled() and collect_kv is None
        keys = list(x)
        for i in range(self.cfg.num_layers):
            def layer_fn(*xs: torch.Tensor, i: int = i) -> tuple[torch.Tensor, ...]:
                xd = dict(zip(keys, xs))
                self._layer(i, ctx, groups, xd, mod, freqs, sizes, mask, collect_kv)
                return tuple(xd[k] for k in keys)

            call = partial(self._call_layer, i, layer_fn)
            xs = tuple(x[k] for k in keys)
            outs = torch.utils.checkpoint.checkpoint(call, *xs, use_reentrant=False) if ckpt else call(*xs)
            x = dict(zip(keys, outs))
        out: dict[str, torch.Tensor] = {}
        for s, g in groups.items():
            for t, y in zip(g, x[s].split([t.x.shape[1] for t in g], dim=1)):
                out[t.name] = y
        return out

    def _call_layer(self, i: int, layer_fn: Callable[..., tuple[torch.Tensor, ...]], *xs: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
        """Layer ``i`` entered through its block modules' ``__call__`` (WanBlock.forward): both of them in a
        Mixture-of-Transformers layer, so each block can be its own FSDP2 unit."""
        if self.is_mot:
            return self.blocks[i](partial(self.action_blocks[i], layer_fn), *xs)
        return self.blocks[i](layer_fn, *xs)

    def _layer(self, i: int, ctx: Context, groups: dict[int, list[Tokens]], x: dict[int, torch.Tensor],
               mod: dict[int, torch.Tensor], freqs: torch.Tensor, sizes: list[int], mask: torch.Tensor | None,
               collect_kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """One Wan block over all streams, updating ``x`` in place (per stream [b, n_s, d_s])."""
        # 1) adaLN + self-attention projections per stream, one joint attention over all tokens
        mods, qs, ks, vs = {}, [], [], []
        for s in groups:
            blk = self.layer(i, s)
            mods[s] = shift, scale, *_ = blk.modulation(mod[s])
            h = _modulate(blk.norm1(x[s].float()), shift, scale).type_as(x[s])
            q, k, v = blk.attn1.query_key_value(h)
            qs.append(q), ks.append(k), vs.append(v)
        q = apply_rope(_cat(qs), freqs).transpose(1, 2)  # [b, H, n, k]
        k = apply_rope(_cat(ks), freqs).transpose(1, 2)
        v = _cat(vs).transpose(1, 2)
        if collect_kv is not None:
            collect_kv.append((k, v))
        if ctx.prefix_kv is not None:
            pk, pv = ctx.prefix_kv[i]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)  # [b, n, H, k]
        for s, a in zip(groups, attn.split(sizes, dim=1) if len(sizes) > 1 else (attn,)):
            blk, (_, _, gate, c_shift, c_scale, c_gate) = self.layer(i, s), mods[s]
            x[s] = torch.addcmul(x[s].float(), blk.attn1.out(a), gate).type_as(x[s])
            # 2) text cross-attention (keys/values cached per layer and stream when available)
            hq = blk.norm2(x[s].float()).type_as(x[s])
            tk, tv = ctx.text_kv[i][s] if ctx.text_kv is not None else blk.attn2.key_value(ctx.text)
            c = F.scaled_dot_product_attention(blk.attn2.query(hq).transpose(1, 2), tk.transpose(1, 2),
                                               tv.transpose(1, 2), attn_mask=ctx.text_mask)
            x[s] = x[s] + blk.attn2.out(c.transpose(1, 2))
            # 3) modulated GELU feed-forward
            h = _modulate(blk.norm3(x[s].float()), c_shift, c_scale).type_as(x[s])
            x[s] = torch.addcmul(x[s].float(), blk.ffn(h).float(), c_gate).type_as(x[s])


def _cat(xs: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim=dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift."""
    return torch.addcmul(shift, x, 1 + scale)
