"""The W.A.L.T denoiser: conditioning concats -> patches -> layout of window blocks -> latents."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from walt.transformer.blocks import Block, FinalLayer
from walt.transformer.conditioning import SharedAdaLN, modulation_count
from walt.transformer.config import ATTENTIONS, ModelConfig
from walt.transformer.embeddings import LabelEmbed, PatchEmbed, SpaceTimePosEmbed, TimestepEmbed, unpatchify

# model.sdpa_backend -> the kernels scaled_dot_product_attention may use ("auto": no restriction)
SDPA_KERNELS = {"flash": [SDPBackend.FLASH_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
                "cudnn": [SDPBackend.CUDNN_ATTENTION], "math": [SDPBackend.MATH]}


def sdpa_context(backend: str):
    """The context restricting attention kernels to `backend` (a ModelConfig.sdpa_backend value)."""
    return contextlib.nullcontext() if backend == "auto" else sdpa_kernel(SDPA_KERNELS[backend])


class WALT(nn.Module):
    """Window attention latent transformer predicting the diffusion target (v, eps or x0).

    forward(x, t, y, ...) takes noisy latents x (B, c, T, H, W) with T = cfg.input_size[0] (a video)
    or T = 1 (an image batch) and returns a tensor of the same shape (2c channels with learn_sigma:
    the prediction, then the variance interpolation values). Optional conditions:
      y          (B,) int labels; index cfg.num_classes is the null class (unconditional).
      self_cond  (B, c, T, H, W) stop-grad x0 estimate (self-conditioning; zeros when omitted).
      context, context_mask  clean latents (B, c, T, H, W) and (B, T) per-frame mask for frame
                 prediction; enter as concat(mask * context, mask) (zeros when omitted).
      is_image   (B,) bool: samples whose frames are independent images (no cross-frame mixing).
      frame_is_image (B, T) bool: single frames that are independent images (Latte / LaVie images
                 appended after a clip's frames; None when no frame is one): they pass every layer as
                 an image alone would, the video frames never read them; T may then exceed the
                 model's clip (cfg.input_size[0] video frames + the appended images; temporal windows
                 that span the clip span them all). Needs temporal_patch_size 1.
      text, text_mask  (B, L, cross_attention_dim) token states and (B, L) keep-mask (None = null text).
      cond       (B, cond_channels, T, H, W) cascade conditioning concatenated on channels; with
                 cfg.cond_upsample = s > 1 given as (B, cond_channels, T, H/s, W/s) and brought to (H, W)
                 by the learned depth-to-space upsampling `cond_proj` (W.A.L.T's super-resolution stages).
      aug_t      (B,) noise-augmentation level t_sr of `cond` (noise_cond; 0 when omitted).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.patch_embed = PatchEmbed(cfg.model_in_channels, d, cfg.patch_size, cfg.temporal_patch_size)
        self.pos_embed = SpaceTimePosEmbed(cfg.grid, d, cfg.pos_embed, temporal=cfg.temporal_pos == "absolute")
        self.t_embed = TimestepEmbed(d, cfg.frequency_embedding_size)
        self.y_embed = LabelEmbed(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes > 0 else None
        adaln = cfg.conditioning == "adaln"
        count = max(modulation_count(len(ATTENTIONS[kind])) for kind in cfg.blocks)
        self.shared_adaln = SharedAdaLN(d, count) if adaln and cfg.adaln_lora_rank > 0 else None
        if not adaln:  # "tokens": which condition a token carries (timestep, class)
            self.token_type = nn.Parameter(torch.zeros(1, 1 + (self.y_embed is not None), d))
            nn.init.trunc_normal_(self.token_type, std=0.02)
        self.aug_embed = TimestepEmbed(d, cfg.frequency_embedding_size) if cfg.noise_cond else None
        s_up, k = cfg.cond_upsample, cfg.cond_channels
        self.cond_proj = nn.Linear(k, s_up * s_up * k) if s_up > 1 else None  # depth-to-space of `cond`
        self.blocks = nn.ModuleList([Block(kind, cfg, text) for kind, text in zip(cfg.blocks, cfg.text_blocks)])
        s, p, _ = cfg.patch
        self.final = FinalLayer(d, s * p * p * cfg.out_channels, adaln=adaln)
        self._init_weights()

    def _init_weights(self):
        # Xavier for the transformer's linear layers; zero-init modulations / outputs are set by their modules.
        for block in self.blocks:
            for parts, attn in zip(ATTENTIONS[block.kind], block.attentions):
                for module in (attn.qkv, attn.proj):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
                if self.cfg.zero_init_temporal and parts == ("T",):  # LaVie: temporal layers start as identity
                    nn.init.zeros_(attn.proj.weight)
            for module in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        for embed in (self.t_embed, self.aug_embed):
            for layer in (embed.mlp[0], embed.mlp[2]) if embed is not None else ():
                nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:  # text starts as the identity, like the zero-gated blocks (PixArt-alpha)
            if block.cross_attn is not None:
                nn.init.xavier_uniform_(block.cross_attn.qkv.weight)
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        if self.cond_proj is not None:  # starts as nearest-neighbour upsampling: every s x s block copies its pixel
            s = self.cfg.cond_upsample
            with torch.no_grad():
                self.cond_proj.weight.copy_(torch.eye(self.cfg.cond_channels).repeat_interleave(s * s, dim=0))
                self.cond_proj.bias.zero_()

    def upsample_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, k, T, h, w) -> (B, k, T, h s, w s): per latent pixel a learned linear map to s*s*k channels, then
        depth-to-space (pixel shuffle) per frame; the identity for cond_upsample = 1."""
        if self.cond_proj is None:
            return cond
        s = self.cfg.cond_upsample
        z = self.cond_proj(rearrange(cond, "b k t h w -> b t h w k"))
        return rearrange(z, "b t h w (k s1 s2) -> b k t (h s1) (w s2)", s1=s, s2=s)

    @property
    def null_class(self) -> int:
        return self.cfg.num_classes

    def drop_labels(self, y: Optional[torch.Tensor], generator: Optional[torch.Generator] = None):
        """Training-time label dropout (to the null class) for classifier-free guidance."""
        return y if (y is None or self.y_embed is None) else self.y_embed.drop(y, generator)

    def timestep_embedding(self, t: torch.Tensor, aug_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, d): embedding of t, plus that of the noise-augmentation level t_sr (noise_cond; 0 when omitted)."""
        c = self.t_embed(t)
        if self.aug_embed is not None:
            c = c + self.aug_embed(torch.zeros_like(t) if aug_t is None else aug_t.to(t.device).expand_as(t))
        return c

    def condition(self, t: torch.Tensor, y: Optional[torch.Tensor], aug_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SiLU(c + t [+ t_sr]): the vector every AdaLN layer reads, (B, d)."""
        c = self.timestep_embedding(t, aug_t)
        if self.y_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.null_class, dtype=torch.long, device=t.device)
            c = c + self.y_embed(y)
        return F.silu(c)

    def condition_tokens(self, t: torch.Tensor, y: Optional[torch.Tensor],
                         aug_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, 1 or 2, d): timestep [+ t_sr] [and class] embeddings as tokens (conditioning="tokens")."""
        parts = [self.timestep_embedding(t, aug_t)]
        if self.y_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.null_class, dtype=torch.long, device=t.device)
            parts.append(self.y_embed(y))
        return torch.stack(parts, dim=1) + self.token_type

    def assemble_input(self, x, self_cond=None, context=None, context_mask=None, cond=None) -> torch.Tensor:
        """Channel concat of x_t [, x0 estimate] [, mask * context, mask] [, cond] -> (B, model_in_channels, T, H, W)."""
        parts = [x]
        if self.cfg.self_cond_prob > 0:
            parts.append(torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype))
        if self.cfg.context_frames > 0:
            if context is None or context_mask is None:
                parts += [torch.zeros_like(x), torch.zeros_like(x[:, :1])]
            else:
                B, _, T, H, W = x.shape
                mask = context_mask.to(x.dtype).view(B, 1, T, 1, 1).expand(B, 1, T, H, W)
                parts += [context.to(x.dtype) * mask, mask]
        if self.cfg.cond_channels > 0:
            s = self.cfg.cond_upsample
            want = (self.cfg.cond_channels, x.shape[2], x.shape[3] // s, x.shape[4] // s)
            if cond is None or tuple(cond.shape[1:]) != want:
                raise ValueError(f"the model takes a cond input of shape (B, {', '.join(map(str, want))}) (cascade "
                                 f"stages' low-res latents{f', upsampled {s}x inside' if s > 1 else ''}), got "
                                 f"{None if cond is None else tuple(cond.shape)}")
            parts.append(self.upsample_cond(cond.to(x.dtype)))
        return torch.cat(parts, dim=1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        *,
        self_cond: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        is_image: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        cond: Optional[torch.Tensor] = None,
        aug_t: Optional[torch.Tensor] = None,
        frame_is_image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        B, C, T, H, W = x.shape
        gT, gH, gW = self.cfg.input_size
        appended = frame_is_image is not None and T > gT
        if C != self.cfg.in_channels or (H, W) != (gH, gW) or (T not in (1, gT) and not appended):
            raise ValueError(
                f"input {tuple(x.shape)} does not match the model's latents (B, {self.cfg.in_channels}, "
                f"{gT} or 1, {gH}, {gW})"
            )
        if T % self.cfg.temporal_patch_size:
            raise ValueError(f"{T}-frame input: images need temporal_patch_size 1 (got {self.cfg.temporal_patch_size})")
        if frame_is_image is not None:
            if self.cfg.temporal_patch_size != 1:
                raise ValueError("image frames (frame_is_image) need temporal_patch_size 1 "
                                 f"(got {self.cfg.temporal_patch_size})")
            if tuple(frame_is_image.shape) != (B, T):
                raise ValueError(f"frame_is_image must be (B, T) = {(B, T)}, got {tuple(frame_is_image.shape)}")
            frame_is_image = frame_is_image.to(x.device, torch.bool)
        x = x.to(self.patch_embed.proj.weight.dtype)  # bf16-true weights; a no-op under autocast
        c = shared = tokens = None
        if self.cfg.conditioning == "adaln":
            c = self.condition(t, y, aug_t)
            shared = self.shared_adaln(c) if self.shared_adaln is not None else None
        else:
            tokens = self.condition_tokens(t, y, aug_t)
        h = self.patch_embed(self.assemble_input(x, self_cond, context, context_mask, cond))  # (B, T/s, H/p, W/p, d)
        cond = c  # from here on: SiLU(c + t), the AdaLN input (None with token conditioning)
        h = self.pos_embed(h, is_image, frame_is_image)
        with sdpa_context(self.cfg.sdpa_backend):
            for block in self.blocks:
                if self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                    h = checkpoint(block, h, cond, shared, is_image, text, text_mask, tokens, frame_is_image,
                                   use_reentrant=False)
                else:
                    h = block(h, cond, shared, is_image, text, text_mask, tokens, frame_is_image)
        h = self.final(h, cond)  # (B, T/s, H/p, W/p, s*p*p*out_channels)
        return unpatchify(h, self.cfg.patch_size, self.cfg.out_channels, self.cfg.temporal_patch_size)


def count_params(cfg: ModelConfig, trainable_only: bool = True) -> int:
    """Stage-2 parameters of a config, built on the meta device (no memory, instant even for XL)."""
    with torch.device("meta"):
        model = WALT(cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def tokens_per_sample(cfg: ModelConfig, latent_shape: Optional[tuple] = None) -> int:
    """Transformer tokens of one sample: T/s * H/p * W/p for latents (T, H, W) (default cfg.input_size)."""
    T, H, W = latent_shape if latent_shape is not None else cfg.input_size
    s, p, _ = cfg.patch
    return max(T // s, 1) * (H // p) * (W // p)


def train_flops_per_sample(cfg: ModelConfig) -> float:
    """Model FLOPs of one training sample (forward + backward = 3x forward, matmuls only).

    Linear layers: 2 * params * tokens; attention: QK^T and AV, 4 * n_window * d per token (a head
    group of a split attention has d / groups channels).
    """
    tokens, d = tokens_per_sample(cfg), cfg.hidden_size
    fwd = 2 * tokens * 2 * cfg.mlp_ratio * d * d * cfg.depth  # MLPs
    for kind in cfg.blocks:
        for parts in ATTENTIONS[kind]:
            fwd += 2 * tokens * 4 * d * d  # qkv + proj
            for part in parts:
                wt, wh, ww = cfg.windows(part)[0]
                fwd += 4 * tokens * (wt * wh * ww) * d / len(parts)
    s, p, _ = cfg.patch
    fwd += 2 * tokens * s * p * p * d * (cfg.model_in_channels + cfg.out_channels)
    return 3.0 * fwd
