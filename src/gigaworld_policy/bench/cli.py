"""`gwp bench <what>`: benchmarks. Each lives in its own module with ``add_arguments`` and ``run``;
`gwp` dispatches to the leaf module directly (its sub-parser default ``_module`` wins)."""

from __future__ import annotations

import argparse

BENCHES: dict[str, tuple[str, str]] = {
    "latency": ("gigaworld_policy.bench.latency", "action-chunk latency: joint vs action-only vs cached"),
    "data": ("gigaworld_policy.bench.data", "training DataLoader samples/s"),
    "sim": ("gigaworld_policy.bench.sim", "simulator and rendering steps/s, expert success"),
    "train": ("gigaworld_policy.bench.train", "training throughput"),
    "serve": ("gigaworld_policy.bench.serve", "policy-server request latency"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gigaworld_policy.cli import add_lazy_subcommands

    add_lazy_subcommands(p, BENCHES, dest="bench", metavar="WHAT")
