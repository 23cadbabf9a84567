from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_metaworld_dataset
from gigaworld_policy.checkpoint import CheckpointError, load_checkpoint, verify_checkpoint
from gigaworld_policy.config import apply_overrides
from gigaworld_policy.data import DatasetError
from gigaworld_policy.provenance import describe_checkpoint
from gigaworld_policy.train.batches import SyntheticBatches
from gigaworld_policy.train.data import StepBatchSampler, split_episodes
from gigaworld_policy.train.distributed import DistInfo
from gigaworld_policy.train.schedule import lr_multiplier
from gigaworld_policy.train.state import flatten_optimizer_state, unflatten_optimizer_state
from gigaworld_policy.train.trainer import Trainer, train


def losses(run: str | Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, Path(run, "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def test_train_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = tiny_config("train.schedule=cosine")
    a, b = tmp_path / "a", tmp_path / "b"
    first = train(cfg, None, 6, a, synthetic=True, progress=False, max_minutes=0.0)  # stops after one step
    assert first.stopped_by_time and first.final_step == 1
    train(cfg, None, 6, a, synthetic=True, progress=False, resume=True)
    train(cfg, None, 6, b, synthetic=True, progress=False)
    assert len(losses(a)) == 6 and losses(a) == losses(b)  # bit-identical, including the cosine schedule
    wa, wb = load_checkpoint(a)[1], load_checkpoint(b)[1]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    ckpts = sorted(p.name for p in (a / "checkpoints").iterdir())
    assert ckpts == ["step_00000004", "step_00000006"] or len(ckpts) <= cfg.train.keep_checkpoints
    assert (a / "latest").read_text().strip() == "step_00000006"


def test_run_records_its_data_and_every_launch(tmp_path: Path) -> None:
    made = {"collector": "gwp collect", "action_noise": 0.3, "tasks": {"reach-v3": {"seeds": [0, 1]}}}
    data = write_metaworld_dataset(tmp_path / "mw", episodes=3, provenance=made)
    cfg = tiny_config()
    train(cfg, str(data), 2, tmp_path / "run", progress=False, max_minutes=0.0)  # stops after one step
    train(cfg, str(data), 2, tmp_path / "run", progress=False, resume=True)
    doc = json.loads((tmp_path / "run" / "provenance.json").read_text())
    [src] = doc["data"]
    assert src["root"] == str(data.resolve()) and src["provenance"] == made
    assert (src["robot_type"], src["episodes"], src["frames"], src["weight"]) == ("metaworld_sawyer", 3, 36, 1.0)
    assert [(x["from_step"], x["to_step"]) for x in doc["launches"]] == [(0, 2), (1, 2)]
    assert all("data" not in x for x in doc["launches"])  # the same data both times
    described = describe_checkpoint(tmp_path / "run")
    assert described["run"] == doc and described["config"]["name"] == cfg.name
    assert described["checkpoint"].endswith("step_00000002")
    moved = Path(shutil.copytree(data, tmp_path / "moved"))  # the same data at another path: the launch says so
    train(cfg, str(moved), 3, tmp_path / "run", progress=False, resume=True)
    doc = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert doc["data"][0]["root"] == str(data.resolve()) and doc["launches"][-1]["from_step"] == 2
    assert doc["launches"][-1]["data"][0]["root"] == str(moved.resolve())
    (tmp_path / "run" / "provenance.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"provenance\.json: not valid JSON"):
        describe_checkpoint(tmp_path / "run")


def test_nonfinite_step_is_skipped() -> None:
    cfg = tiny_config()
    tr = Trainer(cfg, DistInfo(0, 1, 0, torch.device("cpu")), total_steps=10)
    batches = SyntheticBatches(cfg, rank=0, world_size=1, grad_accum=1, device=torch.device("cpu")).steps(0, 3)
    tr.train_step(next(batches))
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_step = [s["step"].clone() for s in tr.optimizer.state.values()]
    ema_before = {k: v.clone() for k, v in tr.ema.shadow.items()}
    real = tr.model.compute_loss

    def nan_loss(batch: dict, generator: torch.Generator | None = None) -> dict:
        out = real(batch, generator)
        return dict(out, loss=out["loss"] * float("nan"))

    tr.model.compute_loss = nan_loss  # type: ignore[method-assign]
    rec = tr.train_step(next(batches))
    assert rec["skipped"] and tr.skipped == 1 and tr.step == 2
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in tr.ema.shadow.items())
    assert [s["step"] for s in tr.optimizer.state.values()] == opt_step
    assert all(p.grad is None for p in tr.model.parameters())
    tr.model.compute_loss = real  # type: ignore[method-assign]
    rec = tr.train_step(next(batches))
    assert not rec["skipped"] and tr.skipped == 1
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


@pytest.mark.parametrize("victim", ["model.safetensors", "train_state/optimizer.safetensors", "ema.safetensors"])
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_damaged_checkpoint_is_refused(tmp_path: Path, victim: str, damage: str) -> None:
    cfg = tiny_config()
    train(cfg, None, 2, tmp_path, synthetic=True, progress=False)
    f = tmp_path / "checkpoints" / "step_00000002" / victim
    if damage == "missing":
        f.unlink()
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=victim.split("/")[-1]):
        train(cfg, None, 4, tmp_path, synthetic=True, progress=False, resume=True)


def test_optimizer_state_roundtrip() -> None:
    p = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{"params": p[:1]}, {"params": p[1:], "weight_decay": 0.0}], lr=1e-3, betas=(0.8, 0.9))
    sum(x.sum() for x in p).backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    json.dumps(meta)  # JSON-serializable
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    opt2 = torch.optim.AdamW([{"params": p[:1]}, {"params": p[1:], "weight_decay": 0.0}], lr=1.0)
    opt2.load_state_dict(unflatten_optimizer_state(tensors, meta))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for key in s1["state"][k]:
            assert torch.equal(s1["state"][k][key], s2["state"][k][key])


def test_lr_schedule() -> None:
    cfg = tiny_config("train.warmup_steps=4", "train.min_lr_ratio=0.1")
    f = lr_multiplier(cfg.train, 20)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(19) == pytest.approx(0.1, abs=0.01) and f(12) < f(6)
    g = lr_multiplier(apply_overrides(cfg, ["train.schedule=constant"]).train, 20)
    assert g(3) == 1.0 and g(19) == 1.0


def test_sampler_ranks_disjoint_and_heldout(mw_dataset: Path) -> None:
    from gigaworld_policy.train.data import open_datasets, parse_sources

    cfg = tiny_config()
    ds, _ = open_datasets(parse_sources(str(mw_dataset)), cfg)
    split = split_episodes(ds, seed=0, holdout=1)
    assert len(split.heldout[0]) == 1
    held = split.heldout[0][0]
    held_idx = set(range(ds.sources[0].ds.episode_start(held), ds.sources[0].ds.episode_start(held) + 12))
    one = StepBatchSampler(split, seed=0, global_batch=8, rank=0, world_size=1, start_step=0, stop_step=5)
    ranks = [StepBatchSampler(split, seed=0, global_batch=8, rank=r, world_size=2, start_step=0, stop_step=5)
             for r in range(2)]
    for step in range(5):
        full = one.indices(step)
        assert ranks[0].indices(step) + ranks[1].indices(step) == full  # rank slices of one global batch
        assert not held_idx & {i for i, _ in full}
    assert list(one)[3] == one.indices(3)  # the stream is a function of the step
    resumed = StepBatchSampler(split, seed=0, global_batch=8, rank=0, world_size=1, start_step=3, stop_step=5)
    assert list(resumed) == list(one)[3:]


def test_dataset_run_eval_and_init_new_embodiment(mw_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.eval_every=2", "flow.world_model_prob=0.5")
    s = train(cfg, str(mw_dataset), 2, tmp_path / "pre", progress=False, holdout_episodes=1, eval_frames=2)
    assert "eval/action_mse" in s.eval and s.eval["eval/metaworld_sawyer/action_mse"] >= 0
    pngs = sorted(p.name for p in (tmp_path / "pre" / "eval").glob("*.png"))
    assert pngs == ["step_00000002_metaworld_sawyer_actions.png", "step_00000002_metaworld_sawyer_frames.png"]
    ckpt = Path(s.checkpoint)
    verify_checkpoint(ckpt)
    ns = json.loads((ckpt / "norm_stats.json").read_text())
    assert [(e["robot_type"], e["embodiment_id"]) for e in ns["sources"]] == [("metaworld_sawyer", 0)]
    state = json.loads((ckpt / "train_state" / "state.json").read_text())
    assert state["step"] == 2 and state["sampler"]["next_step"] == 2
    # fine-tune with one more embodiment: its MLP rows are new, everything else is loaded
    ft = tiny_config("model.num_embodiments=3", "flow.world_model_prob=0")
    s2 = train(ft, str(mw_dataset), 1, tmp_path / "ft", progress=False, init=tmp_path / "pre")
    rep = s2.init_report
    assert rep is not None and rep["new_embodiment_ids"] == [2] and rep["loaded_tensors"] > 0
    assert all(".mlps.2." in k for k in rep["new_tensors"])
    bad = tiny_config("model.ffn_dim=64")
    with pytest.raises(CheckpointError, match="shape"):
        train(bad, str(mw_dataset), 1, tmp_path / "bad", progress=False, init=tmp_path / "pre")


def test_aux_head_trains_on_the_environment_state_and_the_policy_reads_it(mw_dataset: Path, tmp_path: Path) -> None:
    """model.aux_dim: samples carry observation.environment_state normalized by the dataset's stats, the loss is
    logged, the checkpoint carries the normalization, Policy.predict_environment_state answers in data units;
    data without the feature, or of another width, is refused naming it."""
    import numpy as np

    from gigaworld_policy.data import WindowedDataset
    from gigaworld_policy.policy import Policy, PolicyInputError

    root = write_metaworld_dataset(tmp_path / "mw_env", env_state=True)
    cfg = tiny_config("model.aux_dim=2")
    ds = WindowedDataset([root], cfg, train=False)
    _, ep, f = ds.locate(7)
    st = ds.sources[0].ds.stats["observation.environment_state"]
    expected = (np.array([f, ep]) - np.asarray(st["mean"])) / np.asarray(st["std"])
    np.testing.assert_allclose(ds[7]["aux_target"].numpy(), expected, rtol=1e-5, atol=1e-6)
    s = train(cfg, str(root), 2, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["aux_loss"] > 0 for r in rows if r.get("kind") == "train")
    ns = json.loads((Path(s.checkpoint) / "norm_stats.json").read_text())
    assert ns["sources"][0]["environment_state"] == {"names": ["frame", "episode"], "mean": st["mean"],
                                                     "std": st["std"]}
    policy = Policy.from_checkpoint(tmp_path / "run")
    frame = ds.sources[0].ds[0]
    obs = {"images": {"corner2": frame["observation.images.corner2"]}, "state": frame["observation.state"],
           "prompt": "task 0", "robot_type": "metaworld_sawyer"}
    reading = policy.predict_environment_state(obs)
    assert reading.shape == (2,) and np.isfinite(reading).all()
    # the head's normalized output maps back through the dataset's mean/std
    batch = policy._preprocess(policy.robots["metaworld_sawyer"], obs["images"], np.asarray(obs["state"]))
    policy._add_prompt(batch, "task 0")
    np.testing.assert_allclose(reading, policy.model.observe_aux(batch)[0].double().numpy() * np.asarray(st["std"])
                               + np.asarray(st["mean"]), rtol=1e-6)
    # the reference tokens' hidden states are what the head reads, [n_ref, D]
    feats = policy.reference_features(obs)
    n_ref = (cfg.model.latent_hw[0] // cfg.model.patch_size[1]) * (cfg.model.latent_hw[1] // cfg.model.patch_size[2])
    assert feats.shape == (n_ref, cfg.model.dim) and feats.dtype == np.float32
    np.testing.assert_allclose(policy.model.aux_head(torch.from_numpy(feats)[None])[0].detach().double().numpy(),
                               policy.model.observe_aux(batch)[0].double().numpy(), rtol=1e-5, atol=1e-6)
    for bad, match in (({"mean": st["mean"]}, "environment_state must be a dict with 'mean' and 'std'"),
                       ({"mean": st["mean"][:1], "std": st["std"]}, "environment_state mean/std must have model.aux_dim=2 entries")):
        broken = {"sources": [{**ns["sources"][0], "environment_state": bad}]}
        with pytest.raises(ValueError, match=r"sources\[0\]: " + re.escape(match)):
            Policy.from_model(policy.model, policy.config, broken)
    train(tiny_config(), str(mw_dataset), 1, tmp_path / "plain", progress=False)
    with pytest.raises(PolicyInputError, match="no auxiliary scene-state head"):
        Policy.from_checkpoint(tmp_path / "plain").predict_environment_state(obs)
    assert Policy.from_checkpoint(tmp_path / "plain").reference_features(obs).shape == feats.shape  # any checkpoint
    # --init: a plain checkpoint under a model with the head (the head is new), and the other way (dropped)
    with_head = train(cfg, str(root), 1, tmp_path / "ft_aux", progress=False, init=tmp_path / "plain")
    assert with_head.init_report["new_tensors"] and all(k.startswith("aux_head.") for k in
                                                        with_head.init_report["new_tensors"])
    assert with_head.init_report["new_embodiment_ids"] == []
    without = train(tiny_config(), str(mw_dataset), 1, tmp_path / "ft_plain", progress=False, init=tmp_path / "run")
    assert without.init_report["new_tensors"] == [] and without.init_report["loaded_tensors"] > 0
    with pytest.raises(DatasetError, match=r"observation\.environment_state.*does not have"):
        WindowedDataset([mw_dataset], cfg)
    with pytest.raises(DatasetError, match=r"shape is \[2\], expected \[3\]"):
        WindowedDataset([root], tiny_config("model.aux_dim=3"))


def test_wan_vae_preset_trains_with_its_tokenizer_and_refuses_data_without_it(tmp_path: Path, wan_shaped_config,
                                                                              narrow_wan_vae) -> None:
    """A wan2.2-vae config trains through the frozen VAE (kept out of the trained parameters); without the
    VAE weights, training on data is refused up front, naming --vae."""
    cfg = wan_shaped_config("wan2.2-5b-mot", "train.strategy=ddp")
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"video_tokenizer='wan2\.2-vae' needs loaded weights"):
        Trainer(cfg, info, total_steps=2)
    tr = Trainer(cfg, info, total_steps=2, video_tokenizer=narrow_wan_vae)
    assert not any(p is q for p in tr.model.parameters() for q in narrow_wan_vae.parameters())
    batches = SyntheticBatches(cfg, rank=0, world_size=1, grad_accum=1, device=torch.device("cpu")).steps(0, 2)
    losses = [tr.train_step(micro)["loss"] for micro in batches]
    assert all(math.isfinite(v) for v in losses) and tr.step == 2
    with pytest.raises(CheckpointError, match="--vae"):
        train(cfg, [str(tmp_path / "unused")], 1, tmp_path / "run", progress=False)


def test_loader_workers_give_the_in_process_batches(mw_dataset: Path) -> None:
    """Worker processes (forkserver, data/workers.py) yield exactly the batches of the in-process loader,
    also after this process has decoded from the same dataset (the case that hung forked workers)."""
    from gigaworld_policy.train.data import make_loader, open_datasets, parse_sources

    ds, _ = open_datasets(parse_sources(str(mw_dataset)), tiny_config())
    split = split_episodes(ds, seed=0, holdout=1)

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        sampler = StepBatchSampler(split, seed=0, global_batch=4, rank=0, world_size=1, start_step=0, stop_step=3)
        return list(make_loader(ds, sampler, workers))

    in_process = batches(0)
    with_workers = batches(2)
    assert len(with_workers) == len(in_process) == 3
    for a, b in zip(in_process, with_workers):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
