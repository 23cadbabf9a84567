"""`gwp bench serve`: end-to-end policy-server request latency over loopback.

Starts ``gwp serve`` in a separate process (a random-weight checkpoint of ``--preset`` unless
``--checkpoint`` is given), sends ``--requests`` sequential requests from one client after a warm-up
and splits each round trip into the server-reported model time, the server's pre/post-processing and
decode time, and the rest (network + client/server serialization + event loop): p50 / p99 of each.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gigaworld_policy.provenance import git_commit

ROBOT = "metaworld_sawyer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_checkpoint(preset: str, text_encoder: str, path: Path) -> Path:
    import torch

    from gigaworld_policy.checkpoint import save_checkpoint
    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.data.embodiments import get_embodiment
    from gigaworld_policy.model.world_action_model import WorldActionModel

    torch.manual_seed(0)
    cfg = apply_overrides(get_preset(preset), [f"data.text_encoder={text_encoder}"])
    emb = get_embodiment(ROBOT)
    s, a = emb.state_dim, emb.action_dim
    stats = {"robot_type": ROBOT, "delta_mask": list(emb.delta_mask), "stats": {
        "observation.state": {"q01": [-1.0] * s, "q99": [1.0] * s, "mean": [0.0] * s, "std": [1.0] * s},
        "action": {"q01": [-1.0] * a, "q99": [1.0] * a, "mean": [0.0] * a, "std": [1.0] * a}}}
    model = WorldActionModel(cfg)
    return save_checkpoint(path, config=cfg, model_state=model.state_dict(),
                           norm_stats={"sources": [{"robot_type": ROBOT, "embodiment_id": emb.id, "stats": stats}]})


def _pct(x: list[float]) -> dict[str, float]:
    a = np.asarray(x)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-small", help="preset of the random-weight checkpoint")
    p.add_argument("--checkpoint", default=None, help="serve this checkpoint instead (robot type: its first)")
    p.add_argument("--text-encoder", default="none", help="text encoder of the generated checkpoint "
                   "(prompts are encoded once and cached, so it does not change the steady state)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64, help="camera image side sent by the client")
    p.add_argument("--num-steps", type=int, default=None, help="denoising steps (default: the config's)")
    p.add_argument("--json", default=None, help="write the results here")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.serve.client import PolicyClient, health

    with tempfile.TemporaryDirectory(prefix="gwp-bench-serve-") as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else _make_checkpoint(args.preset, args.text_encoder,
                                                                             Path(tmp) / "ckpt")
        port = _free_port()
        cmd = [sys.executable, "-m", "gigaworld_policy.cli", "serve", "--checkpoint", str(ckpt), "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while not health("127.0.0.1", port, timeout=1.0):
                if proc.poll() is not None:
                    raise SystemExit(f"gwp serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
                if time.monotonic() > deadline:
                    raise SystemExit("gwp serve did not become healthy within 300 s")
                time.sleep(0.2)
            results = _measure(PolicyClient("127.0.0.1", port), args)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results.update(command="gwp bench serve " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "gwp bench serve",
                   git_commit=git_commit(), checkpoint=args.checkpoint or f"random weights, preset {args.preset}")
    print(_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _measure(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    md = client.metadata
    robot = next(iter(md["robot_types"]))
    spec = md["robot_types"][robot]
    rng = np.random.default_rng(0)
    obs = {"images": {c: rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
                      for c in spec["cameras"]},
           "state": rng.normal(0, 0.1, spec["state_dim"]).astype(np.float32), "prompt": "benchmark the server",
           "robot_type": robot}
    rows: dict[str, list[float]] = {k: [] for k in ("roundtrip", "server", "model", "pre_post", "transport")}
    with client:
        for i in range(args.warmup + args.requests):
            out = client.infer(obs, seed=i, num_steps=args.num_steps)
            if i < args.warmup:
                continue
            t = out["timing"]
            rows["roundtrip"].append(t["roundtrip_ms"])
            rows["server"].append(t["server_ms"])
            rows["model"].append(t["model_ms"])
            rows["pre_post"].append(t["server_ms"] - t["model_ms"])
            rows["transport"].append(t["roundtrip_ms"] - t["server_ms"])
    return {"preset": md.get("config_name"), "robot_type": robot, "chunk_length": md["chunk_length"],
            "requests": args.requests, "image_size": args.image_size, "num_steps": args.num_steps,
            "latency_ms": {k: _pct(v) for k, v in rows.items()}}


def _markdown(r: dict[str, Any]) -> str:
    names = {"roundtrip": "end-to-end round trip (client)", "server": "server time (receive -> reply ready)",
             "model": "model (Policy.infer model_ms)", "pre_post": "server decode + validation + pre/post",
             "transport": "network + serialization + event loop"}
    lines = [f"preset {r['preset']}, robot {r['robot_type']}, chunk {r['chunk_length']}, {r['requests']} requests, "
             f"{r['image_size']}px image, commit {r['git_commit']}", "",
             "| part | p50 ms | p99 ms | mean ms |", "|---|---|---|---|"]
    for k, label in names.items():
        v = r["latency_ms"][k]
        lines.append(f"| {label} | {v['p50']:.2f} | {v['p99']:.2f} | {v['mean']:.2f} |")
    return "\n".join(lines)
