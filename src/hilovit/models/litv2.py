"""LITv2 (Pan et al., "Fast Vision Transformers with HiLo Attention", NeurIPS 2022).

A four-stage pyramid. Early stages (``has_msa == 0``) hold ConvFFN blocks only (LayerNorm, then an
MLP with a depth-wise 3x3 convolution between its linear layers); the later ones hold HiLo + ConvFFN
blocks. Between stages, deformable token merging (DTM) halves the map and doubles the channels.
The blocks and stages live in :mod:`hilovit.models.litv2_blocks`; this file holds the model, its
optimiser parameter groups, the registered entry points and the published weights.

Inside, token maps are channels last ``(B, H, W, C)``. State dict keys and shapes are those of the
official code (ziplab/LITv2), so its classification checkpoints (and, for :class:`LITv2Backbone`
or ``features_only=True``, the ``backbone.*`` part of its mmdet checkpoints) load with
``strict=True``, BatchNorm statistics included.

Any input size works, with the semantics of the official detection backbone: the image is padded
on the bottom/right to a multiple of the patch size, HiLo pads each map to a multiple of its
window and crops back, the depth-wise convolution sees the true H x W, and DTM floors odd sides.
Where the official classification model accepts an input (square, every stage size even and
divisible by the HiLo window) both compute the same function.

Speed: on CPU without autograd the FFN runs as fused oneDNN kernels (bias, GELU and the residual
add inside the linear layers and the depth-wise convolution, see
:class:`~hilovit.layers.mlp.ConvFFN`) and the DTM's BatchNorm is folded into its convolution; under
``torch.autocast('cpu', torch.bfloat16)`` every matrix product and convolution runs in bfloat16.
Training runs the plain modules; :mod:`hilovit.layers.fast` decides (and ``hilovit.fast_inference(False)``
turns it off).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.layers.embed import PatchEmbed
from hilovit.layers.mlp import ConvFFN
from hilovit.layers.windows import to_2tuple
from hilovit.models._api import (
    HierarchicalModel,
    _as_list,
    check_global_pool,
    check_image_input,
    feature_take_indices,
    init_weights,
    update_pretrained_cfg,
)
from hilovit.models._prefix import has_backbone_keys, split_backbone
from hilovit.models.checkpoint import register_family
from hilovit.models.convert import drop_classifier
from hilovit.models.litv2_blocks import HiLoBlock, LITStage
from hilovit.models.pretrained import SQUASH, PretrainedWeights, register_weights
from hilovit.models.registry import register_model
from hilovit.options import check_fraction, check_int, check_number

__all__ = ["LITv2", "param_groups"]
_RELEASES = "https://github.com/ziplab/LITv2/releases/download/"
_PAPER = "https://arxiv.org/abs/2205.13213"


def _cfg(**kwargs) -> Dict[str, Any]:
    cfg = {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,  # the official evaluation resizes to 256/224 of the size, then centre-crops
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "crop_mode": "center",
        "license": "apache-2.0",  # ziplab/LITv2 is released under the Apache 2.0 licence
        "paper": "https://arxiv.org/abs/2205.13213",
        "source": "https://github.com/ziplab/LITv2",
    }
    cfg.update(kwargs)
    return cfg


def _check_stages(embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], has_msa: Sequence[int],
                  local_ws: Optional[Sequence[int]]) -> Tuple[List[int], List[int], List[int], List[int]]:
    """The per-stage arguments checked and completed: ``(depths, num_heads, has_msa, local_ws)`` as lists."""
    depths = [check_int(d, f"depths[{i}]", 1) for i, d in enumerate(_as_list(depths, "depths"))]
    n = len(depths)
    if n < 1:
        raise ValueError("depths must name at least one stage, got []")
    num_heads = _as_list(num_heads, "num_heads", n)
    has_msa = [int(bool(m)) for m in _as_list(has_msa, "has_msa", n)]
    if local_ws is None:
        local_ws = [0 if not m else (1 if i == n - 1 else 2) for i, m in enumerate(has_msa)]
    local_ws = _as_list(local_ws, "local_ws", n)
    for i in range(n):
        dim = embed_dim * 2**i
        if has_msa[i]:
            check_int(local_ws[i], f"local_ws[{i}] (HiLo window of attention stage {i})", 1)
            h = check_int(num_heads[i], f"num_heads[{i}]", 1)
            if dim % h:
                raise ValueError(f"num_heads[{i}] = {h} must divide the channels of stage {i} ({dim})")
    return depths, num_heads, has_msa, local_ws


def _check_alpha_mlp_ratio(alpha: float, mlp_ratio: float, embed_dim: int) -> None:
    """``alpha`` in [0, 1]; ``mlp_ratio`` a number giving at least one hidden channel."""
    check_number(alpha, "alpha", minimum=0, maximum=1)
    check_number(mlp_ratio, "mlp_ratio", minimum=0, min_open=True)
    if int(embed_dim * mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio={mlp_ratio!r}: expected a ratio giving at least one hidden channel "
                         f"(embed_dim={embed_dim})")


class LITv2(HierarchicalModel):
    r"""LITv2: HiLo attention in a four-stage pyramid with deformable token merging.

    Args (the official ones, with the official defaults):
        img_size: the training size (int or pair); only sets ``pretrained_cfg`` and the default of
            :meth:`flops`: any input size is accepted.
        patch_size: patch size of the stem convolution.
        in_chans: image channels.
        num_classes: classes of the linear head (0: no head, ``forward`` returns pooled features).
        embed_dim: channels of stage 0; stage i has ``embed_dim * 2**i``.
        depths: blocks per stage.
        num_heads: attention heads per stage (used in the ``has_msa`` stages).
        mlp_ratio: FFN hidden channels / channels.
        qkv_bias, qk_scale: HiLo's.
        drop_rate: dropout after the patch embedding, in the FFNs and after HiLo's projections.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        norm_layer: the LayerNorm class.
        ape: accepted for the official signature; the official model builds no absolute position
            embedding whatever its value, and neither does this one (``True`` warns).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing of every block (see :meth:`set_grad_checkpointing`).
        has_msa: per stage, 1 for HiLo + ConvFFN blocks, 0 for ConvFFN blocks only.
        alpha: share of Lo-Fi heads in HiLo (``int(num_heads * alpha)`` heads).
        local_ws: per stage, HiLo's window (ignored where ``has_msa == 0``); ``None`` gives 2 in the
            attention stages and 1 in the last (``[0, 0, 2, 1]`` for the defaults).

    Beyond the official ones:
        features_only: build the multi-scale feature extractor instead of the classifier: no final
            norm and head, LayerNorms ``norm{i}`` on the outputs of the stages in ``out_indices``
            except stage 0, ``forward`` returns the maps ``(B, C_i, H_i, W_i)``. State dict equal to
            the official detection backbone's (see :class:`LITv2Backbone`).
        out_indices: stages whose outputs ``features_only`` returns (default all; negative ones
            counted from the end, see :func:`~hilovit.models._api.feature_take_indices`).
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (no pooling: :meth:`forward_head`
            applies the head at every position, ``(B, h, w, num_classes)``, as timm's).
        head_drop_rate: dropout before the head (timm's ``drop_rate``; ``create_model(drop_rate=...)``
            sets this one).

    Shape:
        ``forward``: ``(B, in_chans, H, W) -> (B, num_classes)``, any ``H, W`` at least
        :attr:`min_input_size`; ``forward_features``: ``-> (B, H / 32, W / 32, num_features)`` (for
        patch 4, four stages; sides rounded as the padding and the merges do).

    Example::

        >>> model = LITv2(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], alpha=0.9,
        ...               local_ws=[0, 0, 2, 1], num_classes=10)
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 10])
        >>> [f.shape[-2:] for f in LITv2(embed_dim=48, features_only=True)(torch.randn(1, 3, 70, 102))]
        [torch.Size([18, 26]), torch.Size([9, 13]), torch.Size([4, 6]), torch.Size([2, 3])]
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        has_msa: Sequence[int] = (0, 0, 1, 1),
        alpha: float = 0.5,
        local_ws: Optional[Sequence[int]] = None,
        features_only: bool = False,
        out_indices: Optional[Sequence[int]] = None,
        global_pool: str = "avg",
        head_drop_rate: float = 0.0,
    ):
        super().__init__()
        self.img_size = to_2tuple(img_size, "img_size")
        if min(self.img_size) < 1:
            raise ValueError(f"img_size must be positive, got {img_size!r}")
        self.patch_size = check_int(patch_size, "patch_size", 1)
        self.in_chans = check_int(in_chans, "in_chans", 1)
        self.num_classes = 0 if features_only else check_int(num_classes, "num_classes", 0)
        self.embed_dim = check_int(embed_dim, "embed_dim", 1)
        depths, num_heads, has_msa, local_ws = _check_stages(embed_dim, depths, num_heads, has_msa, local_ws)
        n = len(depths)
        _check_alpha_mlp_ratio(alpha, mlp_ratio, embed_dim)
        drop_rate = check_fraction(drop_rate, "drop_rate")
        attn_drop_rate = check_fraction(attn_drop_rate, "attn_drop_rate")
        drop_path_rate = check_fraction(drop_path_rate, "drop_path_rate")
        check_global_pool(global_pool)
        head_drop_rate = check_fraction(head_drop_rate, "head_drop_rate")
        if ape:
            warnings.warn("LITv2: ape=True is ignored, as in the official code (no absolute position embedding)",
                          stacklevel=2)
        out_indices = tuple(feature_take_indices(n, out_indices, "out_indices")[0])  # in stage order

        self.depths, self.num_heads, self.has_msa, self.local_ws = depths, list(num_heads), has_msa, local_ws
        self.alpha, self.mlp_ratio, self.ape, self.patch_norm = alpha, mlp_ratio, ape, patch_norm
        self.num_layers = n
        self.features_only = bool(features_only)
        self.out_indices = out_indices
        self.global_pool = global_pool
        self.stage_dims = [embed_dim * 2**i for i in range(n)]
        self.num_features = self.stage_dims[-1]
        self.head_hidden_size = self.num_features

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.layers = self._build_stages(qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, norm_layer)
        self._build_outputs(norm_layer)
        reduction = [self.patch_size * 2**i for i in range(n)]
        self.feature_info = self._build_feature_info(self.stage_dims, reduction,
                                                     out_indices if self.features_only else range(n))
        self.apply(self._init_weights)
        update_pretrained_cfg(self, base=_cfg(num_classes=self.num_classes, input_size=(in_chans, *self.img_size),
                                              pool_size=tuple(-(-s // reduction[-1]) for s in self.img_size)))
        if use_checkpoint:
            self.set_grad_checkpointing(True)

    def _build_stages(self, qkv_bias: bool, qk_scale: Optional[float], drop_rate: float, attn_drop_rate: float,
                      drop_path_rate: float, norm_layer: Callable[..., nn.Module]) -> nn.ModuleList:
        """The stages ``layers.{i}``, stochastic depth rising linearly from 0 over all blocks."""
        depths, n = self.depths, self.num_layers
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        layers = nn.ModuleList()
        for i in range(n):
            layers.append(LITStage(
                dim=self.stage_dims[i], depth=depths[i], num_heads=self.num_heads[i], has_msa=bool(self.has_msa[i]),
                local_ws=self.local_ws[i], alpha=self.alpha, mlp_ratio=self.mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer, downsample=i < n - 1,
            ))
        return layers

    def _build_outputs(self, norm_layer: Callable[..., nn.Module]) -> None:
        """``features_only``: the output norms ``norm{i}``; otherwise the final ``norm`` and ``head``."""
        if self.features_only:
            for i in self.out_indices:  # the official detection backbone's output norms (none on stage 0)
                if i != 0:
                    self.add_module(f"norm{i}", norm_layer(self.stage_dims[i]))
            self.norm, self.head = nn.Identity(), nn.Identity()
        else:
            self.norm = norm_layer(self.num_features)
            self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official init (:func:`~hilovit.models._api.init_weights`), and the depth-wise convs of the
        # FFNs N(0, 2 / fan_out) with fan_out = 9; the DTM keeps its own (Kaiming-uniform deformable
        # conv, zero offset predictor).
        init_weights(m)
        if isinstance(m, ConvFFN):
            conv = m.dwconv.dwconv
            fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(conv.bias)

    # ----------------------------------------------------------------- timm-style API
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names kept out of weight decay beyond norms and biases (none in LITv2)."""
        return set()

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of storing its activations."""
        for stage in self.layers:
            stage.grad_checkpointing = bool(enable)

    def param_groups(self, lr: float, weight_decay: float = 0.05, offset_lr_scale: float = 0.01,
                     **kwargs) -> List[Dict[str, Any]]:
        """Optimiser parameter groups as the official recipe; see :func:`param_groups`."""
        return param_groups(self, lr, weight_decay, offset_lr_scale, **kwargs)

    # ----------------------------------------------------------------- sizes
    @property
    def min_input_size(self) -> int:
        """Smallest image side: every merge needs a map of at least 2 x 2."""
        return (2 ** (self.num_layers - 1) - 1) * self.patch_size + 1

    def feature_sizes(self, H: int, W: Optional[int] = None) -> List[Tuple[int, int]]:
        """The map size ``(H_i, W_i)`` of every stage for an ``H x W`` image."""
        W = H if W is None else W
        h, w = -(-H // self.patch_size), -(-W // self.patch_size)
        sizes = []
        for i in range(self.num_layers):
            sizes.append((h, w))
            if i < self.num_layers - 1:
                if h < 2 or w < 2:
                    raise ValueError(
                        f"LITv2: an image of {H}x{W} is too small: stage {i} would be {h}x{w} and its token "
                        f"merging needs at least 2x2; the smallest side for patch_size {self.patch_size} and "
                        f"{self.num_layers} stages is {self.min_input_size}"
                    )
                h, w = h // 2, w // 2
        return sizes

    def _check_input(self, x: torch.Tensor) -> None:
        check_image_input(self, x)
        self.feature_sizes(x.shape[2], x.shape[3])  # raises, naming the stage, when too small

    # ----------------------------------------------------------------- forward (the rest: HierarchicalModel)
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.pos_drop(self.patch_embed(x))  # (B, H/p, W/p, C)

    def _run_stage(self, i: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.layers[i](x)  # (the stage's output, the next stage's input)

    def _feature_norm(self, i: int, out: torch.Tensor) -> torch.Tensor:
        # as the official detection backbone: stage 0's output as is, the others through norm{i}
        return getattr(self, f"norm{i}")(out) if i != 0 else out

    # ----------------------------------------------------------------- FLOPs
    def flops(self, img_size: Optional[Union[int, Tuple[int, int]]] = None, official: bool = False) -> int:
        """Multiply-adds of one forward pass at ``img_size`` (default: the model's ``img_size``).

        Default: what actually runs and :func:`hilovit.flops.count_flops` counts: the patch
        projection, every linear layer, the depth-wise convs (9 per output), HiLo (the official
        formula, exact when the maps divide the windows), the DTM offset conv (8 output channels)
        and deformable conv, and the head; norms, activations, pooling, biases and the bilinear
        sampling are left out.

        ``official=True``: the official ``LITv2.flops()`` formula (square ``img_size`` only): it adds
        the norms, the conv biases and a pooling term and counts 12 offset channels in every DTM.
        For LITv2-S at 224 it gives 3,734,401,596 against 3,723,626,496 here (0.29% less).
        """
        H, W = to_2tuple(self.img_size if img_size is None else img_size, "img_size")
        if official:
            return self._official_flops(H, W)
        sizes = self.feature_sizes(H, W)
        total = self.patch_embed.flops(H, W)
        for stage, (h, w) in zip(self.layers, sizes):
            total += stage.flops(h, w)
        if not self.features_only and self.num_classes > 0:
            total += self.num_features * self.num_classes
        return int(total)

    def _official_flops(self, H: int, W: int) -> int:
        if H != W:
            raise ValueError(f"official=True: the official flops() assumes a square image, got {H}x{W}")
        p = self.patch_size
        r = H // p  # patches_resolution
        total = r * r * self.embed_dim * self.in_chans * p * p
        if self.patch_norm:
            total += r * r * self.embed_dim
        for i, stage in enumerate(self.layers):
            h = r // 2**i
            dim = self.stage_dims[i]
            hid = dim * self.mlp_ratio
            for blk in stage.blocks:
                total += int(10 * hid * h * h)  # depth-wise conv: 9 taps + bias per output
                total += 2 * h * h * dim * hid  # fc1, fc2
                total += dim * h * h  # norm2
                if isinstance(blk, HiLoBlock):
                    total += dim * h * h + blk.attn.flops(h, h)  # norm1, HiLo
            if stage.downsample is not None:
                m = ((h - 2) // 2 + 1) ** 2
                total += m * (4 * dim * 12 + 12) + m * (4 * dim * 2 * dim + 2 * dim) + (h // 2) * (h // 2) * 2 * dim
        total += self.num_features * r * r // 2**self.num_layers
        total += self.num_features * self.num_classes
        return int(total)

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_filter_fn(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Adapt an official LITv2 checkpoint for :func:`hilovit.load_checkpoint`: an mmdet checkpoint
        gives its ``backbone.*`` part (prefix removed); a classification checkpoint loaded into a
        ``features_only`` model loses its ``norm``/``head``, and the output norms ``norm{i}`` (absent
        from it) keep their fresh initialisation with a warning (:func:`hilovit.models.convert.drop_classifier`),
        as the official detection training starts."""
        sd = dict(state_dict)
        if has_backbone_keys(sd):
            sd, _ = split_backbone(sd)
        return drop_classifier(self, sd) if self.features_only else sd


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    offset_lr_scale: float = 0.01,
    no_weight_decay: Sequence[str] = (),
    scale_offset_bias: bool = False,
) -> List[Dict[str, Any]]:
    """Optimiser parameter groups as the official LITv2 recipe builds them.

    * ``'decay'``: every other trainable parameter, ``weight_decay``;
    * ``'no_decay'``: 1-D parameters (norms, biases), ``*.bias`` and the names in
      ``model.no_weight_decay()`` or ``no_weight_decay``, weight decay 0;
    * ``'offset'``: the DTM offset predictors' weights (``*conv_offset.weight``), with
      ``lr * offset_lr_scale`` (the official ``OFFSET_LR_MULTI = 0.01``) and ``weight_decay``. As in
      the official code their biases fall in ``'no_decay'`` at the full rate, unless
      ``scale_offset_bias`` (then they join the offset rate, still without decay).

    Frozen parameters are left out, as are empty groups. Each group carries ``name`` and
    ``lr_scale`` (for schedulers that rescale per group).

    Example::

        >>> model = hilovit.create_model("litv2_nano")
        >>> [g["name"] for g in param_groups(model, lr=1e-3, weight_decay=0.05)]
        ['decay', 'no_decay', 'offset']
        >>> opt = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.05))
    """
    if lr <= 0 or offset_lr_scale < 0 or weight_decay < 0:
        raise ValueError(
            f"expected lr > 0, weight_decay >= 0, offset_lr_scale >= 0; got lr={lr}, weight_decay={weight_decay}, "
            f"offset_lr_scale={offset_lr_scale}"
        )
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    keywords = set(model.no_weight_decay_keywords()) if hasattr(model, "no_weight_decay_keywords") else set()
    decay, no_decay, offset, offset_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_offset = "conv_offset" in name and offset_lr_scale != 1.0
        if p.ndim <= 1 or name.endswith(".bias") or name in skip or any(k in name for k in keywords):
            (offset_no_decay if is_offset and scale_offset_bias else no_decay).append(p)
        elif is_offset:
            offset.append(p)
        else:
            decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0, "lr_scale": 1.0},
        {"name": "offset", "params": offset, "lr": lr * offset_lr_scale, "weight_decay": weight_decay,
         "lr_scale": offset_lr_scale},
        {"name": "offset_no_decay", "params": offset_no_decay, "lr": lr * offset_lr_scale, "weight_decay": 0.0,
         "lr_scale": offset_lr_scale},
    ]
    return [g for g in groups if g["params"]]


# --------------------------------------------------------------------------- registry
def _create(cfg_overrides: Dict[str, Any], defaults: Dict[str, Any], **kwargs) -> LITv2:
    args = dict(defaults)
    args.update(kwargs)
    model = LITv2(**args)
    update_pretrained_cfg(model, **cfg_overrides, num_classes=model.num_classes,
                          input_size=(model.in_chans, *model.img_size))
    return model


_SMALL = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], alpha=0.9, local_ws=[0, 0, 2, 1])
_MEDIUM = dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], alpha=0.9, local_ws=[0, 0, 2, 1])
_BASE = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], alpha=0.9, local_ws=[0, 0, 2, 1])


@register_model
def litv2_s(**kwargs) -> LITv2:
    """LITv2-S (ImageNet-1k, 224): 27,844,000 parameters, 3.72 GMACs (official count 3.73 G), 82.0% top-1.

    ``alpha`` and ``local_ws`` can be overridden (the official release has LITv2-S for alpha 0 to 1).
    """
    return _create({}, dict(_SMALL, drop_path_rate=0.2), **kwargs)


@register_model
def litv2_m(**kwargs) -> LITv2:
    """LITv2-M (ImageNet-1k, 224): 48,830,368 parameters, 7.5 GMACs, 83.3% top-1."""
    return _create({}, dict(_MEDIUM, drop_path_rate=0.3), **kwargs)


@register_model
def litv2_b(**kwargs) -> LITv2:
    """LITv2-B (ImageNet-1k, 224): 86,520,704 parameters, 13.2 GMACs, 83.6% top-1."""
    return _create({}, dict(_BASE, drop_path_rate=0.5), **kwargs)


@register_model
def litv2_b_384(**kwargs) -> LITv2:
    """LITv2-B fine-tuned at 384 (no centre crop): 86,520,704 parameters, 39.7 GMACs, 84.7% top-1."""
    return _create(
        {"crop_pct": 1.0, "pool_size": (12, 12)},
        dict(_BASE, drop_path_rate=0.5, img_size=384),
        **kwargs,
    )


@register_model
def litv2_nano(**kwargs) -> LITv2:
    """A small LITv2 for 28-32 px images (Fashion-MNIST, CIFAR): no pretrained weights.

    Patch 2, ``embed_dim=32``, ``depths=[1, 1, 2, 1]``, ``num_heads=[1, 2, 4, 8]``, alpha 0.9,
    ``local_ws=[0, 0, 3, 1]``, 10 classes, drop path 0.1. A 28 x 28 image gives maps of 14, 7, 3 and
    1: stage 2's HiLo window of 3 covers its 3 x 3 map (Hi-Fi: one window; Lo-Fi: one pooled token)
    and stage 3 is plain attention. 1,424,098 parameters (1,423,842 with ``in_chans=1``); at 28 x 28
    8.46 M multiply-adds per image (``model.flops()``; 8.41 M with ``in_chans=1``). Use ``in_chans=1``
    for grey images (``pretrained_cfg`` then has one mean/std value).
    """
    defaults = dict(img_size=28, patch_size=2, num_classes=10, embed_dim=32, depths=[1, 1, 2, 1],
                    num_heads=[1, 2, 4, 8], alpha=0.9, local_ws=[0, 0, 3, 1], drop_path_rate=0.1)
    chans = kwargs.get("in_chans", 3)
    stats = (0.5,) * chans if isinstance(chans, int) else (0.5,)
    return _create({"crop_pct": 1.0, "mean": stats, "std": stats}, defaults, **kwargs)


# --------------------------------------------------------------------------- published weights
# README.md of ziplab/LITv2 (release v1.0; single-crop 224, crop 224/256 as the official TEST.CROP
# evaluation, bicubic; the 384 model evaluated on the whole image resized to 384x384). The alpha series
# (release v1.1) is LITv2-S trained with other shares of Lo-Fi heads: (alpha, tag, release file,
# official top-1); the tags keep underscores, the release's file names have the decimal point.
def _weights(model: str, tag: str, file: str, top1: Optional[float], **kw: Any) -> PretrainedWeights:
    return PretrainedWeights(model=model, tag=tag, url=_RELEASES + file, top1=top1, paper=_PAPER, **kw)


_ALPHAS = ((0.0, "alpha_0", "alpha_0.pth", 81.16), (0.2, "alpha_0_2", "alpha_0.2.pth", 81.89),
           (0.4, "alpha_0_4", "alpha_0.4.pth", 81.81), (0.5, "alpha_0_5", "alpha_0.5.pth", 81.88),
           (0.7, "alpha_0_7", "alpha_0.7.pth", 81.94), (0.9, "alpha_0_9", "alpha_0.9.pth", 82.03),
           (1.0, "alpha_1", "alpha_1.pth", 81.89))
register_weights(
    _weights("litv2_s", "in1k", "v1.0/litv2_s.pth", 82.0, variant_args={"alpha": 0.9}),
    *(_weights("litv2_s", tag, f"v1.1/{file}", top1, variant_args={"alpha": a}, file_name=f"litv2_s-{tag}.pth")
      for a, tag, file, top1 in _ALPHAS),
    _weights("litv2_m", "in1k", "v1.0/litv2_m.pth", 83.3),
    _weights("litv2_b", "in1k", "v1.0/litv2_b.pth", 83.6),
    _weights("litv2_b_384", "in1k", "v1.0/litv2_b_384.pth", 84.7, input_size=(3, 384, 384), **SQUASH),
)

# The keys that name a LITv2 checkpoint in loading errors (the deformable merge's offsets, HiLo's
# low-frequency query), and its stem convolution.
register_family("a LITv2", markers=("conv_offset", "attn.l_q"), stem="patch_embed.proj.weight")
