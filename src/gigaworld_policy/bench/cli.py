"""`gwp bench <what>`: benchmarks. Each lives in its own module with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, tuple[str, str]] = {
    "latency": ("gigaworld_policy.bench.latency", "action-chunk latency: joint vs action-only vs cached"),
    "data": ("gigaworld_policy.bench.data", "training DataLoader samples/s"),
    "sim": ("gigaworld_policy.bench.sim", "simulator and rendering steps/s, expert success"),
    "train": ("gigaworld_policy.bench.train", "training throughput"),
    "serve": ("gigaworld_policy.bench.serve", "policy-server request latency"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="WHAT")
    sub.required = True
    for name, (module, help_text) in BENCHES.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_bench_module=module)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.startswith("gigaworld_policy"):
                sp.set_defaults(_bench_missing=str(e))
                continue
            raise
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(sp)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_bench_missing", None):
        raise SystemExit(f"bench {args.bench!r} is not available ({args._bench_missing})")
    return int(importlib.import_module(args._bench_module).run(args) or 0)
