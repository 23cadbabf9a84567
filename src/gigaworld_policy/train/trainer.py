"""The training loop: ``train(cfg, data_sources, steps, out_dir, ...)`` (used by ``gwp train`` and the demo).

Run directory::

  RUN_DIR/checkpoints/step_XXXXXXXX/   gigaworld_policy.checkpoint format + train_state/ (state.py)
  RUN_DIR/latest                       newest complete checkpoint
  RUN_DIR/run_config.json              the config of the run (the checkpoints carry it too)
  RUN_DIR/metrics.jsonl                one record per step (and per evaluation); rewritten on resume so
                                       it holds exactly the steps of the resumed history
  RUN_DIR/tb/                          TensorBoard scalars
  RUN_DIR/eval/                        open-loop evaluation plots (PNG)
  RUN_DIR/init_report.json             what --init loaded and what was newly initialized
  RUN_DIR/provenance.json              each launch's commit and step range, the data and how it was made

Exactness: step ``s`` sees data, augmentation and flow-matching noise that are pure functions of
(seed, s, rank, micro-batch); weights, EMA, optimizer and scheduler are restored bit for bit; so on CPU a
run killed at any moment and resumed logs the same losses as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gigaworld_policy.checkpoint import (
    CHECKPOINTS,
    MANIFEST,
    load_model_weights,
    resolve_checkpoint,
    save_checkpoint,
    update_latest,
    verify_checkpoint,
)
from gigaworld_policy.config import Config
from gigaworld_policy.data.windowed import DataSource
from gigaworld_policy.model.tokenizers import VideoTokenizer
from gigaworld_policy.provenance import record_launch
from gigaworld_policy.train import state as tstate
from gigaworld_policy.train.batches import BatchProvider, DatasetBatches, SyntheticBatches
from gigaworld_policy.train.data import (
    derive_seed,
    norm_stats_entries,
    open_datasets,
    parse_sources,
    split_episodes,
)
from gigaworld_policy.train.distributed import (
    DistInfo,
    autocast_dtype,
    barrier,
    build_model,
    init_distributed,
    unwrap,
    use_fsdp,
)
from gigaworld_policy.train.ema import EMA
from gigaworld_policy.train.init import init_from_checkpoint, init_from_wan
from gigaworld_policy.train.schedule import build_optimizer, build_scheduler


@dataclass
class TrainSummary:
    run_dir: str
    start_step: int
    final_step: int
    steps_run: int
    skipped_steps: int
    last_loss: float | None
    checkpoint: str | None
    stopped_by_time: bool
    wall_s: float
    samples_per_s: float
    eval: dict[str, float] = field(default_factory=dict)
    init_report: dict[str, Any] | None = None


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


class Trainer:
    """One rank's training state: wrapped model, EMA, optimizer, schedule, counters."""

    def __init__(self, cfg: Config, info: DistInfo, total_steps: int, *, grad_accum: int = 1,
                 video_tokenizer: VideoTokenizer | None = None) -> None:
        """``video_tokenizer``: the frozen tokenizer for configs whose tokenizer has weights (the Wan VAE,
        ``model.wan.wan_vae_tokenizer``); it stays outside the trained, sharded and checkpointed parameters."""
        self.cfg, self.info, self.total_steps, self.accum = cfg, info, total_steps, grad_accum
        self.fsdp = use_fsdp(cfg)
        self.wrapped = build_model(cfg, info)
        self.model = unwrap(self.wrapped)
        if video_tokenizer is not None:
            self.model.set_video_tokenizer(video_tokenizer.to(info.device))
        _ = self.model.video_tokenizer  # a config whose tokenizer needs weights fails here, naming the field
        self.model.gradient_checkpointing = bool(cfg.train.gradient_checkpointing)
        self.optimizer = build_optimizer(list(self.wrapped.parameters()), cfg.train, info.device)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, total_steps)
        self.ema = EMA(self.model, cfg.train.ema_decay)
        self.amp = None if self.fsdp else autocast_dtype(cfg, info.device)
        self.step = 0
        self.skipped = 0

    def reset_ema(self) -> None:
        self.ema = EMA(self.model, self.cfg.train.ema_decay)

    # -- one optimizer step ---------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Forward/backward over the micro-batches, then clip and step unless the loss or grads are not
        finite (then the update is skipped and counted). Advances ``self.step`` either way."""
        info, dev = self.info, self.info.device
        self.wrapped.train()
        names = ("loss", "action_loss", "video_loss", "aux_loss", "world_model_fraction")
        terms = torch.zeros(len(names), dtype=torch.float64)
        for k, batch in enumerate(micro_batches):
            batch = {key: v.to(dev, non_blocking=True) for key, v in batch.items()}
            g = torch.Generator().manual_seed(derive_seed(self.cfg.train.seed, self.step, 3,
                                                          info.rank * self.accum + k))
            sync = k == len(micro_batches) - 1 or not hasattr(self.wrapped, "no_sync")
            ctx = self.wrapped.no_sync() if not sync else _nullcontext()
            with ctx, torch.autocast(dev.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                out = self.wrapped(batch, g)
                (out["loss"] / len(micro_batches)).backward()
            terms += torch.stack([out[n].detach().double().cpu() for n in names])
        terms /= len(micro_batches)
        if info.distributed:
            dist.all_reduce(terms, op=dist.ReduceOp.SUM)
            terms /= info.world_size
        params = [p for p in self.wrapped.parameters() if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip, error_if_nonfinite=False)
        gnorm = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
        finite = math.isfinite(float(terms[0])) and math.isfinite(gnorm)
        lr = self.scheduler.get_last_lr()[0]
        if finite:
            self.optimizer.step()
            self.ema.update(self.model, self.step)
        else:
            self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        rec: dict[str, Any] = {n: float(x) for n, x in zip(names, terms)}
        if not self.cfg.model.aux_dim:
            del rec["aux_loss"]  # metrics.jsonl of runs without the head stay as they were
        return {**rec, "grad_norm": gnorm, "lr": lr, "skipped": not finite}

    # -- state ----------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        """Full fp32 weights (collective under FSDP2; every rank returns them)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def ema_state(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ema = self.ema.full_state_dict(list(model_state))
        return {k: ema.get(k, v) for k, v in model_state.items()}  # buffers (if any) from the model

    def train_state(self, sampler: dict[str, Any]) -> dict[str, Any]:
        sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        return {"step": self.step, "skipped_steps": self.skipped, "world_size": self.info.world_size,
                "grad_accum": self.accum, "total_steps": self.total_steps, "sampler": sampler, "scheduler": sched}

    def load(self, ckpt: Path) -> dict[str, Any]:
        """Restore weights, EMA, optimizer, scheduler, counters (and rank 0's RNG) from ``ckpt``."""
        from safetensors.torch import load_file

        verify_checkpoint(ckpt)
        doc, opt_sd, rng = tstate.read_train_state(ckpt)
        ema_file = ckpt / "ema.safetensors"
        if self.fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            msd, osd = get_state_dict(self.wrapped, self.optimizer)
            sd = {"model": msd, "optim": osd}
            # Parameters that never had a gradient (rows of embodiments absent so far) have no optimizer
            # state in the checkpoint; get_state_dict created zero state for them, which is what AdamW
            # would start from anyway.
            from torch.distributed.checkpoint import DefaultLoadPlanner

            dcp.load(sd, checkpoint_id=str(ckpt / tstate.TRAIN_STATE / tstate.DCP_DIR),
                     planner=DefaultLoadPlanner(allow_partial_load=True))
            set_state_dict(self.wrapped, self.optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        else:
            weights = _read_safetensors(ckpt / "model.safetensors", load_file)
            load_model_weights(self.model, weights, where=str(ckpt / "model.safetensors"))
            if opt_sd is None:
                raise tstate.CheckpointError(f"{ckpt / tstate.TRAIN_STATE / tstate.OPTIMIZER_FILE}: missing")
            try:
                self.optimizer.load_state_dict(opt_sd)
            except (ValueError, KeyError) as e:
                raise tstate.CheckpointError(f"{ckpt / tstate.TRAIN_STATE / tstate.OPTIMIZER_FILE}: does not fit "
                                             f"this model/optimizer ({e})") from e
        if ema_file.is_file():
            self.ema.load_full_state_dict(_read_safetensors(ema_file, load_file))
        sched = dict(doc["scheduler"], lr_lambdas=[None] * len(self.optimizer.param_groups))
        self.scheduler.load_state_dict(sched)
        self.step, self.skipped = int(doc["step"]), int(doc.get("skipped_steps", 0))
        if self.info.is_main:
            tstate.restore_rng(rng, doc["rng"])
        return doc

    def save(self, run_dir: Path, norm_stats: dict[str, Any], sampler: dict[str, Any]) -> Path:
        """Write ``checkpoints/step_XXXXXXXX`` (collective), point ``latest`` at it, prune old ones."""
        ckpt = run_dir / CHECKPOINTS / checkpoint_name(self.step)
        model_state = self.model_state()
        ema_state = self.ema_state(model_state)
        dcp_dir = None
        if self.fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            dcp_dir = run_dir / CHECKPOINTS / f".dcp-{checkpoint_name(self.step)}"
            msd, osd = get_state_dict(self.wrapped, self.optimizer)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(dcp_dir))
            barrier(self.info)
        if self.info.is_main:
            doc = self.train_state(sampler)

            def extra(tmp: Path) -> None:
                ts = tmp / tstate.TRAIN_STATE
                tstate.write_train_state(ts, state=doc, optimizer_sd=None if self.fsdp else self.optimizer.state_dict())
                if dcp_dir is not None:
                    os.replace(dcp_dir, ts / tstate.DCP_DIR)

            save_checkpoint(ckpt, config=self.cfg, model_state=model_state, norm_stats=norm_stats,
                            ema_state=ema_state, extra_writer=extra)
            update_latest(run_dir, ckpt)
            prune_checkpoints(run_dir, self.cfg.train.keep_checkpoints)
        barrier(self.info)
        return ckpt


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _read_safetensors(path: Path, load_file: Any) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for bad headers / short files
        raise tstate.CheckpointError(f"{path}: cannot be read as safetensors ({e})") from e


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and leftovers of killed writes."""
    root = run_dir / CHECKPOINTS
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and ".tmp-" not in p.name
                      and (p / MANIFEST).is_file())
    for p in complete[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def clean_partial_writes(run_dir: Path) -> None:
    """Remove ``step_*.tmp-<pid>`` / ``.dcp-*`` directories left by a killed run (never published)."""
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for p in list(root.glob("step_*.tmp-*")) + list(root.glob(".dcp-*")):
            shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob("latest.tmp-*"):
        p.unlink(missing_ok=True)


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line, flushed per step) + TensorBoard scalars."""

    def __init__(self, run_dir: Path, start_step: int, log_every: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        kept = []
        if self.path.exists():  # drop steps logged after the checkpoint we resume from, and torn lines
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) < start_step or (rec.get("kind") == "eval" and rec.get("step", 0) <= start_step):
                    kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        self.file = open(self.path, "a")
        self.log_every = max(1, log_every)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        step = int(record["step"])
        if record.get("kind") == "eval" or step % self.log_every == 0:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def train(cfg: Config, data_sources: str | Sequence[str | DataSource] | None, steps: int, out_dir: str | Path, *,
          resume: bool = False, init: str | Path | None = None, init_wan: str | Path | None = None,
          max_minutes: float | None = None, weights: Sequence[float] | None = None, grad_accum: int = 1,
          device: str = "auto", holdout_episodes: int = 1, eval_frames: int = 4, progress: bool = True,
          synthetic: bool = False, vae: str | Path | None = None,
          latent_cache: Sequence[str | Path] | None = None) -> TrainSummary:
    """Train ``cfg`` for ``steps`` optimizer steps (global batch ``cfg.train.batch_size``) into ``out_dir``.

    ``data_sources``: dataset roots (``"a,b"`` or a list; DataSources carry weights/stats/robot type), or
    None with ``synthetic=True`` (``example_batch`` data, for benchmarks and tests). ``resume`` continues
    from ``out_dir``'s latest checkpoint (the config is taken from it; ``steps`` may extend the run).
    ``init`` loads weights from a checkpoint (new embodiments' rows are newly initialized and reported).
    ``max_minutes`` stops cleanly after the step that crosses the budget, with a final checkpoint.
    ``vae``: the diffusers ``AutoencoderKLWan`` folder for ``model.video_tokenizer='wan2.2-vae'`` (required with
    data; a synthetic run without it uses the architecture with random weights).
    ``latent_cache``: one ``gwp cache-latents`` directory per data source (same order): training samples then
    carry cached ``latents`` and the VAE encoder never runs in a step (needs ``data.augment=false``; held-out
    evaluation still decodes and encodes pixels, so ``vae`` is still required).
    Run under ``torchrun`` for several processes; returns the same summary on every rank.
    """
    t0 = time.monotonic()
    run_dir = Path(out_dir)
    info = init_distributed(device)
    resume_from = latest_checkpoint(run_dir) if resume else None
    if resume_from is not None:
        from gigaworld_policy.checkpoint import load_config

        cfg = load_config(resume_from)  # the checkpoint's config wins: a resumed run is the same run
    elif resume and info.is_main:
        print(f"resume: {run_dir} has no complete checkpoint yet; starting from step 0")
    from gigaworld_policy.model.wan import video_tokenizer_for

    tokenizer = video_tokenizer_for(cfg.model, vae, device=info.device, allow_random=synthetic)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        clean_partial_writes(run_dir)
        (run_dir / "run_config.json").write_text(cfg.to_json())
    barrier(info)
    trainer = Trainer(cfg, info, steps, grad_accum=grad_accum, video_tokenizer=tokenizer)
    provider: BatchProvider
    eval_ds = split = None
    if synthetic or data_sources is None:
        if not synthetic:
            raise ValueError("train: no data sources (pass --data DIR[,DIR...])")
        if latent_cache is not None:
            raise ValueError("train: latent_cache (--latent-cache) needs data sources, not synthetic batches")
        provider = SyntheticBatches(cfg, rank=info.rank, world_size=info.world_size, grad_accum=grad_accum,
                                    device=info.device)
        norm_stats: dict[str, Any] = {"sources": []}
        data_description: list[dict[str, Any]] = []
    else:
        sources = parse_sources(data_sources, weights, latent_cache)
        train_ds, eval_ds = open_datasets(sources, cfg)  # checks each latent cache's geometry
        for src in sources:
            if src.latent_cache is not None:  # ... and here that this run's VAE wrote it
                from gigaworld_policy.data.latent_cache import LatentCache

                LatentCache(src.latent_cache).check_tokenizer(trainer.model.video_tokenizer)
        split = split_episodes(train_ds, cfg.train.seed, holdout_episodes)
        provider = DatasetBatches(train_ds, split, cfg, rank=info.rank, world_size=info.world_size,
                                  grad_accum=grad_accum, num_workers=cfg.train.num_workers)
        norm_stats = norm_stats_entries(sources, train_ds)
        data_description = train_ds.describe()
    init_report = None
    if resume_from is not None:
        doc = trainer.load(resume_from)
        provider.check_sampler_state(doc["sampler"], str(resume_from / tstate.TRAIN_STATE))
    elif init is not None or init_wan is not None:
        init_report = (init_from_checkpoint(trainer, init) if init is not None else init_from_wan(trainer, init_wan))
        trainer.reset_ema()  # EMA starts from the initialized weights
        if info.is_main:
            tstate.write_json(run_dir / "init_report.json", init_report)
    start = trainer.step
    if info.is_main:  # how this checkpoint was made, for records that outlive the machine (provenance.py)
        record_launch(run_dir, data=data_description, from_step=start, to_step=steps, world_size=info.world_size,
                      init=None if init is None else str(init), init_wan=None if init_wan is None else str(init_wan))
    log = MetricsLog(run_dir, start, cfg.train.log_every) if info.is_main else None
    bar = None
    if info.is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, desc="train", dynamic_ncols=True)
    last, ckpt_path, stopped, eval_metrics = None, None, False, {}
    seen, t_loop = 0, time.monotonic()
    save_every = max(1, cfg.train.save_every)

    def do_eval() -> dict[str, float]:
        if eval_ds is None or split is None or cfg.train.eval_every <= 0:
            return {}
        return run_eval(trainer, eval_ds, split.heldout, run_dir, eval_frames)

    try:
        for micro in provider.steps(start, steps):
            t_step = time.monotonic()
            rec = trainer.train_step(micro)
            n = cfg.train.batch_size
            seen += n
            rate = seen / max(1e-9, time.monotonic() - t_loop)
            last = rec["loss"]
            if log is not None:
                log.write({"kind": "train", "step": trainer.step - 1, **rec, "samples_per_s": rate,
                           "step_s": time.monotonic() - t_step, "skipped_total": trainer.skipped})
            if bar is not None:
                # tqdm's own ETA counts to the step limit; with a time budget the run ends at whichever comes first
                eta = (steps - trainer.step) * (time.monotonic() - t_loop) / max(1, trainer.step - start)
                if max_minutes is not None:
                    eta = min(eta, max(0.0, 60.0 * max_minutes - (time.monotonic() - t0)))
                bar.set_postfix(loss=f"{rec['loss']:.4f}", act=f"{rec['action_loss']:.4f}",
                                vid=f"{rec['video_loss']:.4f}", lr=f"{rec['lr']:.2e}", sps=f"{rate:.1f}",
                                skip=trainer.skipped, eta=f"{int(eta // 60)}:{int(eta % 60):02d}", refresh=False)
                bar.update(1)
            over = max_minutes is not None and (time.monotonic() - t0) > 60.0 * max_minutes
            over = _agree(over, info)
            if cfg.train.eval_every > 0 and trainer.step % cfg.train.eval_every == 0:
                eval_metrics = do_eval()
                if log is not None and eval_metrics:
                    log.write({"kind": "eval", "step": trainer.step, **eval_metrics})
            if trainer.step % save_every == 0 or trainer.step == steps or over:
                ckpt_path = trainer.save(run_dir, norm_stats, provider.sampler_state(trainer.step))
            if over:
                stopped = True
                break
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    if ckpt_path is None and trainer.step > start:
        ckpt_path = trainer.save(run_dir, norm_stats, provider.sampler_state(trainer.step))
    wall = time.monotonic() - t0
    summary = TrainSummary(run_dir=str(run_dir), start_step=start, final_step=trainer.step,
                           steps_run=trainer.step - start, skipped_steps=trainer.skipped, last_loss=last,
                           checkpoint=str(ckpt_path) if ckpt_path else None, stopped_by_time=stopped, wall_s=wall,
                           samples_per_s=seen / max(1e-9, time.monotonic() - t_loop), eval=eval_metrics,
                           init_report=init_report)
    if info.is_main:
        tstate.write_json(run_dir / "summary.json", asdict(summary))
    return summary


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names (or the newest complete one); None when the run has none."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir() or not any((p / MANIFEST).is_file() for p in root.glob("step_*")):
        return None
    return resolve_checkpoint(run_dir)


def _agree(flag: bool, info: DistInfo) -> bool:
    """Every rank takes rank 0's decision (time budgets differ slightly across processes)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def run_eval(trainer: Trainer, eval_ds: Any, heldout: list[list[int]], run_dir: Path, frames: int) -> dict[str, float]:
    """Open-loop evaluation of the EMA weights on rank 0 (FSDP: the live sharded weights, every rank)."""
    from gigaworld_policy.train.evaluation import eval_indices, open_loop_eval

    idx = eval_indices(eval_ds, heldout, frames)
    out_dir = run_dir / "eval"
    if trainer.fsdp:
        return open_loop_eval(trainer.wrapped, eval_ds, idx, step=trainer.step, device=trainer.info.device,
                              out_dir=out_dir if trainer.info.is_main else None, seed=trainer.cfg.train.seed,
                              video=False)
    metrics: dict[str, float] = {}
    if trainer.info.is_main:
        model: nn.Module = copy.deepcopy(trainer.model)
        state = trainer.ema_state({k: v for k, v in trainer.model.state_dict().items()})
        model.load_state_dict(state)
        with torch.random.fork_rng(devices=[]):
            metrics = open_loop_eval(model, eval_ds, idx, step=trainer.step, out_dir=out_dir,
                                     device=trainer.info.device, seed=trainer.cfg.train.seed)
    barrier(trainer.info)
    return metrics
