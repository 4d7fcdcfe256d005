"""What every checkpoint of one evaluation shares: the run, its metrics, the networks, the reference
data and its rows (computed once, however many checkpoints are measured)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from walt.config.run import RunConfig
from walt.eval.extractors import Network, Networks, build_networks
from walt.eval.reference import ContextClips, real_pass, reference_datamodule
from walt.eval.sampling import eval_device
from walt.eval.state import Partial

EVAL_DIR = "eval"
# metric -> extra values reported beside it (synth_acc: the classifier's accuracy on held-out real clips)
COMPANIONS = {"synth_acc": ("synth_acc_real",)}


def metric_names(run: RunConfig) -> list[str]:
    """Every value an evaluation of `run` reports: its stage's metrics plus their companions."""
    names = []
    for m in run.eval_metrics:
        names += [m, *COMPANIONS.get(m, ())]
    return names


@dataclass
class EvalContext:
    """One evaluation's shared parts. cache_dir holds the resumable passes (<run_dir>/eval)."""

    run: RunConfig
    cache_dir: Path
    device: torch.device
    metrics: list[str]
    nets: Networks
    datamodule: object
    _real: dict = field(default_factory=dict)
    _context: Optional[ContextClips] = None

    @classmethod
    def build(cls, run: RunConfig, out_dir: Optional[Path] = None) -> "EvalContext":
        """Check the metrics, resolve weights and build the networks (before any model is loaded)."""
        metrics = run.eval_metrics
        device = eval_device(run.eval)
        nets = build_networks(run, metrics, device)
        return cls(run, Path(out_dir or run.run_dir) / EVAL_DIR, device, metrics, nets, reference_datamodule(run))

    def real(self, net: Network, split: Optional[str] = None) -> tuple[Partial, str]:
        """(the real clips of `split` (default eval.reference_split) through `net`, description), computed
        once per context, with the per-clip rows any selected metric needs there."""
        split = split or self.run.eval.reference_split
        if (net.tag, split) not in self._real:
            keep = tuple(sorted(self.real_rows().get((net.tag, split), ())))
            self._real[net.tag, split] = real_pass(self.run, net, self.cache_dir, self.datamodule, split, keep)
        return self._real[net.tag, split]

    def context_clips(self) -> ContextClips:
        """The real clips frame-prediction samples continue (the reference clips; built once)."""
        if self._context is None:
            self._context = ContextClips(self.run, self.datamodule)
        return self._context

    def real_rows(self) -> dict[tuple[str, str], set]:
        """(network, split) -> per-clip rows the metrics need from the real clips: raw Inception features
        for kid (KID draws subsets), held-out class probabilities and labels for synth_acc."""
        ref, need = self.run.eval.reference_split, {}
        if "kid" in self.metrics:
            need.setdefault(("inception", ref), set()).add("features")
        if "synth_acc" in self.metrics:
            need.setdefault(("video", "val"), set()).update(("probs", "labels"))
        return need


@dataclass
class Measurement:
    """One model's numbers: values and their protocols, facts about the run of the evaluation (extra),
    and clips to show in TensorBoard (preview, (N, C, T, H, W) in [-1, 1])."""

    values: dict
    protocols: dict
    extra: dict
    preview: Optional[torch.Tensor] = None
