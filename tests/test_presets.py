"""One preset registry per stage: the Hydra YAMLs must say exactly what the Python registries say."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from walt.autoencoder.config import AUTOENCODER_PRESETS, AutoencoderConfig, preset
from walt.config import CONFIG_DIR
from walt.transformer.config import ModelConfig
from walt.transformer.presets import PRESETS, preset_config

MODEL_YAMLS = sorted(Path(CONFIG_DIR, "model").glob("*.yaml"))
AE_YAMLS = sorted(Path(CONFIG_DIR, "autoencoder").glob("*.yaml"))


def test_every_registry_preset_has_a_yaml_and_back():
    assert {p.stem for p in MODEL_YAMLS} == set(PRESETS)
    assert {p.stem for p in AE_YAMLS} == set(AUTOENCODER_PRESETS)


@pytest.mark.parametrize("path", MODEL_YAMLS, ids=lambda p: p.stem)
def test_model_yaml_matches_registry(path):
    values = OmegaConf.to_container(OmegaConf.load(path))
    registry = preset_config(path.stem)
    # the YAMLs leave the latent shape to the data and autoencoder (null = derived at run time; cond_channels:
    # the cascade stages' low-res latents have the latent channels; cond_upsample: from the stage's lowres settings)
    for derived in ("in_channels", "input_size", "num_classes", "cond_channels", "cond_upsample"):
        if values.get(derived) is None:
            values[derived] = getattr(registry, derived)
    assert ModelConfig.from_dict(values).to_dict() == registry.to_dict()


@pytest.mark.parametrize("path", AE_YAMLS, ids=lambda p: p.stem)
def test_autoencoder_yaml_matches_registry(path):
    values = OmegaConf.to_container(OmegaConf.load(path))
    assert AutoencoderConfig.from_dict(values).to_dict() == preset(path.stem).to_dict()
