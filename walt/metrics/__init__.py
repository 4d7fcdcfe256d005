"""Evaluation metrics: Frechet math and streaming statistics, I3D FVD features, torch-fidelity image
FID/IS/KID, C3D video IS, reconstruction metrics, the embedded synthetic-set metrics, and the protocol
record stored beside every number. Importing the package registers the feature extractors
('i3d', 'i3d_torchscript', 'synthetic') for `build_extractor`.
"""
from walt.metrics.c3d import C3D_SPEC, ISResult, c3d_inception_score, load_c3d
from walt.metrics.fidelity import INCEPTION_SPEC, fidelity_protocol, image_fidelity
from walt.metrics.frechet import FeatureStats, accumulate, frechet_distance, inception_score
from walt.metrics.i3d import (
    I3D_SPEC,
    I3D_TORCHSCRIPT_SPEC,
    I3DExtractor,
    InceptionI3d,
    TorchScriptI3DExtractor,
    load_i3d,
    load_i3d_torchscript,
    preprocess_i3d,
)
from walt.metrics.protocol import EXTRACTORS, FeatureExtractor, MetricProtocol, build_extractor, register_extractor
from walt.metrics.reconstruction import ReconstructionMeter, frame_psnr, frame_ssim, rfvd
from walt.metrics.synthetic import (
    FVD_SYNTH,
    IS_SYNTH,
    SynthClassifier,
    SynthClassifierConfig,
    SyntheticExtractor,
    fvd_synth,
    is_synth,
    train_synthetic_classifier,
)

__all__ = [
    "C3D_SPEC", "EXTRACTORS", "FVD_SYNTH", "I3D_SPEC", "I3D_TORCHSCRIPT_SPEC", "INCEPTION_SPEC", "IS_SYNTH",
    "FeatureExtractor", "FeatureStats", "I3DExtractor", "ISResult", "InceptionI3d", "MetricProtocol",
    "ReconstructionMeter", "SynthClassifier", "SynthClassifierConfig", "SyntheticExtractor",
    "TorchScriptI3DExtractor", "accumulate", "build_extractor", "c3d_inception_score", "frame_psnr", "frame_ssim",
    "fidelity_protocol", "frechet_distance", "fvd_synth", "image_fidelity", "inception_score", "is_synth", "load_c3d", "load_i3d",
    "load_i3d_torchscript", "preprocess_i3d", "register_extractor", "rfvd", "train_synthetic_classifier",
]
