"""Every command the README shows runs as written: walt-train / walt-info lines compose and validate
(launcher keys included), the README's error example prints what it says, and the "Comparing
checkpoints" workflow and the text-to-video cascade block run end to end with tiny overrides."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from walt.config import CONFIG_DIR, RunConfig, register
from walt.config.run import STAGES

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(prog: str) -> list[list[str]]:
    """The README's `prog ...` lines inside ```bash blocks (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == prog:
                out.append(words[1:])
    return out


def split_hydra(args: list[str]) -> tuple[list[str], list[str]]:
    """(run overrides, Hydra-level overrides such as hydra/launcher=slurm); -m dropped."""
    hydra_level = [a for a in args if a.startswith(("hydra/", "hydra."))]
    return [a for a in args if a != "-m" and a not in hydra_level], hydra_level


TRAIN = commands("walt-train")


def test_readme_has_the_commands_it_documents():
    assert len(TRAIN) >= 5 and commands("walt-eval") and commands("walt-tables") and commands("walt-sample")


@pytest.mark.parametrize("args", TRAIN, ids=[" ".join(a)[:60] for a in TRAIN])
def test_walt_train_lines_compose_and_validate(args):
    from hydra import compose, initialize_config_dir

    overrides, hydra_level = split_hydra(args)
    run = RunConfig.load(overrides)
    assert run.stage in STAGES
    register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *hydra_level], return_hydra_config=True)
    if any(a.startswith("hydra/launcher=slurm") for a in hydra_level):  # the cluster's, or the local test cluster's
        assert cfg.hydra.launcher.partition in ("gpu", "debug")


def test_cascade_lines_chain_the_runs_the_readme_trains():
    """The text-to-video section: an autoencoder run, base and SR runs on its checkpoint, and a walt-sample
    cascade line over those runs whose options walt.pipeline.cascade accepts (the cascade itself runs end to
    end in tests/test_cascade.py)."""
    from walt.pipeline.cascade import parser

    by_name = {RunConfig.load(split_hydra(a)[0]).run_name: RunConfig.load(split_hydra(a)[0])
               for a in TRAIN if any(w.startswith("run_name=t2v_") for w in a)}
    assert [by_name[n].stage for n in ("t2v_ae", "t2v_base", "t2v_sr", "t2v_interp")] == [
        "autoencoder", "diffusion", "super_resolution", "interpolation"]
    ae_ckpt = "outputs/runs/t2v_ae/checkpoints/last.ckpt"
    assert {by_name[n].first_stage_ckpt for n in ("t2v_base", "t2v_sr", "t2v_interp")} == {ae_ckpt}
    assert by_name["t2v_base"].model.cross_attention_dim and by_name["t2v_sr"].model.noise_cond
    # the interpolation stage doubles the frame rate of base and SR (every 2nd frame) at the SR resolution
    assert by_name["t2v_base"].data.frame_stride == by_name["t2v_sr"].data.frame_stride == 2
    assert by_name["t2v_interp"].data.frame_stride == 1 and by_name["t2v_interp"].lowres.factor == 2
    assert by_name["t2v_interp"].model.input_size[1:] == by_name["t2v_sr"].model.input_size[1:]
    line, = [a for a in commands("walt-sample") if a[0] == "cascade"]
    args = parser().parse_args(line[1:])
    assert args.stages == ["outputs/runs/t2v_base", "outputs/runs/t2v_sr"] and args.caption
    assert args.interpolation == "outputs/runs/t2v_interp"


def test_the_error_example_prints_one_line():
    out = subprocess.run([sys.executable, "-c", "import sys; from walt.cli import info; sys.argv[0]='walt-info'; info()",
                          "model.patch_size=two"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["walt-info: error: model.patch_size='two' is not a valid int"]
    assert "walt-info: error: model.patch_size='two' is not a valid int" in README.read_text()


@pytest.mark.slow
def test_comparing_checkpoints_workflow_runs_end_to_end(tmp_path, synthetic_root, monkeypatch, one_thread):
    """The README's workflow with tiny overrides: three checkpoints, ckpt=all, metric-vs-step table, sample."""
    from analysis.cli import main as tables_main
    from walt.eval.cli import main as eval_main
    from walt.pipeline.train import train
    from walt.sample import main as sample_main

    train_args, = [a for a in TRAIN if "run_name=ckpts" in a]
    tiny = ["data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=32",
            "data.num_workers=0", "data.batch_size=4", "first_stage_steps=20", "trainer.max_steps=60",
            "callbacks.model_checkpoint.every_n_train_steps=20", "trainer.val_check_interval=60",
            "eval.after_train=false", "eval.num_samples=8", "eval.num_real=8", "eval.batch_size=8",
            "eval.sampling_steps=2", "eval.extractor_options={epochs: 1, width: 4}",
            f"paths.output_dir={tmp_path}/outputs", f"paths.data_dir={tmp_path}/data",
            "~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false"]
    run = RunConfig.load([*train_args, *tiny, f"paths.run_dir={tmp_path}/outputs/runs/ckpts"])
    assert run.run_name == "ckpts"
    train(run)
    run_dir = tmp_path / "outputs" / "runs" / "ckpts"

    eval_args, = commands("walt-eval")
    eval_main([str(run_dir), *eval_args[1:]])  # ckpt=all
    results = json.loads((run_dir / "results.json").read_text())
    assert sorted(int(s) for s in results["checkpoints"]) == [20, 40, 60]
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    # (training declares the HPARAMS column with a NaN placeholder at step 0)
    assert sorted(e.step for e in events.Scalars("eval/fvd_synth") if e.value == e.value) == [20, 40, 60]

    tables_args, = [a for a in commands("walt-tables") if "--checkpoints" in a]
    assert tables_args[0] == "--checkpoints"
    assert tables_main(["--checkpoints", str(run_dir)]) == 0
    assert list(tmp_path.glob("outputs/runs/**/checkpoints_fvd_synth.md"))

    sample_args, = [a for a in commands("walt-sample") if "--context" not in a and a[0] != "cascade"]
    sample_main([str(run_dir), "ckpt=40", "-n", "2", "--out", str(tmp_path / "samples")])
    assert (tmp_path / "samples" / "grid.mp4").exists()


def test_readme_axis_example_is_a_table(tmp_path):
    """The README's one-file axis (a sweep preset with an `axis:` block) declares a table with its rows."""
    from analysis.axes import load_axes

    block = next(b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S) if "axis:" in b)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mlp_ratio.yaml").write_text(block)
    axis = load_axes(str(tmp_path))["mlp_ratio"]
    assert list(axis.rows) == ["2", "4"] and axis.default == "4" and not axis.paper


@pytest.mark.slow
def test_cascade_block_runs_as_written(tmp_path, monkeypatch, one_thread):
    """The text-to-video block's commands in order, as written (default logger, relative paths from the working
    directory), with only steps, data size and sampling steps shrunk."""
    from walt.pipeline.train import train
    from walt.sample import main as sample_main

    block = next(b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if "walt-sample cascade" in b)
    lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    lines = [w for w in lines if w]
    assert [w[0] for w in lines] == ["walt-train"] * 4 + ["walt-sample"]
    tiny = ["trainer.max_steps=2", "first_stage_steps=2", "trainer.limit_val_batches=1", "data.num_workers=0",
            "data.synthetic.num_groups=2", "data.synthetic.clips_per_group=1", "trainer.enable_progress_bar=false",
            "~callbacks.rich_progress_bar", "trainer.enable_model_summary=false"]
    monkeypatch.chdir(tmp_path)
    for words in lines[:4]:
        run = RunConfig.load([*words[1:], *tiny])
        train(run)
        assert (tmp_path / "outputs" / "runs" / run.run_name / "checkpoints" / "last.ckpt").is_file(), words
        assert list((tmp_path / "outputs" / "runs" / run.run_name / "tensorboard").rglob("events.*")), words
    sample_main([*lines[4][1:], "--steps", "2"])
    assert (tmp_path / "outputs" / "t2v" / "grid.mp4").is_file() and (tmp_path / "outputs" / "t2v" / "cascade.json").is_file()
