"""Every group option, experiment preset and sweep preset composes; bad keys and values fail at start."""
import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from walt.config import CONFIG_DIR, SWEEPS_DIR, RunConfig, compose
from walt.config.schema import run_dirname

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "experiment")
GROUP_OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
SWEEPS = sorted(f.stem for f in (Path(SWEEPS_DIR) / "sweep").glob("*.yaml"))
LAUNCHERS = sorted(f.stem for f in (Path(SWEEPS_DIR) / "hydra" / "launcher").glob("*.yaml"))


def test_there_is_something_to_compose():
    assert {"data", "trainer", "logger", "callbacks", "paths"} <= set(GROUPS)
    assert {"local", "slurm"} <= set(LAUNCHERS)


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_group_option_composes(group, option):
    RunConfig.load([f"{group}={option}"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    RunConfig.load([f"experiment={name}"])


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_preset_composes(name):
    RunConfig.load([f"+sweep={name}"])


def test_slurm_launcher_keys():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.account=proj"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", "proj", 1, 1)
    assert launcher.timeout_min > 0


def test_wrong_key_fails_naming_it_and_the_valid_keys():
    with pytest.raises(ValueError, match=r"data.foo is not a config key; valid keys of data: append_images, batch_size"):
        compose(["data.foo=1"])


def test_wrong_enum_value_names_valid_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["data.temporal_sampling=middle"])
    assert "random, center" in str(err.value.__cause__)


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["data.batch_size=lots"])
    assert isinstance(err.value.__cause__, ValidationError)


def test_unknown_group_option_lists_available():
    with pytest.raises(ValueError, match=r"Could not find 'data/ucf102'; options: .*ucf101"):
        compose(["data=ucf102"])


@pytest.mark.parametrize("override,message", [
    (["trainer.precision=bf17"], "bf16-mixed"),
    (["data.frame_stride=2"], "synthetic.num_frames"),
    (["data=ucf101", "data.split=4"], "1, 2 or 3"),
    (["data.num_frames=16"], r"1 \+ k\*4"),
    (["stage=diffusion", "model.st_window=[5,3,3]"], r"valid h sizes: \[1, 2, 4, 8\]"),
    (["stage=diffusion", "model.patch_size=3"], r"valid sizes: \[1, 2, 4, 8\]"),
    (["stage=diffusion", "diffusion.prediction=score"], "not one of"),
    (["autoencoder.temporal_padding=reflect"], "replicate"),
    # stage 2's groups are checked whatever the stage, before anything is built
    (["stage=autoencoder", "model.patch_size=two"], r"model.patch_size='two' is not a valid int"),
    (["stage=autoencoder", "model.patch_size=3"], r"valid sizes: \[1, 2, 4, 8\]"),
    (["diffusion.sampler=euler"], "not one of"),
    (["eval.num_samples=0"], "eval.num_samples must be >= 1"),
    (["optim.lr=fast"], "optim.lr"),
    # a cascade stage needs a model that takes the low-res latents and their noise level
    (["stage=super_resolution"], r"set model.cond_channels=null .* model.noise_cond=true"),
    (["experiment=t2v_tiny_sr", "lowres.aug_sample=0.5"], "aug_sample <= aug_max"),
    (["experiment=t2v_tiny_sr", "eval.after_train=true"], "eval.after_train"),
    (["experiment=t2v_tiny_sr", "lowres.upsample=cubic"], r"upsample one of depth_to_space\|bilinear\|nearest"),
    (["experiment=t2v_tiny_sr", "lowres.upsample=bilinear", "model.cond_upsample=2"], "needs model.cond_upsample=1"),
])
def test_cross_field_validation(override, message):
    with pytest.raises((ValueError, ConfigCompositionException), match=message):
        RunConfig.load(override)


def test_run_config_is_frozen_and_round_trips_through_its_overrides(tmp_path):
    run = RunConfig.load(["experiment=demo", "model.patch_size=2", f"paths.run_dir={tmp_path}"])
    with pytest.raises(AttributeError):
        run.seed = 1  # frozen: derive changed runs with with_overrides
    changed = run.with_overrides("seed=3")
    assert (changed.seed, changed.model.patch_size, changed.run_dir, changed.run_name) == (3, 2, run.run_dir, run.run_name)
    from walt import runs

    runs.write_config(tmp_path, run.to_dict(), list(run.overrides))
    again = RunConfig.stored(tmp_path, ["eval.num_samples=7"])
    assert again.eval.num_samples == 7 and again.model == run.model and again.data == run.data
    with pytest.raises(ValueError, match=r"model.depth: 4 -> 6"):
        RunConfig.stored(tmp_path, ["model.depth=6"])


def test_cascade_parts_are_stored_only_where_they_apply(tmp_path):
    """text only for text-conditioned models, lowres only for cascade stages: other runs' stored configs keep
    their keys; a super-resolution run round-trips through its stored overrides like any other."""
    from walt import runs

    plain = RunConfig.load(["experiment=demo"]).to_dict()
    assert "text" not in plain and "lowres" not in plain
    base = RunConfig.load(["experiment=t2v_tiny"]).to_dict()
    assert base["text"]["encoder"] == "minilm" and "lowres" not in base
    sr = RunConfig.load(["experiment=t2v_tiny_sr", f"paths.run_dir={tmp_path}"])
    assert sr.to_dict()["lowres"] == {"factor": 2, "upsample": "depth_to_space", "aug_max": 0.3, "aug_sample": 0.1}
    assert sr.model.cond_channels == sr.model.in_channels == 8 and sr.model.num_classes == 0
    # depth-to-space by default: the model upsamples the low-res latents itself (cond_upsample = factor); the
    # interpolation option leaves it at 1, which the stored model section omits like before the option existed
    assert sr.model.cond_upsample == 2 and sr.to_dict()["model"]["cond_upsample"] == 2
    bilinear = RunConfig.load(["experiment=t2v_tiny_sr", "lowres.upsample=bilinear"])
    assert bilinear.model.cond_upsample == 1 and "cond_upsample" not in bilinear.to_dict()["model"]
    runs.write_config(tmp_path, sr.to_dict(), list(sr.overrides))
    assert RunConfig.stored(tmp_path).lowres == sr.lowres
    with pytest.raises(ValueError, match=r"lowres.aug_max: 0.3 -> 0.2"):
        RunConfig.stored(tmp_path, ["lowres.aug_max=0.2"])


def sweep_points(name):
    """The overrides of every job in a sweep preset's grid (what walt-train -m launches), without +sweep=."""
    from walt.config.sweep import sweep_points as points

    return [point[1:] for point in points([f"+sweep={name}"])]


@pytest.mark.parametrize("name", SWEEPS)
def test_every_point_of_a_sweep_is_valid_at_paper_latent_grid(name):
    """Synthetic 128 px clips give the paper's 5x16x16 latent grid, so each preset must validate there."""
    points = sweep_points(name)
    assert len(points) >= 1
    for model, point in itertools.product(("walt_tiny", "walt_l"), points):
        run = RunConfig.load([f"+sweep={name}", f"model={model}", "data.synthetic.resolution=128", *point])
        assert run.run_name == name.replace("_full", "") and run.stage == "diffusion"


def test_table3e_ablation_rows_switch_off_one_choice_each():
    flags = {}
    for point in sweep_points("table3e"):
        run = RunConfig.load(["+sweep=table3e", *point])
        flags[next(o for o in point if o.startswith("ablation="))] = (run.model.qk_norm, run.diffusion.normalize_latents, run.diffusion.zero_terminal_snr)
    assert flags == {
        "ablation=none": (True, True, True), "ablation=no_qk_norm": (False, True, True),
        "ablation=no_latent_norm": (True, False, True), "ablation=no_zero_terminal_snr": (True, True, False),
    }


def test_sweeps_replicate_every_point_over_seeds():
    assert {tuple(p) for p in sweep_points("table3a")} >= {("seed=0", "first_stage_seed=0", "model.patch_size=1")}
    with_seeds = [p for p in itertools.product(*[[o] for o in ["+sweep=table3c", "seeds=3"]])]
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(with_seeds[0]), return_hydra_config=True)
    assert cfg.hydra.sweeper.params.seed == "range(0,3)"
    assert cfg.hydra.sweeper.params.first_stage_seed == "range(0,1)"  # first_stage_seeds=K autoencoders


def test_sweep_job_dirnames_are_short_single_components_and_stable():
    long = ",".join(f"data.synthetic.key{i}=/some/path/{i}" for i in range(20))
    name = run_dirname(long)
    assert len(name) <= 120 and "/" not in name and name == run_dirname(long)
    assert name != run_dirname(long.replace("key19", "key20"))
    assert run_dirname("model.patch_size=2") == "model.patch_size=2"


def test_layouts_sweep_fills_every_named_cross_paper_row():
    """Each point of +sweep=layouts is one named row of analysis.layouts (W.A.L.T, full, Latte V1-V4, LaVie),
    with everything but the layout keys (and LaVie's zero-initialised temporal projection) unchanged."""
    from analysis.layouts import LAYOUT_ROWS, layout_label

    rows, models = {}, {}
    for point in sweep_points("layouts"):
        run = RunConfig.load(["+sweep=layouts", "experiment=demo", *point])
        model = run.to_dict()["model"]
        flat = {f"model.{k}": v for k, v in model.items()}
        rows[next(o for o in point if o.startswith("variant="))] = layout_label(flat)
        models[point[-1]] = {k: v for k, v in model.items() if k not in ("layout", "temporal_pos", "zero_init_temporal")}
    assert sorted(rows.values()) == sorted(label for label in LAYOUT_ROWS if not label.startswith("spatial"))
    assert rows["variant=lavie"].startswith("LaVie") and rows["variant=latte_v4"].startswith("Latte V4")
    assert len({repr(m) for m in models.values()}) == 1  # same size, windows, conditioning in every row


def test_joint_training_with_a_latent_cache_is_refused():
    """A latent cache holds the videos only: joint training through it would silently train on videos alone."""
    with pytest.raises(ValueError, match="data.latent_cache=null"):
        RunConfig.load(["experiment=demo", "data.image_ratio=0.25"])
    assert RunConfig.load(["experiment=demo", "data.image_ratio=0.25", "data.latent_cache=null"]).data.image_ratio == 0.25
