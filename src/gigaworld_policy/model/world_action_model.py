"""WorldActionModel: the public model API (loss, action-only decoding, joint decoding, examples).

Legend: b batch, t action steps, a action dims, f future pixel frames, c/h/w channels/height/width.

The batch layout is defined in ``batch.py``; the noise process in ``flow.py``; the attention mask in
``layout.py``; the network in ``transformer.py``.
"""

from __future__ import annotations

import itertools

import torch

from gigaworld_policy.config import Config, FlowConfig, ModelConfig
from gigaworld_policy.model import flow
from gigaworld_policy.model.batch import Batch, example_batch, validate
from gigaworld_policy.model.layout import REFERENCE
from gigaworld_policy.model.tokenizers import VideoTokenizer, build_video_tokenizer
from gigaworld_policy.model.transformer import IMAGE_FEATURES, Context, WorldActionTransformer


class WorldActionModel(WorldActionTransformer):
    """Action-centered world-action model (GigaWorld-Policy).

    ``compute_loss(batch)`` trains actions and future video jointly with flow matching;
    ``predict_actions(obs)`` is the deployment path (the video branch never runs);
    ``generate(obs)`` decodes actions and the imagined future video together.
    """

    def __init__(self, config: Config | ModelConfig, flow_config: FlowConfig | None = None,
                 video_tokenizer: VideoTokenizer | None = None):
        if isinstance(config, Config):
            model_cfg, flow_cfg = config.model, flow_config or config.flow
        else:
            model_cfg, flow_cfg = config, flow_config or FlowConfig()
        super().__init__(model_cfg)
        self.flow_cfg = flow_cfg
        # The tokenizer is a frozen, separately-loaded module (the Wan VAE has its own checkpoint):
        # kept out of this model's state dict and parameters.
        self._tokenizer: list[VideoTokenizer | None] = [video_tokenizer or build_video_tokenizer(model_cfg)]
        self._compiled: tuple | None = None  # (compiled _decode_actions, frozen weights version or None)

    # -- tokenizer ---------------------------------------------------------------------------------
    @property
    def video_tokenizer(self) -> VideoTokenizer:
        tok = self._tokenizer[0]
        if tok is None:
            raise RuntimeError(f"model.video_tokenizer={self.cfg.video_tokenizer!r} needs loaded weights: build "
                               "the model with video_tokenizer=... (see gigaworld_policy.model.wan)")
        return tok

    def set_video_tokenizer(self, tokenizer: VideoTokenizer) -> None:
        self._tokenizer[0] = tokenizer

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """[b, n, 3, H, W] pixels in [-1, 1] -> latents [b, C, f, h, w] (frozen tokenizer, no grad)."""
        return self.video_tokenizer.encode(frames)

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        return self.video_tokenizer.decode(latents)

    def _context(self, obs: Batch, *, use_cache: bool) -> Context:
        ref = self.encode_video(obs["image"][:, None])
        return self.encode_context(state=obs["state"], reference_latents=ref, text=obs["text"],
                                   text_mask=obs["text_mask"], embodiment_id=obs["embodiment_id"], use_cache=use_cache)

    @property
    def has_video(self) -> bool:
        return self.cfg.attention_mode != "no_video"

    # -- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Flow-matching losses for one batch (layout: batch.py).

        Returns ``loss`` (weighted sum), ``action_loss``, ``video_loss`` (0 without a video branch) and
        ``world_model_fraction`` (share of samples trained with the world-model objective).
        """
        b = validate(batch, self.cfg, training=True)
        fc, dev = self.flow_cfg, batch["state"].device
        gen_dev = generator.device if generator is not None else "cpu"

        def randn_like(x: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, device=gen_dev).to(dev, x.dtype)

        actions = batch["actions"]
        action_noise = randn_like(actions)
        action_sigma = flow.sample_sigma(b, fc.action_shift, generator=generator, device=dev)
        # World-model objective (GWP-0.5 AC-WM pretraining): ground-truth actions enter clean (sigma 0)
        # and only the video is supervised for those samples.
        u = torch.rand(b, generator=generator, device=gen_dev).to(dev)
        world_model = u < fc.world_model_prob
        action_sigma = torch.where(world_model, torch.zeros_like(action_sigma), action_sigma)

        action_valid = torch.ones_like(actions, dtype=torch.bool)
        if "action_is_pad" in batch:
            action_valid &= ~batch["action_is_pad"][:, :, None]
        if "action_dim_mask" in batch:
            action_valid &= batch["action_dim_mask"][:, None, :]
        action_valid &= ~world_model[:, None, None]

        noisy_future = future_sigma = future_target = future_valid = None
        latents = self._loss_latents(batch)  # [b, c, 1 + f_lat, h, w]
        ref_latents, future_latents = latents[:, :, :1], latents[:, :, 1:]
        if self.has_video:
            video_noise = randn_like(future_latents)
            if fc.shared_sigma:  # GWP-0: one noise level for actions and video
                future_sigma = torch.where(world_model, flow.sample_sigma(b, fc.action_shift, generator=generator,
                                                                          device=dev), action_sigma)
            else:  # GWP-0.5: separate levels, video shift 2
                future_sigma = flow.sample_sigma(b, fc.video_shift, generator=generator, device=dev)
            noisy_future = flow.add_noise(future_latents, video_noise, future_sigma)
            future_target = flow.velocity_target(future_latents, video_noise)
            if "future_is_pad" in batch:  # the reference frame is never in the loss: only F is predicted
                lat_pad = self.video_tokenizer.latent_frame_is_pad(batch["future_is_pad"])
                future_valid = ~lat_pad[:, None, :, None, None]

        state = batch["state"]
        if fc.state_dropout > 0:  # drawn last, so runs without dropout keep their random stream
            keep = torch.rand(b, generator=generator, device=gen_dev).to(dev) >= fc.state_dropout
            state = state * keep[:, None].to(state.dtype)
        ctx = self.encode_context(state=state, reference_latents=ref_latents, text=batch["text"],
                                  text_mask=batch["text_mask"], embodiment_id=batch["embodiment_id"], use_cache=False)
        noisy_actions = flow.add_noise(actions, action_noise, action_sigma)
        # the token head reads the reference tokens' outputs; the image-encoder head only the context
        prefix_out: dict[str, torch.Tensor] | None = ({} if self.aux_head is not None and self.cfg.aux_head == "tokens"
                                                       else None)
        action_v, future_v = self(ctx, noisy_actions=noisy_actions, action_sigma=action_sigma,
                                  noisy_future=noisy_future, future_sigma=future_sigma, prefix_out=prefix_out)
        action_loss = flow.masked_mse(action_v, flow.velocity_target(actions, action_noise), action_valid)
        zero = action_loss.new_zeros(())
        video_loss = flow.masked_mse(future_v, future_target, future_valid) if future_v is not None else zero
        aux_loss = zero
        if self.aux_head is not None:  # model.aux_dim: the scene state predicted from the reference frame
            aux_loss = torch.nn.functional.mse_loss(self.predict_aux(prefix_out, ctx), batch["aux_target"].float())
        loss = fc.action_loss_weight * action_loss + fc.video_loss_weight * video_loss + fc.aux_loss_weight * aux_loss
        return {"loss": loss, "action_loss": action_loss.detach(), "video_loss": video_loss.detach(),
                "aux_loss": aux_loss.detach(), "world_model_fraction": world_model.float().mean()}

    def predict_aux(self, prefix_out: dict[str, torch.Tensor] | None, ctx: Context) -> torch.Tensor:
        """The auxiliary head's scene-state prediction [b, aux_dim] (normalized units) from ``forward``'s
        ``prefix_out`` (model.aux_head="tokens") or the context's image-encoder features ("image_encoder"; then
        ``prefix_out`` is not read and may be None)."""
        if self.aux_head is None:
            raise ValueError("predict_aux: model.aux_dim=0, this model has no auxiliary head")
        if self.cfg.aux_head == "image_encoder":
            return self.aux_head(ctx.extras[IMAGE_FEATURES]).float()
        if prefix_out is None:
            raise ValueError("predict_aux: model.aux_head='tokens' reads forward's prefix_out, got None")
        return self.aux_head(prefix_out[REFERENCE])

    def _observe_prefix(self, obs: Batch) -> tuple[dict[str, torch.Tensor], Context]:
        validate(obs, self.cfg, training=False)
        ctx = self._context(obs, use_cache=False)
        prefix_out: dict[str, torch.Tensor] = {}
        self(ctx, noisy_actions=None, action_sigma=None, noisy_future=None, future_sigma=None, prefix_out=prefix_out)
        return prefix_out, ctx

    @torch.no_grad()
    def observe_reference(self, obs: Batch) -> torch.Tensor:
        """The reference-frame tokens' last hidden states [b, n_ref, D] for an observation (what the
        auxiliary head reads): for probes of what the image tokens carry; the policy never calls it."""
        return self._observe_prefix(obs)[0][REFERENCE]

    @torch.no_grad()
    def observe_aux(self, obs: Batch) -> torch.Tensor:
        """The auxiliary head's prediction [b, aux_dim] (normalized units) for an observation: a probe of
        what the image tokens (or the image encoder) carry; the policy never calls it."""
        if self.aux_head is None:
            raise ValueError("observe_aux: model.aux_dim=0, this model has no auxiliary head")
        if self.cfg.aux_head == "image_encoder":  # the encoder's features are in the context: no transformer pass
            validate(obs, self.cfg, training=False)
            return self.predict_aux({}, self._context(obs, use_cache=False))
        return self.predict_aux(*self._observe_prefix(obs))

    def _loss_latents(self, batch: Batch) -> torch.Tensor:
        """[b, c, 1 + f_lat, h, w]: the reference latent frame, then the future ones (none for no_video).

        Cached ``latents`` (data/latent_cache.py) when the batch has them, else the frozen tokenizer's
        encoding of ``image`` (+ ``future_frames``): the same tensor, without running the VAE every step."""
        if "latents" in batch:
            return batch["latents"]
        frames = batch["image"][:, None]
        if self.has_video:
            frames = torch.cat([frames, batch["future_frames"]], dim=1)
        return self.encode_video(frames)

    # -- inference -----------------------------------------------------------------------------------
    def _noise(self, shape: tuple[int, ...], noise: torch.Tensor | None, ref: torch.Tensor, what: str) -> torch.Tensor:
        if noise is None:
            return torch.randn(shape, device=ref.device, dtype=ref.dtype)
        if tuple(noise.shape) != shape:
            raise ValueError(f"{what}: expected shape {list(shape)}, got {list(noise.shape)}")
        return noise.to(ref.device, ref.dtype)

    def _future_latent_shape(self, b: int) -> tuple[int, ...]:
        cfg = self.cfg
        lh, lw = cfg.latent_hw
        return (b, self.video_tokenizer.latent_channels, cfg.future_latent_frames, lh, lw)

    @torch.no_grad()
    def predict_actions(self, obs: Batch, num_steps: int | None = None, noise: torch.Tensor | None = None,
                        use_cache: bool = True) -> torch.Tensor:
        """Denoise an action chunk [b, t, a] (normalized units) from the observation alone.

        ``action_centered``/``no_video``: the future-video branch never runs. With ``use_cache`` the
        clean S/R prefix and the text keys/values are computed once and each step runs only the T
        action tokens. ``joint`` models cannot decode actions without the video, so this falls back to
        :meth:`generate`. ``noise`` [b, t, a] fixes the initial action noise.
        """
        if self.cfg.attention_mode == "joint":
            return self.generate(obs, num_steps=num_steps, noise=noise, use_cache=use_cache)[0]
        b = validate(obs, self.cfg, training=False)
        steps = num_steps or self.flow_cfg.num_inference_steps
        x = self._noise((b, self.cfg.action_horizon, self.cfg.action_dim), noise, obs["state"], "noise")
        decode = self._decode_actions
        if use_cache and self._compiled is not None:
            if self._compiled[1] is not None and self._compiled[1] != self._weights_version():
                raise RuntimeError("predict_actions: the weights changed after compile_action_decoding(freeze=True) "
                                   "froze them into the compiled graph; call compile_action_decoding() again")
            decode = self._compiled[0]
        return decode(obs["state"], obs["image"], obs["text"], obs["text_mask"], obs["embodiment_id"], x,
                      embodiments=tuple(obs["embodiment_id"].tolist()), steps=steps, use_cache=use_cache)

    def _decode_actions(self, state: torch.Tensor, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                        embodiment_id: torch.Tensor, x: torch.Tensor, *, embodiments: tuple[int, ...], steps: int,
                        use_cache: bool) -> torch.Tensor:
        """The action-only denoising loop on validated inputs (what compile_action_decoding compiles)."""
        ref = self.encode_video(image[:, None])
        ctx = self.encode_context(state=state, reference_latents=ref, text=text, text_mask=text_mask,
                                  embodiment_id=embodiment_id, use_cache=use_cache, embodiments=embodiments)
        sigmas = flow.sigma_schedule(steps, self.flow_cfg.inference_shift, device=x.device)
        times = self.action_time(sigmas[:-1].to(x.dtype))  # every step's time conditioning in one pass
        for i in range(steps):
            v, _ = self(ctx, noisy_actions=x, action_sigma=None, noisy_future=None, future_sigma=None,
                        action_time=times.step(i))
            x = flow.euler_step(x, v, sigmas[i], sigmas[i + 1])
        return x

    def _weights_version(self) -> int:
        """Sum of the in-place version counters of every weight (any load or update bumps it)."""
        return sum(t._version for t in itertools.chain(self.parameters(), self.buffers()))

    def compile_action_decoding(self, *, freeze: bool = True) -> None:
        """Compile the cached action-only path (:meth:`predict_actions` with ``use_cache=True``) with torch.compile.

        The observation encoding, the prefix cache and every denoising step become one graph (one guard
        check per chunk, fused elementwise ops). The first call for each input shape and step count
        compiles (tens of seconds on CPU). With ``freeze`` (inference only) inductor treats the weights
        as constants and pre-packs them for its matmul kernels: call this after the final weights are
        loaded; :meth:`predict_actions` refuses to run if they change afterwards.
        """
        fn = torch.compile(self._decode_actions, dynamic=False, options={"freezing": freeze})
        self._compiled = (fn, self._weights_version() if freeze else None)

    @torch.no_grad()
    def generate(self, obs: Batch, num_steps: int | None = None, noise: torch.Tensor | None = None,
                 actions: torch.Tensor | None = None, video_noise: torch.Tensor | None = None,
                 use_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint decoding: (actions [b, t, a], future video latents [b, c, f, h, w]).

        Actions and future latents are denoised together on one schedule (what a ``joint`` model must
        do). With ``actions`` given they enter clean (timestep 0) and only the video is generated for
        them: the world-model mode. ``use_cache`` reuses the S/R prefix keys/values across steps
        (exact in every mode, since S/R never attend to noised tokens); off by default so that this path
        is the plain full-sequence baseline.
        """
        if not self.has_video:
            raise ValueError("generate: attention_mode='no_video' has no video branch; use predict_actions")
        b = validate(obs, self.cfg, training=False)
        steps = num_steps or self.flow_cfg.num_inference_steps
        ctx = self._context(obs, use_cache=use_cache)
        ref = obs["state"]
        a_shape = (b, self.cfg.action_horizon, self.cfg.action_dim)
        if actions is not None:
            if tuple(actions.shape) != a_shape:
                raise ValueError(f"actions: expected shape {list(a_shape)}, got {list(actions.shape)}")
            x_a, clean = actions.to(ref.device, ref.dtype), True
        else:
            x_a, clean = self._noise(a_shape, noise, ref, "noise"), False
        x_v = self._noise(self._future_latent_shape(b), video_noise, ref, "video_noise")
        sigmas = flow.sigma_schedule(steps, self.flow_cfg.inference_shift, device=ref.device)
        zero = torch.zeros(b, device=ref.device)
        for i in range(steps):
            s = sigmas[i].expand(b)
            v_a, v_v = self(ctx, noisy_actions=x_a, action_sigma=zero if clean else s, noisy_future=x_v,
                            future_sigma=s)
            if not clean:
                x_a = flow.euler_step(x_a, v_a, sigmas[i], sigmas[i + 1])
            x_v = flow.euler_step(x_v, v_v, sigmas[i], sigmas[i + 1])
        return x_a, x_v

    # -- examples ------------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> Batch:
        """A random but valid training batch for this config (layout: batch.py)."""
        return example_batch(self.cfg, batch_size, training=True, generator=generator, device=self._device())

    def example_observation(self, batch_size: int = 1, generator: torch.Generator | None = None) -> Batch:
        """A random but valid observation for ``predict_actions`` / ``generate``."""
        return example_batch(self.cfg, batch_size, training=False, generator=generator, device=self._device())

    def _device(self) -> torch.device:
        return self.patch_embedding.weight.device
