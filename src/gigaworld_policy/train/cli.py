"""`gwp train`: train or fine-tune a policy (one process, or several under ``torchrun``).

  gwp train --preset tiny --data DIR[,DIR...] --steps N --out RUN_DIR [--resume] [--init CKPT]
            [--set section.field=value ...] [--weights w1,w2] [--latent-cache [DIR[,DIR...]]]
  torchrun --nproc_per_node 8 -m gigaworld_policy.cli train --preset wan2.2-5b ...

Two-stage recipe: see gigaworld_policy/train/init.py.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="config preset (gwp presets lists them)")
    p.add_argument("--data", default=None, help="LeRobot v3.0 dataset roots, comma-separated (a mixture)")
    p.add_argument("--weights", default=None, help="mixture weights, comma-separated, one per --data root")
    p.add_argument("--synthetic", action="store_true", help="random example batches instead of --data (smoke runs)")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps of the run")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its latest checkpoint")
    p.add_argument("--init", default=None, help="initialize weights from a checkpoint or run directory")
    p.add_argument("--init-wan", default=None, help="initialize the backbone from a Wan 2.2 transformer directory")
    p.add_argument("--vae", default=None,
                   help="Wan 2.2 VAE directory (diffusers AutoencoderKLWan) for presets with video_tokenizer=wan2.2-vae")
    p.add_argument("--latent-cache", nargs="?", const="", default=None, metavar="DIR[,DIR...]",
                   help="train on cached latents (gwp cache-latents): one cache directory per --data root, "
                        "comma-separated; bare: each root's ROOT/gwp_latents. Needs --set data.augment=false")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override (repeatable)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (with a checkpoint) after this")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per rank and step")
    p.add_argument("--holdout-episodes", type=int, default=1, help="held-out episodes per dataset for evaluation")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.train.distributed import shutdown_distributed
    from gigaworld_policy.train.trainer import train

    if args.init and args.init_wan:
        raise SystemExit("gwp train: use either --init or --init-wan")
    if args.data is None and not args.synthetic:
        raise SystemExit("gwp train: --data DIR[,DIR...] is required (or --synthetic)")
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    latent_cache = None
    if args.latent_cache is not None:
        from gigaworld_policy.data.latent_cache import default_cache_dir

        if args.data is None:
            raise SystemExit("gwp train: --latent-cache needs --data")
        roots = [r for r in args.data.split(",") if r]
        latent_cache = ([d for d in args.latent_cache.split(",") if d] if args.latent_cache
                        else [str(default_cache_dir(r)) for r in roots])
    try:
        summary = train(cfg, args.data, args.steps, args.out, resume=args.resume, init=args.init,
                        init_wan=args.init_wan, max_minutes=args.max_minutes, weights=weights,
                        grad_accum=args.grad_accum, device=args.device, holdout_episodes=args.holdout_episodes,
                        progress=not args.no_progress, synthetic=args.synthetic, vae=args.vae,
                        latent_cache=latent_cache)
    finally:
        shutdown_distributed()
    if summary.final_step >= 0:
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({k: v for k, v in summary.__dict__.items() if k != "init_report"}, indent=2))
    return 0
