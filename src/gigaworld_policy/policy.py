"""Policy: a checkpoint behind ``infer(observation) -> actions`` in robot units (docs/CONTRACTS.md).

Pipeline per call: validate the robot-side observation -> normalize state (per-robot statistics from the
checkpoint), compose camera views, look up cached prompt embeddings -> ``model.predict_actions`` (action
only, prefix-cached; the video branch never runs) or ``model.generate`` + ``decode_video`` when the
imagined future is asked for -> un-normalize, delta dims back to absolute with the current state.

Thread safety: ``infer`` may be called from several threads; the model (and the text encoder) run under
one lock, validation and pre/post-processing run outside it.

Dims: t action steps (chunk length), a robot action dims, s robot state dims, f future frames,
H/W camera image size, h/w composed frame size, l text tokens, e text width.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gigaworld_policy.config import Config
from gigaworld_policy.data.embodiments import EMBODIMENTS, Embodiment, check_num_embodiments, get_embodiment
from gigaworld_policy.data.normalize import Normalizer, pad_last
from gigaworld_policy.data.views import camera_name, compose_views_sequence, tile_boxes
from gigaworld_policy.model.text import TextEncoder, build_text_encoder
from gigaworld_policy.model.world_action_model import WorldActionModel

OBS_KEYS = ("images", "state", "prompt", "robot_type")
MAX_IMAGE_SIDE = 4096
MAX_CACHED_PROMPTS = 1024


class PolicyInputError(ValueError):
    """The observation does not follow docs/CONTRACTS.md; the message names the key and what was expected."""


@dataclass(frozen=True)
class RobotSpec:
    """What the policy knows about one robot type of its checkpoint."""

    embodiment: Embodiment
    embodiment_id: int  # row of the model's per-embodiment tables (as trained)
    normalizer: Normalizer
    cameras: tuple[str, ...]  # tiling order
    # model.aux_dim: (mean, std) of the auxiliary head's training target (observation.environment_state)
    environment_state: tuple[np.ndarray, np.ndarray] | None = None


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0


def _check_num_steps(num_steps: Any) -> int:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= 1000:
        raise PolicyInputError(f"'num_steps': expected an int in [1, 1000], got {num_steps!r}")
    return num_steps


class Policy:
    def __init__(self, model: WorldActionModel, config: Config, norm_stats: dict[str, Any], *,
                 text_encoder: TextEncoder | None = None, checkpoint: str | Path | None = None,
                 noise_scale: float = 1.0, num_steps: int | None = None) -> None:
        """``noise_scale``: multiplies the initial action noise the policy draws (a sampling temperature; 0 runs
        the flow from the noise distribution's mean, a deterministic chunk per observation); noise passed to
        :meth:`infer` is used as given. 1 is what training used; other scales start the flow where training
        never did (goal-observable MT10 reach: 0.08 / 0.56 / 0.38 at 0 / 1 / 2, docs/results.md).
        ``num_steps``: the sampler's Euler steps for calls that do not pass their own (None: the checkpoint's
        ``flow.num_inference_steps``)."""
        noise_scale = float(noise_scale)
        if not np.isfinite(noise_scale) or noise_scale < 0:
            raise PolicyInputError(f"noise_scale: expected a finite number >= 0, got {noise_scale!r}")
        self.noise_scale = noise_scale
        self.num_steps = config.flow.num_inference_steps if num_steps is None else _check_num_steps(num_steps)
        self.model = model.eval()
        self.config = config
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.device = next(model.parameters()).device
        self._text_encoder = text_encoder
        self._text_cache: dict[str, torch.Tensor] = {}  # prompt -> [l, e] real tokens
        self._lock = threading.Lock()
        self._episode_gen: torch.Generator | None = None  # set by reset(seed=...)
        self.robots: dict[str, RobotSpec] = {}
        for i, src in enumerate(norm_stats.get("sources", [])):
            self._add_source(src, f"norm_stats sources[{i}]")

    # -- construction ----------------------------------------------------------------------------
    def _add_source(self, src: dict[str, Any], where: str) -> None:
        m = self.config.model
        try:
            robot_type, stats = src["robot_type"], src["stats"]
        except KeyError as e:
            raise ValueError(f"{where}: missing key {e.args[0]!r} (expected robot_type, embodiment_id, stats)") from None
        emb = get_embodiment(robot_type)
        emb_id = int(src.get("embodiment_id", emb.id))
        check_num_embodiments(Embodiment(emb.robot_type, emb_id, emb.state_names, emb.action_names,
                                         emb.delta_mask, emb.fps, emb.cameras), m.num_embodiments)
        for what, have, dim in (("state", emb.state_dim, m.state_dim), ("action", emb.action_dim, m.action_dim)):
            if have > dim:
                raise ValueError(f"{where}: {robot_type!r} has {have} {what} dims but model.{what}_dim={dim}")
        normalizer = Normalizer(stats, self.config.data.normalization)
        if normalizer.state_dim != emb.state_dim or normalizer.action_dim != emb.action_dim:
            raise ValueError(f"{where}: statistics have {normalizer.state_dim} state / {normalizer.action_dim} "
                             f"action dims, embodiment {robot_type!r} has {emb.state_dim} / {emb.action_dim}")
        cams = src.get("cameras") or self.config.data.cameras or emb.cameras
        env_state = None
        if "environment_state" in src:
            es = src["environment_state"]
            if not isinstance(es, dict) or "mean" not in es or "std" not in es:
                raise ValueError(f"{where}: environment_state must be a dict with 'mean' and 'std', got {es!r}")
            mean, std = np.asarray(es["mean"], np.float64), np.asarray(es["std"], np.float64)
            if mean.shape != (m.aux_dim,) or std.shape != (m.aux_dim,):
                raise ValueError(f"{where}: environment_state mean/std must have model.aux_dim={m.aux_dim} entries, "
                                 f"got {list(mean.shape)} / {list(std.shape)}")
            env_state = (mean, std)
        self.robots[robot_type] = RobotSpec(emb, emb_id, normalizer, tuple(camera_name(c) for c in cams), env_state)

    @classmethod
    def from_model(cls, model: WorldActionModel, config: Config, norm_stats: dict[str, Any],
                   text_encoder: TextEncoder | None = None) -> Policy:
        """An in-process policy around an already built model (tests, notebooks, training-time eval)."""
        return cls(model, config, norm_stats, text_encoder=text_encoder)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True,
                        text_encoder: TextEncoder | None = None, vae: str | Path | None = None,
                        noise_scale: float = 1.0, num_steps: int | None = None) -> Policy:
        """Load a checkpoint directory, or a training run directory (its latest complete checkpoint).

        ``vae``: the Wan 2.2 VAE folder (diffusers ``AutoencoderKLWan``), required by checkpoints whose
        ``model.video_tokenizer`` is ``wan2.2-vae``; the VAE is not part of our checkpoints.
        """
        from gigaworld_policy.checkpoint import load_checkpoint, load_model_weights
        from gigaworld_policy.model.wan import video_tokenizer_for

        config, weights, norm_stats, ckpt_dir = load_checkpoint(path, ema=use_ema)
        model = WorldActionModel(config, video_tokenizer=video_tokenizer_for(config.model, vae, device=device))
        load_model_weights(model, weights, where=str(ckpt_dir))
        model.to(device)
        return cls(model, config, norm_stats, text_encoder=text_encoder, checkpoint=ckpt_dir, noise_scale=noise_scale,
                   num_steps=num_steps)

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            m = self.config.model
            self._text_encoder = build_text_encoder(self.config.data.text_encoder, max_tokens=m.max_text_tokens,
                                                    dim=m.text_dim)
        return self._text_encoder

    # -- public API ------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What a robot needs to know: per robot type cameras, tile sizes, dims, rate; chunk length."""
        m, d = self.config.model, self.config.data
        robots = {}
        for rt, spec in self.robots.items():
            boxes = tile_boxes(d.view_layout, len(spec.cameras), m.image_height, m.image_width)
            emb = spec.embodiment
            robots[rt] = {
                "embodiment_id": spec.embodiment_id, "cameras": list(spec.cameras),
                "image_sizes": {c: [b[2], b[3]] for c, b in zip(spec.cameras, boxes)},
                "state_dim": emb.state_dim, "action_dim": emb.action_dim,
                "state_names": list(emb.state_names), "action_names": list(emb.action_names),
                "delta_mask": list(emb.delta_mask), "control_rate_hz": emb.fps,
            }
        return {"config_name": self.config.name, "checkpoint": self.checkpoint, "robot_types": robots,
                "chunk_length": m.action_horizon, "image_size": [m.image_height, m.image_width],
                "num_future_frames": m.num_future_frames if m.attention_mode != "no_video" else 0,
                "image_dtype": "uint8", "image_layout": "HWC", "attention_mode": m.attention_mode,
                "num_steps": self.num_steps}

    def reset(self, seed: int | None = None) -> None:
        """New episode. Each chunk depends on the current observation only; prompt embeddings stay cached.
        ``seed``: the episode's calls that pass neither ``noise`` nor ``seed`` draw their initial noise from
        a generator seeded with it, so a rollout replays exactly (closed-loop evaluation passes the episode
        seed); None: from torch's global generator."""
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise PolicyInputError(f"reset 'seed': expected an int or None, got {type(seed).__name__}")
        self._episode_gen = torch.Generator().manual_seed(seed % (1 << 63)) if seed is not None else None

    def infer(self, observation: dict[str, Any], *, return_video: bool = False, num_steps: int | None = None,
              noise: np.ndarray | torch.Tensor | None = None, seed: int | None = None) -> dict[str, Any]:
        """Observation in robot units -> {"actions": float32 [t, a] absolute, "timing": {...}[, "video"]}.

        ``noise`` [t, model.action_dim] (or [1, t, action_dim]) fixes the initial action noise; else
        ``seed`` seeds it (and the video noise); else it is random.
        """
        t0 = time.perf_counter()
        spec, images, state, prompt = self._validate(observation)
        num_steps = self.num_steps if num_steps is None else _check_num_steps(num_steps)
        batch = self._preprocess(spec, images, state)
        action_noise, video_noise = self._initial_noise(noise, seed, return_video)
        t1 = time.perf_counter()
        with self._lock:
            self._add_prompt(batch, prompt)
            frames = None
            if return_video:
                actions, latents = self.model.generate(batch, num_steps=num_steps, noise=action_noise,
                                                       video_noise=video_noise, use_cache=True)
                frames = self.model.decode_video(latents)  # [1, f, 3, h, w] in [-1, 1]
            else:
                actions = self.model.predict_actions(batch, num_steps=num_steps, noise=action_noise, use_cache=True)
        t2 = time.perf_counter()
        emb = spec.embodiment
        norm_actions = actions[0, :, :emb.action_dim].float().cpu().numpy()
        out: dict[str, Any] = {"actions": spec.normalizer.unnormalize_actions(norm_actions, state)}
        if frames is not None:
            video = ((frames[0].float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
            out["video"] = video.permute(0, 2, 3, 1).contiguous().numpy()  # [f, h, w, 3]
        t3 = time.perf_counter()
        out["timing"] = {"preprocess_ms": _ms(t0, t1), "model_ms": _ms(t1, t2), "postprocess_ms": _ms(t2, t3),
                         "total_ms": _ms(t0, t3)}
        return out

    def predict_environment_state(self, observation: dict[str, Any]) -> np.ndarray:
        """The auxiliary head's reading of the scene state (model.aux_dim; for Meta-World data the object's
        position) from the observation, float64 [aux_dim] in the dataset's units: a probe of what the image
        tokens carry. ``infer`` never runs the head. Raises PolicyInputError if the checkpoint has none."""
        spec, images, state, prompt = self._validate(observation)
        if spec.environment_state is None:
            raise PolicyInputError(f"'robot_type': this checkpoint has no auxiliary scene-state head for "
                                   f"{observation['robot_type']!r} (trained with model.aux_dim={self.config.model.aux_dim})")
        batch = self._preprocess(spec, images, state)
        with self._lock:
            self._add_prompt(batch, prompt)
            pred = self.model.observe_aux(batch)[0].double().cpu().numpy()
        mean, std = spec.environment_state
        return pred * std + mean

    def reference_features(self, observation: dict[str, Any]) -> np.ndarray:
        """The reference-frame tokens' last-layer hidden states, float32 [n_ref, D], for the observation: a
        probe of what the image tokens carry, for any checkpoint (``infer`` does not return them)."""
        spec, images, state, prompt = self._validate(observation)
        batch = self._preprocess(spec, images, state)
        with self._lock:
            self._add_prompt(batch, prompt)
            return self.model.observe_reference(batch)[0].float().cpu().numpy()

    # -- steps -----------------------------------------------------------------------------------
    def _validate(self, obs: Any) -> tuple[RobotSpec, dict[str, np.ndarray], np.ndarray, str]:
        if not isinstance(obs, dict):
            raise PolicyInputError(f"observation: expected a dict with keys {list(OBS_KEYS)}, got {type(obs).__name__}")
        missing = [k for k in OBS_KEYS if k not in obs]
        if missing:
            raise PolicyInputError(f"observation: missing key(s) {missing} (expected {list(OBS_KEYS)}; "
                                   f"got {sorted(map(str, obs))})")
        robot_type = obs["robot_type"]
        if not isinstance(robot_type, str):
            raise PolicyInputError(f"'robot_type': expected a str, got {type(robot_type).__name__}")
        if robot_type not in EMBODIMENTS:
            raise PolicyInputError(f"'robot_type': unknown robot type {robot_type!r}; known robot types: "
                                   f"{sorted(EMBODIMENTS)}")
        if robot_type not in self.robots:
            raise PolicyInputError(f"'robot_type': this checkpoint has no normalization statistics for "
                                   f"{robot_type!r} (it serves {sorted(self.robots)})")
        spec = self.robots[robot_type]
        prompt = obs["prompt"]
        if not isinstance(prompt, str):
            raise PolicyInputError(f"'prompt': expected a str, got {type(prompt).__name__}")
        images = obs["images"]
        if not isinstance(images, dict):
            raise PolicyInputError(f"'images': expected a dict {{camera: uint8 [H, W, 3]}}, got {type(images).__name__}")
        given = {camera_name(str(k)): v for k, v in images.items()}
        picked: dict[str, np.ndarray] = {}
        for cam in spec.cameras:
            if cam not in given:
                raise PolicyInputError(f"'images': missing camera {cam!r} for robot type {robot_type!r} (expects "
                                       f"{list(spec.cameras)}, got {sorted(given)})")
            img = given[cam]
            where = f"'images.{cam}'"
            if not isinstance(img, np.ndarray):
                raise PolicyInputError(f"{where}: expected a numpy uint8 array [H, W, 3], got {type(img).__name__}")
            if img.dtype != np.uint8:
                raise PolicyInputError(f"{where}: expected dtype uint8 [H, W, 3], got {img.dtype}")
            if img.ndim != 3 or img.shape[2] != 3 or not all(0 < n <= MAX_IMAGE_SIDE for n in img.shape[:2]):
                raise PolicyInputError(f"{where}: expected shape [H, W, 3] with 0 < H, W <= {MAX_IMAGE_SIDE}, "
                                       f"got {list(img.shape)}")
            picked[cam] = img
        state = obs["state"]
        emb = spec.embodiment
        try:
            state = np.asarray(state, dtype=np.float64)
        except (TypeError, ValueError):
            raise PolicyInputError(f"'state': expected a float array [{emb.state_dim}], got {type(obs['state']).__name__}") from None
        if state.shape != (emb.state_dim,):
            raise PolicyInputError(f"'state': expected shape [{emb.state_dim}] for robot type {robot_type!r}, "
                                   f"got {list(state.shape)}")
        if not np.isfinite(state).all():
            bad = np.flatnonzero(~np.isfinite(state)).tolist()
            raise PolicyInputError(f"'state': contains NaN or inf at dims {bad} ({[emb.state_names[j] for j in bad]})")
        return spec, picked, state, prompt

    def _preprocess(self, spec: RobotSpec, images: dict[str, np.ndarray], state: np.ndarray) -> dict[str, torch.Tensor]:
        m = self.config.model
        norm_state = pad_last(spec.normalizer.normalize_state(state), m.state_dim, what="state")
        image = compose_views_sequence([images], self.config, cameras=spec.cameras, train=False)  # [1, 3, h, w]
        return {"state": torch.from_numpy(norm_state)[None].float().to(self.device),
                "image": image.to(self.device),
                "embodiment_id": torch.tensor([spec.embodiment_id], dtype=torch.int64, device=self.device)}

    def _initial_noise(self, noise: np.ndarray | torch.Tensor | None, seed: int | None, return_video: bool
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        m = self.config.model
        shape = (1, m.action_horizon, m.action_dim)
        gen = self._episode_gen if noise is None else None
        if seed is not None:
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise PolicyInputError(f"'seed': expected an int, got {type(seed).__name__}")
            gen = torch.Generator().manual_seed(seed % (1 << 63))
        if noise is not None:
            a = torch.as_tensor(np.asarray(noise) if not isinstance(noise, torch.Tensor) else noise, dtype=torch.float32)
            if a.ndim == 2:
                a = a[None]
            if tuple(a.shape) != shape:
                raise PolicyInputError(f"'noise': expected shape [{shape[1]}, {shape[2]}], got {list(a.shape)}")
        elif gen is not None:
            a = torch.randn(shape, generator=gen) * self.noise_scale
        elif self.noise_scale != 1.0:
            a = torch.randn(shape) * self.noise_scale
        else:
            a = None
        v = None
        if return_video and gen is not None:
            lh, lw = m.latent_hw
            v = torch.randn((1, self.model.video_tokenizer.latent_channels, m.future_latent_frames, lh, lw),
                            generator=gen).to(self.device)
        return (a.to(self.device) if a is not None else None), v

    def _add_prompt(self, batch: dict[str, torch.Tensor], prompt: str) -> None:
        """Put the prompt's ``text`` [1, l, e] and ``text_mask`` [1, l] into ``batch`` (under the lock)."""
        text = self._prompt_embedding(prompt)
        batch["text"] = text[None].to(self.device)
        batch["text_mask"] = torch.ones(1, text.shape[0], dtype=torch.bool, device=self.device)

    def _prompt_embedding(self, prompt: str) -> torch.Tensor:
        """[l, e] real-token embeddings, truncated to model.max_text_tokens (as in training); cached."""
        emb = self._text_cache.get(prompt)
        if emb is None:
            e, mask = self.text_encoder.encode([prompt])
            emb = e[0][mask[0]][: self.config.model.max_text_tokens].float().cpu().contiguous()
            if emb.shape[0] == 0:
                raise PolicyInputError(f"'prompt': {prompt!r} encodes to no tokens")
            if len(self._text_cache) >= MAX_CACHED_PROMPTS:  # bounded: prompts come from the network
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[prompt] = emb
        return emb

    @property
    def text_cache_size(self) -> int:
        return len(self._text_cache)
