"""Multi-process strategies by config: what `trainer=ddp` / `trainer=fsdp` instantiate beyond a name.

DDP needs nothing of ours: Lightning's `ddp` strategy (one process per device, gloo on CPU, NCCL on GPU)
wraps the LightningModule; the EMA copy inside it is frozen (requires_grad=False), so DDP neither syncs
nor waits for its gradients, and every rank applies the same EMA update to the same all-reduced weights.

FSDP shards parameters, gradients and optimizer state. `fsdp_strategy` wraps each transformer block and
each whole backbone (the online model and its EMA copy) as its own FSDP unit: the two copies are then
flattened and sharded identically, so the EMA update pairs every local shard with the same elements of
the online model (use_orig_params=True keeps the original parameters as views of those shards).
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", state_dict_type: str = "full", cpu_offload: bool = False,
                  **kwargs: Any) -> FSDPStrategy:
    """Lightning's FSDPStrategy for the W.A.L.T backbone (see the module docstring).

    sharding_strategy: FULL_SHARD (ZeRO-3), SHARD_GRAD_OP (ZeRO-2), NO_SHARD, HYBRID_SHARD (shard within a
    node, replicate across nodes). state_dict_type: "full" = checkpoints gathered on rank 0 in the
    single-process layout (they load with weights_only=True anywhere), "sharded" = one file per rank.
    Activation checkpointing is the model's own (model.grad_checkpointing, per block).
    """
    from walt.transformer.backbone import WALT
    from walt.transformer.blocks import Block

    return FSDPStrategy(auto_wrap_policy={WALT, Block}, sharding_strategy=sharding_strategy,
                        state_dict_type=state_dict_type, cpu_offload=cpu_offload, use_orig_params=True, **kwargs)
