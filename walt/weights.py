"""User-supplied pretrained weights: found by config path or environment variable, checksummed,
never downloaded. Every feature network (I3D, InceptionV3, C3D, VGG, text encoders) goes through
`resolve_weights` so a missing or wrong file always fails the same clear way.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


class WeightsError(FileNotFoundError):
    """A pretrained-weights file is missing or is not the expected file."""


@dataclass(frozen=True)
class WeightsSpec:
    """What a weights file must be.

    name: human name ("I3D Kinetics-400 (i3d_pretrained_400.pt)").
    env_var: environment variable that may hold the path.
    checksum: "sha256:<hex>" or "gitsha1:<hex>" (git blob SHA-1, as GitHub shows for LFS-free files);
        None skips verification.
    source: where the file usually comes from, shown in errors.
    """

    name: str
    env_var: str
    checksum: str | None
    source: str


def file_checksum(path: str | os.PathLike, kind: str) -> str:
    """Hex digest of a file: kind "sha256", or "gitsha1" (SHA-1 of b"blob <size>\\0" + content)."""
    path = Path(path)
    if kind == "sha256":
        h = hashlib.sha256()
    elif kind == "gitsha1":
        h = hashlib.sha1()
        h.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise ValueError(f"unknown checksum kind {kind!r}; use sha256 or gitsha1")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec: WeightsSpec, path: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """Return the verified path of `spec`'s file, from `path` or else `$env_var`.

    Raises WeightsError naming the file, its checksum and its usual source when it is not given,
    does not exist, or does not match.
    """
    expected = f"expected checksum {spec.checksum}" if spec.checksum else "no checksum pinned"
    hint = f"{spec.name}: {expected}; it usually comes from {spec.source}"
    given = path or os.environ.get(spec.env_var)
    if not given:
        raise WeightsError(f"no weights file given for {hint}. Pass its path in the config or set ${spec.env_var}.")
    resolved = Path(given).expanduser()
    if not resolved.is_file():
        raise WeightsError(f"weights file {resolved} does not exist ({hint}).")
    if verify and spec.checksum:
        kind, want = spec.checksum.split(":", 1)
        got = file_checksum(resolved, kind)
        if got != want:
            raise WeightsError(f"weights file {resolved} has {kind} {got}, not the expected one ({hint}).")
    return resolved


def load_torchscript(spec: WeightsSpec, path: str | os.PathLike | None = None, device="cpu"):
    """(TorchScript module in eval mode, "sha256:<hex>" of the file) for detectors published only
    as TorchScript (StyleGAN-V's I3D and C3D); unreadable files raise WeightsError naming `spec`."""
    import torch

    file = resolve_weights(spec, path)
    try:
        module = torch.jit.load(str(file), map_location=device).eval()
    except Exception as err:
        raise WeightsError(f"cannot load {file} as TorchScript ({spec.name}): {err}") from err
    return module, "sha256:" + file_checksum(file, "sha256")
