"""`gwp <command>`: the command-line entry point.

Each command lives next to the code it drives and exposes ``add_arguments(parser)`` and ``run(args)``;
this file only lists them, so importing the CLI stays cheap (torch is imported by the command).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gigaworld_policy.demo", "collect, train, evaluate and report on a small Meta-World set (CPU)"),
    "bench": ("gigaworld_policy.bench.cli", "benchmarks: latency, data, train, sim, serve"),
    "collect": ("gigaworld_policy.sim.collect", "record scripted expert demos as a LeRobot v3.0 dataset"),
    "eval": ("gigaworld_policy.sim.evaluate", "closed-loop evaluation of a policy in simulation"),
    "stats": ("gigaworld_policy.data.stats", "normalization statistics of LeRobot datasets"),
    "encode-text": ("gigaworld_policy.data.text_cache", "precompute prompt embeddings for a dataset"),
    "cache-latents": ("gigaworld_policy.data.latent_cache", "precompute training video latents for a dataset"),
    "train": ("gigaworld_policy.train.cli", "train or fine-tune a policy"),
    "serve": ("gigaworld_policy.serve.server", "WebSocket policy server"),
    "replay": ("gigaworld_policy.serve.replay", "open-loop evaluation against a recorded episode"),
    "presets": ("gigaworld_policy.config_cli", "list presets and print their configs"),
}


def add_lazy_subcommands(parser: argparse.ArgumentParser, table: dict[str, tuple[str, str]], *, dest: str,
                         metavar: str) -> None:
    """One sub-command per ``table`` entry (name -> (module, help)); each module adds its own arguments.

    A module of this package that is missing from the build leaves its command listed but refusing to
    run (``_missing``); any other import error propagates.
    """
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    for name, (module, help_text) in table.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.startswith("gigaworld_policy"):
                p.set_defaults(_missing=str(e))
                continue
            raise
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwp", description="GigaWorld-Policy: action-centered world-action model")
    add_lazy_subcommands(parser, COMMANDS, dest="command", metavar="COMMAND")
    return parser


def input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (a config field, a dataset file, a checkpoint, a task or robot
    name): each message already names what is wrong, so the CLI prints it without a traceback."""
    from gigaworld_policy.checkpoint import CheckpointError
    from gigaworld_policy.config import ConfigError
    from gigaworld_policy.data.embodiments import EmbodimentError
    from gigaworld_policy.data.errors import DatasetError
    from gigaworld_policy.model.batch import BatchError
    from gigaworld_policy.policy import PolicyInputError
    from gigaworld_policy.sim.common import SimError

    return (CheckpointError, ConfigError, DatasetError, EmbodimentError, BatchError, PolicyInputError, SimError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        parser.error(f"command {args.command!r} is not available in this build ({args._missing})")
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except input_errors() as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"gwp {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
