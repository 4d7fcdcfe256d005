"""Command-line entry points. All of them read the same config tree (experiments/), so a data or
model override means the same thing to every command.

    walt-train [overrides]            train one run (Hydra app: -m for sweeps, launchers, --help)
    walt-data synthetic [overrides]   write the synthetic moving-shapes dataset
    walt-data encode [overrides]      write the latent cache of data.* for stage 2
    walt-info [overrides]             one JSON line: parameter counts and shapes, no data touched
    walt-eval <run dir> [overrides]   generate samples, compute FVD/IS-style metrics, store them
    walt-sample <run dir> [options]   write sample grids (mp4, gif)
    walt-tables <runs dir>            the papers' tables from finished runs (analysis package)
"""
from __future__ import annotations

import json
import logging
import sys

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from walt.config import CONFIG_DIR, register

register()
log = logging.getLogger("walt")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> None:
    from walt.train import run

    run(cfg)


def train() -> None:
    """walt-train: Hydra app; `walt-train --help` lists config groups and the composed config."""
    _train()


def compose_config(overrides: list[str]) -> DictConfig:
    """The walt-train config for `overrides`, composed without starting a Hydra run."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def config_groups() -> dict[str, list[str]]:
    """Config groups of the tree and their options, for --help texts."""
    from pathlib import Path

    root = Path(CONFIG_DIR)
    return {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}


def _subcommand_cli(prog: str, commands: dict, argv: list[str] | None) -> None:
    """`prog <command> [overrides]`: commands take the composed config."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"usage: {prog} <command> [key=value ...]", "", "commands:"]
        lines += [f"  {name:<10} {fn.__doc__.strip().splitlines()[0]}" for name, fn in commands.items()]
        lines += ["", "Overrides are walt-train's; config groups (group=option):"]
        lines += [f"  {group}: {', '.join(options)}" for group, options in config_groups().items()]
        print("\n".join(lines))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    commands[argv[0]](compose_config(argv[1:]))


def _data_synthetic(cfg: DictConfig) -> None:
    """Write the synthetic moving-shapes dataset configured by data.synthetic under data.root."""
    from walt.data.datamodule import VideoDataModule
    from hydra.utils import instantiate

    if cfg.data.dataset != "synthetic":
        raise SystemExit(f"walt-data synthetic needs data=synthetic, got data.dataset={cfg.data.dataset.value}")
    dm: VideoDataModule = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    print(json.dumps({"root": dm.root, "spec": dm.synthetic_spec.__dict__}))


def _data_encode(cfg: DictConfig) -> None:
    """Encode data.* (train and val) with the first stage into a latent cache for stage 2.

    first_stage_ckpt=auto (default) finds or trains the autoencoder for this config. Train stage 2
    from the cache with data.latent_cache=<printed root> (or data.latent_cache=auto).
    """
    from walt import first_stage
    from walt.config import validate

    validate(cfg)
    ckpt = first_stage.resolve(cfg)
    if not ckpt:
        raise SystemExit("walt-data encode needs a first stage: first_stage_ckpt=auto or a checkpoint path")
    root = first_stage.encode_latents(cfg, ckpt)
    print(json.dumps({"latent_cache": str(root), "first_stage_ckpt": ckpt}))


DATA_COMMANDS = {"synthetic": _data_synthetic, "encode": _data_encode}


def data(argv: list[str] | None = None) -> None:
    """walt-data: dataset preparation."""
    _subcommand_cli("walt-data", DATA_COMMANDS, argv)


def tables(argv: list[str] | None = None) -> None:
    """walt-tables: collect finished runs into the papers' tables (Markdown, LaTeX, PNG)."""
    from analysis.cli import main

    main(argv)


def info(argv: list[str] | None = None) -> None:
    """walt-info [overrides]: one JSON line describing the configured models, built on the meta device.

    autoencoder_params, input_shape and latent_shape ([T, H, W, C]; latent from a meta forward
    pass, so it is what the encoder really produces), params (stage-2 trainable) and tokens (per sample).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(info.__doc__)
        return
    print(json.dumps(describe(compose_config(argv))))


def describe(cfg: DictConfig) -> dict:
    """The walt-info record of a composed config (no data read, no weights allocated)."""
    import torch

    from walt.autoencoder import CausalAutoencoder
    from walt.config import autoencoder_config, clip_frames, model_config, validate
    from walt.transformer.backbone import count_params, tokens_per_sample

    validate(cfg)
    ae_cfg = autoencoder_config(cfg)
    frames, res = clip_frames(cfg), int(cfg.data.resolution)
    with torch.device("meta"):
        ae = CausalAutoencoder(ae_cfg)
        latent = ae.encode(torch.empty(1, ae_cfg.in_channels, frames, res, res))
    _, c, t, h, w = latent.shape
    model = model_config(cfg)
    return {
        "stage": str(cfg.stage.value),
        "autoencoder_params": sum(p.numel() for p in ae.parameters()),
        "input_shape": [frames, res, res, ae_cfg.in_channels],
        "latent_shape": [t, h, w, c],
        "params": count_params(model),
        "tokens": tokens_per_sample(model),
        "blocks": list(model.blocks),
        "windows": {kind: list(model.window(kind)) for kind in dict.fromkeys(model.blocks)},
    }


def evaluate(argv: list[str] | None = None) -> None:
    """walt-eval <run_dir> [--untrained OUT_DIR] [overrides]: metrics of a finished run into its results.json."""
    from walt.evaluate import main

    main(argv)


def sample(argv: list[str] | None = None) -> None:
    """walt-sample <run_dir> [-n N] [--out DIR] ...: mp4/gif sample grids from a checkpoint."""
    from walt.sample import main

    main(argv)
