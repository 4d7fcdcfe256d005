"""I3D (Inception-v1 inflated to 3D, Kinetics-400) as the FVD feature extractor.

The module's parameter names and shapes follow the widely used PyTorch conversion of the TF-Hub
model (`i3d_pretrained_400.pt`, TATS / StyleGAN-V FVD code), so that file loads strictly. FVD features
are the 400 Kinetics logits averaged over the remaining time (and space) positions, as in those
releases. Convolutions and pools use TensorFlow "SAME" padding (asymmetric: the extra pixel goes
after), which is what makes the converted weights reproduce the TF numbers.

Also here: the StyleGAN-V TorchScript detector (`i3d_torchscript.pt`) as an alternative extractor.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from walt.metrics.protocol import register_extractor
from walt.utils import to_uint8
from walt.weights import WeightsError, WeightsSpec, load_torchscript, resolve_weights

I3D_SPEC = WeightsSpec(
    name="I3D Kinetics-400 (i3d_pretrained_400.pt)",
    env_var="WALT_I3D_WEIGHTS",
    checksum="gitsha1:a867b87ac3a9097d200598b1d48a1b890d8ec744",
    source="the TATS / StyleGAN-V FVD code releases (i3d_pretrained_400.pt)",
)
I3D_TORCHSCRIPT_SPEC = WeightsSpec(
    name="I3D Kinetics-400 TorchScript detector (i3d_torchscript.pt)",
    env_var="WALT_I3D_TORCHSCRIPT",
    checksum=None,
    source="the StyleGAN-V FVD code release (i3d_torchscript.pt)",
)
NUM_CLASSES = 400
INPUT_SIZE = 224
Triple = tuple[int, int, int]


def same_pad(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """Zero-pad (N, C, T, H, W) as TF "SAME" would: total k - s (or k - size % s), extra at the end."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # F.pad: last dim first
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm (TF eps 1e-3) + ReLU; the logits unit has bias and neither."""

    def __init__(self, c_in: int, c_out: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_act = kernel, stride, norm_act
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm_act else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding. Zero padding equals TF's ignore-the-pad semantics here because
    every pool follows a ReLU (inputs >= 0)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool3->1x1.

    widths = (b0, b1 reduce, b1, b2 reduce, b2, b3); the output has b0 + b1 + b2 + b3 channels.
    """

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(c_in, w0)
        self.b1a, self.b1b = Unit3D(c_in, w1a), Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, w2a), Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, w3)
        self.c_out = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# Inception-v1 (GoogLeNet) widths per mixed block, inflated to 3D by I3D.
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
POOLS = {  # endpoint that precedes a block -> (kernel, stride)
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
ENDPOINTS = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
             "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
             "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")


class InceptionI3d(nn.Module):
    """I3D RGB stream. Input (N, 3, T, H, W) in [-1, 1] (224x224 for the reference numbers);
    output Kinetics logits averaged over positions, (N, num_classes)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        for name, (kernel, stride) in POOLS.items():
            setattr(self, name, MaxPool3dSame(kernel, stride))
        c = 192
        for name, widths in MIXED_WIDTHS.items():
            block = InceptionBlock(c, widths)
            setattr(self, name, block)
            c = block.c_out
        self.logits = Unit3D(c, num_classes, norm_act=False)  # c = 1024

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c output average-pooled by the TF 2x7x7 window (stride 1): (N, 1024, t, h, w).

        The window is clipped to the feature map so that small test inputs work; at 16x224x224 the
        map is exactly 2x7x7 and nothing changes."""
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
        window = tuple(min(k, s) for k, s in zip((2, 7, 7), x.shape[2:]))
        return F.avg_pool3d(x, window, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce(self.logits(self.pooled(x)), "n k t h w -> n k", "mean")


def preprocess_i3d(videos: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, 3, T, H, W) in [-1, 1] -> each frame bilinearly resized to size x size (align_corners=False),
    still in [-1, 1] (clamped first, as a saved uint8 video would be)."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"videos must be (N, 3, T, H, W), got {tuple(videos.shape)}")
    n = videos.shape[0]
    frames = rearrange(videos.float().clamp(-1, 1), "n c t h w -> (n t) c h w")
    if frames.shape[-2:] != (size, size):
        # bilinear weights sum to 1, but in float32 a blend of -1s can round to -1 - 6e-8 (seen single-threaded)
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False).clamp_(-1, 1)
    return rearrange(frames, "(n t) c h w -> n c t h w", n=n)


def _load_state(path: Path, spec: WeightsSpec) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary by file
        msg = f"cannot read {path} as a plain state dict ({spec.name}; from {spec.source}): {err}"
        raise WeightsError(msg) from err
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict ({spec.name})")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu", verify: bool = True) -> InceptionI3d:
    """InceptionI3d with the user's Kinetics-400 weights (config path or $WALT_I3D_WEIGHTS), in eval mode."""
    file = resolve_weights(I3D_SPEC, path, verify=verify)
    model = InceptionI3d()
    missing, unexpected = model.load_state_dict(_load_state(file, I3D_SPEC), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # absent in old-PyTorch exports
    if missing or unexpected:
        raise WeightsError(f"{file} does not match the I3D layout: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval().requires_grad_(False).to(device)


class I3DExtractor:
    """FVD features: I3D logits (N, 400) of videos in [-1, 1] resized to `resolution`."""

    dim = NUM_CLASSES

    def __init__(self, model: InceptionI3d, weights_checksum: str | None, resolution: int = INPUT_SIZE,
                 batch_size: int = 8):
        self.model, self.weights_checksum = model.eval(), weights_checksum
        self.resolution, self.batch_size = resolution, batch_size
        self.name = (f"InceptionI3d Kinetics-400 logits ({self.dim}-d), "
                     f"frames {resolution}x{resolution} bilinear, [-1,1]")

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = [self.model(preprocess_i3d(chunk.to(device), self.resolution)).float().cpu()
               for chunk in videos.split(self.batch_size)]
        return torch.cat(out)


@register_extractor("i3d")
def i3d_extractor(weights: str | None = None, device: str = "cpu", batch_size: int = 8,
                  resolution: int = INPUT_SIZE, verify: bool = True) -> I3DExtractor:
    model = load_i3d(weights, device, verify)
    return I3DExtractor(model, I3D_SPEC.checksum if verify else None, resolution, batch_size)


class TorchScriptI3DExtractor:
    """The StyleGAN-V TorchScript I3D, called detector(x, rescale=, resize=, return_features=True) -> (N, 400).

    Default: our preprocessing (224x224 bilinear, [-1, 1]) and rescale=False, resize=False, so both I3D
    extractors see identical input. stylegan_v_preprocessing=True instead hands it uint8 frames at
    their own size with rescale=True, resize=True: StyleGAN-V's protocol exactly.
    """

    dim = NUM_CLASSES
    resolution = INPUT_SIZE

    def __init__(self, detector: torch.jit.ScriptModule, weights_checksum: str | None, batch_size: int = 8,
                 stylegan_v_preprocessing: bool = False, device: str | torch.device = "cpu"):
        self.detector, self.weights_checksum, self.batch_size = detector, weights_checksum, batch_size
        self.native, self.device = stylegan_v_preprocessing, torch.device(device)
        mode = ("StyleGAN-V preprocessing (uint8, rescale+resize inside)" if self.native
                else "frames 224x224 bilinear, [-1,1]")
        self.name = f"I3D TorchScript (StyleGAN-V) features ({self.dim}-d), {mode}"

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in videos.split(self.batch_size):
            chunk = chunk.to(self.device)
            if self.native:
                x = to_uint8(chunk)
                y = self.detector(x, rescale=True, resize=True, return_features=True)
            else:
                y = self.detector(preprocess_i3d(chunk), rescale=False, resize=False, return_features=True)
            out.append(y.float().cpu())
        return torch.cat(out)


def load_i3d_torchscript(path: str | Path | None = None,
                         device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, str]:
    """(detector, "sha256:<hex>" of the file used); the checksum is recorded, not verified (none is pinned)."""
    return load_torchscript(I3D_TORCHSCRIPT_SPEC, path, device)


@register_extractor("i3d_torchscript")
def i3d_torchscript_extractor(weights: str | None = None, device: str = "cpu", batch_size: int = 8,
                              stylegan_v_preprocessing: bool = False) -> TorchScriptI3DExtractor:
    detector, checksum = load_i3d_torchscript(weights, device)
    return TorchScriptI3DExtractor(detector, checksum, batch_size, stylegan_v_preprocessing, device)
