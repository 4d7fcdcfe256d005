"""Multi-process training on CPU: 2-process DDP (gloo) through the real Lightning Trainer and our
LatentDiffusionModule matches one process on the same global batch; trainer=fsdp is refused on CPU."""
import json
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from walt.config import RunConfig
from walt.data.sampling import ResumableSampler
from walt.modules.latent_diffusion import LatentDiffusionModule

WORLD, PER_RANK, STEPS = 2, 2, 4
DDP_STRATEGY = "ddp_fork"
# Max |DDP - single process| over every weight (online and EMA) after STEPS steps; observed 6.2e-08
# (float32 round-off: the ranks' gradient all-reduce sums in another order than one process's batch mean).
WEIGHT_TOLERANCE = 1e-5


class TinyLatents(Dataset):
    """Fixed latents with their labels and their own diffusion draws ('noise', 't'), so a sample's loss
    does not depend on which process holds it."""

    def __init__(self, shape, n, num_classes, timesteps, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.latents = torch.randn(n, *shape, generator=g)
        self.noise = torch.randn(n, *shape, generator=g)
        self.t = torch.randint(0, timesteps, (n,), generator=g)
        self.labels = torch.arange(n) % num_classes

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i):
        return {"latents": self.latents[i], "noise": self.noise[i], "t": self.t[i], "label": self.labels[i]}


class TinyData(L.LightningDataModule):
    """The train loader as walt's VideoDataModule builds it: a ResumableSampler seeded by (seed, epoch) that,
    under DDP, gives each rank its strided share of the one shuffled order."""

    def __init__(self, dataset, batch_size):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self):
        t = self.trainer
        sampler = ResumableSampler(len(self.dataset), seed=0, shuffle=True, rank=t.global_rank, num_replicas=t.world_size)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True)


class Probe(L.Callback):
    """One intra-op thread per process (2 processes on 2 cores); at the end, the largest difference of the
    weights between ranks (all-gathered) and the per-step losses into callback_metrics (returned to the
    main process by the spawn launcher)."""

    def on_fit_start(self, trainer, pl_module):
        torch.set_num_threads(1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.callback_metrics[f"probe/loss_{trainer.global_step}"] = outputs["loss"].detach().clone()

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([t.detach().flatten().float() for t in pl_module.state_dict().values()])
        gathered = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1)
        trainer.callback_metrics["probe/rank_diff"] = (gathered - gathered[0]).abs().max()
        draws = trainer.strategy.all_gather(torch.rand(8)).reshape(trainer.world_size, -1)  # the diffusion RNG
        trainer.callback_metrics["probe/rng_same"] = (draws == draws[0]).all(dim=1).float().sum()
        trainer.callback_metrics["probe/world"] = torch.tensor(float(trainer.world_size))
        trainer.callback_metrics["probe/steps"] = torch.tensor(float(trainer.global_step))


def tiny_run():
    """The tiny preset's stage 2 with randomness that would differ between layouts switched off: every
    sample self-conditions (p = 1) and keeps its label (no class dropout)."""
    return RunConfig.load(["stage=diffusion", "first_stage_ckpt=null", "model.self_cond_prob=1.0",
                           "model.class_dropout_prob=0.0", "optim.warmup_steps=2", "optim.ema_decay=0.9"])


def train(run, tmp_path, devices, batch_size, strategy="auto"):
    L.seed_everything(0)
    module = LatentDiffusionModule(run.model, run.diffusion, run.optim)
    c, (t, h, w) = run.model.in_channels, run.model.input_size
    data = TinyLatents((c, t, h, w), n=WORLD * PER_RANK * STEPS, num_classes=run.model.num_classes,
                       timesteps=run.diffusion.num_timesteps)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0,
                        default_root_dir=tmp_path, callbacks=[Probe()])
    trainer.fit(module, datamodule=TinyData(data, batch_size))
    return module, trainer


def compare(out_dir):
    """Train the tiny preset STEPS steps in one process (batch WORLD x PER_RANK) and in WORLD DDP processes
    (batch PER_RANK each, Lightning's ddp_fork launcher, gloo); the numbers the test checks."""
    torch.set_num_threads(1)
    run = tiny_run()
    start = time.perf_counter()
    single, _ = train(run, out_dir / "single", 1, WORLD * PER_RANK)
    mid = time.perf_counter()
    ddp, ddp_trainer = train(run, out_dir / "ddp", WORLD, PER_RANK, strategy=DDP_STRATEGY)  # rank 0's weights return
    end = time.perf_counter()
    metrics = ddp_trainer.callback_metrics  # rank 0's, returned by the launcher (its global_step is not)
    a, b = single.state_dict(), ddp.state_dict()
    init = LatentDiffusionModule(run.model, run.diffusion, run.optim).state_dict()
    return {
        "world": float(metrics["probe/world"]), "steps": float(metrics["probe/steps"]),
        "rank_diff": float(metrics["probe/rank_diff"]), "same_keys": a.keys() == b.keys(),
        "rng_same": float(metrics["probe/rng_same"]),
        "ema_keys": sum(k.startswith("ema.") for k in a),
        "diff": max((a[k].float() - b[k].float()).abs().max().item() for k in a),
        "moved": max((a[k].float() - v.float()).abs().max().item() for k, v in init.items() if k.startswith("model.")),
        "ema_updates": [single.ema.n_averaged.item(), ddp.ema.n_averaged.item()],
        "single_s": mid - start, "ddp_s": end - mid,
    }


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    # A fresh interpreter: fork-launched ranks are fast (no re-import, unlike ddp_spawn: ~50 s on a loaded
    # 2-core box vs ~5 s) but torch refuses to fork once some autograd work (e.g. dynamo) ran in this process.
    out = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    print(f"\nDDP x{WORLD} vs single process after {STEPS} steps: max |diff| {r['diff']:.3g} (weights moved up to "
          f"{r['moved']:.3g}); single {r['single_s']:.1f} s, {DDP_STRATEGY} {r['ddp_s']:.1f} s")
    assert r["world"] == WORLD and r["steps"] == STEPS and r["ema_updates"] == [STEPS, STEPS]
    assert r["rank_diff"] == 0.0  # the ranks hold identical weights, EMA included
    assert r["rng_same"] == 1.0  # but draw their own noise: only rank 0 itself matches rank 0's draws
    assert r["same_keys"] and r["ema_keys"] > 0
    assert r["moved"] > 1e-3  # training changed the weights, so agreeing is not trivial
    assert r["diff"] <= WEIGHT_TOLERANCE


def test_ranks_take_strided_shares_of_one_order():
    """The sampler under DDP: rank r reads order[r::world] of the epoch's one shuffled order, so a step's
    per-rank batches together are the single-process batch of world x the size."""
    one = list(ResumableSampler(10, seed=3))
    ranks = [list(ResumableSampler(10, seed=3, rank=r, num_replicas=3)) for r in range(3)]
    assert [len(x) for x in ranks] == [3, 3, 3] and isinstance(ResumableSampler(4), torch.utils.data.DistributedSampler)
    assert sorted(sum(ranks, [])) == sorted(one[:9]) and ranks[1] == one[1:9:3]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        ResumableSampler(4, rank=2, num_replicas=2)
    # a resumed rank continues its own share where it stopped (the DataModule skips the rank's done items)
    whole = list(ResumableSampler(10, seed=3, rank=1, num_replicas=2))
    at = [(0, 2)]
    resumed = ResumableSampler(10, seed=3, rank=1, num_replicas=2, position=lambda: at[0])
    assert list(resumed) == whole[2:]
    at[0] = (1, 0)  # the next epoch, whatever epoch Lightning passes
    resumed.set_epoch(0)
    nxt = ResumableSampler(10, seed=3, rank=1, num_replicas=2)
    nxt.set_epoch(1)
    assert list(resumed) == list(nxt) != whole and resumed.epoch == 1


@pytest.mark.parametrize("env,rank", [({}, 0), ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, 0), ({"LOCAL_RANK": "1"}, 1),
                                      ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1), ({"SLURM_PROCID": "3"}, 3),
                                      ({"RANK": "2", "SLURM_PROCID": "0"}, 2)])
def test_launch_rank_reads_the_launchers_variables(monkeypatch, env, rank):
    from walt.utils import launch_rank

    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert launch_rank() == rank


def test_a_follower_rank_trains_but_leaves_the_run_directory_to_rank_0(tmp_path, synthetic_root, monkeypatch):
    """walt-train on a non-zero rank (Lightning's ddp launcher re-runs the command per extra device): it joins
    the fit but neither takes the run directory's lock nor writes config, results or the completion marker."""
    from test_train import StandIn, make_run

    from walt import runs
    from walt.pipeline.fit import train_stage

    monkeypatch.setenv("LOCAL_RANK", "1")
    stand_in = StandIn()
    assert train_stage(make_run(tmp_path, synthetic_root, 2), build=stand_in) == {}
    run_dir = tmp_path / "run"
    assert len(stand_in.made) == 1 and stand_in.made[0].global_step == 2  # it trained
    for name in (runs.CONFIG, runs.RESULTS, runs.COMPLETED, runs.LOCK):
        assert not (run_dir / name).exists(), name


def test_stage_1_under_ddp_finds_unused_parameters():
    """`walt-train trainer=ddp` ran end to end on 2 CPU processes only once stage 1 (generator and
    discriminator steps) had find_unused_parameters; stage 2 keeps plain ddp (every parameter gets a gradient)."""
    from walt.pipeline.fit import trainer_spec

    cpu_ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    assert trainer_spec(RunConfig.load(["stage=autoencoder", *cpu_ddp]))["strategy"] == "ddp_find_unused_parameters_true"
    assert trainer_spec(RunConfig.load(["stage=diffusion", *cpu_ddp]))["strategy"] == "ddp"


def test_lightning_fsdp_refuses_the_cpu_and_so_does_the_config():
    """What fails upstream (Lightning 2.6): FSDPStrategy with accelerator=cpu is refused at Trainer
    construction. (Past that check, by a subclass, torch 2.14's FSDP fails too, on wrapping: "FSDP needs a
    non-CPU accelerator device, but no accelerator device is detected".) trainer=fsdp therefore names CUDA,
    and RunConfig refuses it on CPU before anything runs."""
    from walt.modules.distributed import fsdp_strategy

    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=1, strategy=fsdp_strategy(), logger=False)
    with pytest.raises(ValueError, match="trainer=fsdp needs CUDA GPUs"):
        RunConfig.load(["trainer=fsdp", "trainer.accelerator=cpu"])
    run = RunConfig.load(["trainer=fsdp"])  # composes (and would run) where CUDA is
    assert run.strategy_name == "fsdp" and run.trainer["accelerator"] == "gpu"


if __name__ == "__main__":  # the comparison, run by the test in a fresh interpreter
    out_dir = Path(sys.argv[1])
    (out_dir / "result.json").write_text(json.dumps(compare(out_dir)))
