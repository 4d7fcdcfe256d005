"""Stage 1 -> latent cache -> stage 2 through the training entry on the synthetic dataset."""
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from walt import runs
from walt.config import RunConfig
from walt.pipeline import first_stage
from walt.pipeline.train import train


@pytest.mark.slow
def test_stage2_on_cached_synthetic_latents_lowers_the_loss(tmp_path, synthetic_root):
    run = RunConfig.load([
        "experiment=demo", "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=32",
        "data.num_workers=0", "data.batch_size=4", "data.latent_cache=auto", "first_stage_steps=30", "trainer.max_steps=300",
        "trainer.val_check_interval=150", "trainer.log_every_n_steps=5", "eval.after_train=false",
        f"paths.output_dir={tmp_path}/out", f"paths.data_dir={tmp_path}/data", "~callbacks.rich_progress_bar",
        "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=150",
        f"paths.run_dir={tmp_path / 'run'}",
    ])
    results = train(run)

    # the first stage was trained once, found by its config hash, and its latents cached
    ae_dir = first_stage.autoencoder_dir(run)
    assert runs.is_complete(ae_dir) and results["global_step"] == 300
    stored = json.loads((tmp_path / "run" / runs.RESULTS).read_text())
    assert stored == results and stored["first_stage"]["ckpt"] == str(ae_dir / runs.LAST_CKPT)
    assert "train/loss" in stored["first_stage"]["metrics"]
    config = (tmp_path / "run" / runs.CONFIG).read_text()
    assert f"first_stage_ckpt: {ae_dir}/checkpoints/last.ckpt" in config and "__ae-" in config

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    losses = [e.value for e in events.Scalars("train/loss")]  # logged every 5 steps: 60 values
    first, last = sum(losses[:5]) / 5, sum(losses[-20:]) / 20
    # last-20 / first-5 ratio observed 0.51, 0.62, 0.71, 0.62, 0.64 over seeds 0-4 (one thread, this config);
    # the last-5 mean alone is too noisy (0.40-0.76 across seeds and CPUs) to bound reliably
    assert last < 0.85 * first, (first, last)
