"""`gwp presets [NAME] [--set section.field=value ...]`: list presets or print one config as JSON."""

from __future__ import annotations

import argparse

from gigaworld_policy.config import PRESETS, apply_overrides, get_preset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="preset to print (omit to list all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        for name, cfg in PRESETS.items():
            m = cfg.model
            print(f"{name:16s} layers={m.num_layers} dim={m.dim} heads={m.num_heads} "
                  f"chunk={m.action_horizon} mode={m.attention_mode} tokenizer={m.video_tokenizer}")
        return 0
    print(apply_overrides(get_preset(args.name), args.overrides).to_json())
    return 0
