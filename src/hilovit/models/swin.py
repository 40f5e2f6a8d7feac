"""Swin Transformer (Liu et al., ICCV 2021), exact to the official checkpoints, at any input size.

Parameter and buffer names and shapes are those of microsoft/Swin-Transformer, so its ``.pth``
files load with every key checked (:func:`hilovit.load_checkpoint`); timm's layout (merging at the
start of a stage, ``head.fc``) is converted on load. Inside the model a token grid is channels-last
``(B, H, W, C)``.

Sizes. The official classification model runs only at ``img_size``. This one runs at any size, in
inference and in training, the way the official detection backbone does: the image is zero-padded
to a multiple of the patch size, each block zero-pads its (normalised) map to a multiple of its
window and computes the shifted-window mask for the padded map, and odd maps are zero-padded
before patch merging. Window sizes and shifts are fixed at construction from ``img_size`` by the
official rule (a stage not larger than the window gets the stage's size as window and no shift);
where the official model accepts the input, the result is the same.

Registered names: ``swin_t``, ``swin_s``, ``swin_b``, ``swin_l`` (window 7, 224),
``swin_b_384``, ``swin_l_384`` (window 12, 384), with timm's long names as aliases, and
``swin_nano`` (28 px, for Fashion-MNIST-sized inputs). The blocks and stages live in
:mod:`hilovit.models.swin_blocks`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.layers.embed import PatchEmbed, PatchMerging
from hilovit.layers.windows import to_2tuple
from hilovit.models._api import (
    HierarchicalModel,
    check_global_pool,
    feature_take_indices,
    init_weights,
    update_pretrained_cfg,
)
from hilovit.models.checkpoint import register_family
from hilovit.models.pretrained import SQUASH, PretrainedWeights, register_weights
from hilovit.models.registry import register_model
from hilovit.models.swin_blocks import BasicLayer, _ceil_div
from hilovit.models.swin_convert import swin_filter
from hilovit.options import check_fraction, check_int

__all__ = ["SwinTransformer"]
_RELEASES = "https://github.com/SwinTransformer/storage/releases/download/"
_PAPER = "https://arxiv.org/abs/2103.14030"
_IN22K = 21841  # the ImageNet-22k classifier of the official Swin files


class SwinTransformer(HierarchicalModel):
    r"""Swin Transformer: patch embedding, four stages of (shifted-)window attention, pool, head.

    Constructor arguments, defaults, and parameter names are the official ones
    (microsoft/Swin-Transformer ``models/swin_transformer.py``).

    Args:
        img_size: the size the model is built for (int or (H, W)); it sets the windows (the
            official rule clamps a window to a stage not larger than it, without shift), the
            ``attn_mask`` buffers and ``absolute_pos_embed``. Other input sizes run too (padding).
        patch_size: side of the square patches of the embedding (4).
        in_chans: image channels (3).
        num_classes: classifier outputs; 0 for no head (``forward`` returns pooled features).
        embed_dim: channels of stage 1; stage ``i`` has ``embed_dim * 2**i``.
        depths: blocks per stage (any number of stages); num_heads: heads per stage.
        window_size: attention window side (7).
        mlp_ratio: MLP hidden size / channels (4).
        qkv_bias, qk_scale: bias of the qkv projection; attention scale (default head_dim ** -0.5).
        drop_rate: dropout after the embedding, the attention projection and in the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly over the blocks from 0 to this value.
        norm_layer: normalisation class (``nn.LayerNorm``).
        ape: learned absolute position embedding (resized bicubically for other input sizes).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing of each block in training.
        features_only: build a backbone whose ``forward`` returns the stage maps ``(B, C_i, H_i,
            W_i)`` of ``out_indices`` (no final norm, no head); see ``feature_info``.
        out_indices: stages returned by a ``features_only`` model (default: all; negative ones
            counted from the end, see :func:`~hilovit.models._api.feature_take_indices`).
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (no pooling: :meth:`forward_head`
            applies the head at every position, ``(B, h, w, num_classes)``, as timm's).
        head_drop_rate: dropout before the head (timm's ``drop_rate``; ``create_model(drop_rate=...)``
            sets this one).

    Shape:
        ``forward``: ``(B, in_chans, H, W) -> (B, num_classes)``, any H, W not smaller than the patch;
        ``forward_features``: ``-> (B, H/32, W/32, num_features)`` (channels last, unpooled, after the
        final norm; sides rounded up).

    Example::

        >>> model = SwinTransformer(img_size=64, embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
        ...                         window_size=4, num_classes=10)
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 10])
        >>> [f.shape[1:] for f in model.forward_intermediates(torch.randn(1, 3, 100, 150), intermediates_only=True)]
        [torch.Size([24, 25, 38]), torch.Size([48, 13, 19]), torch.Size([96, 7, 10]), torch.Size([192, 4, 5])]
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
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        features_only: bool = False,
        out_indices: Optional[Sequence[int]] = None,
        global_pool: str = "avg",
        head_drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        kwargs.pop("fused_window_process", None)  # official option with no effect on the function
        if kwargs:
            raise TypeError(f"SwinTransformer got unexpected arguments: {', '.join(sorted(kwargs))}")
        img_size = to_2tuple(img_size, "img_size")
        depths, num_heads = list(depths), list(num_heads)
        _check_args(img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size)
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = 0 if features_only else num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.mlp_ratio = mlp_ratio
        self.window_size = window_size
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.features_only = features_only
        self.grad_checkpointing = use_checkpoint
        self.global_pool = check_global_pool(global_pool)

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=norm_layer if patch_norm else None)
        res = (_ceil_div(img_size[0], patch_size), _ceil_div(img_size[1], patch_size))
        self.patches_resolution = list(res)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res[0] * res[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        self.layers = self._build_stages(res, depths, num_heads, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
                                         drop_path_rate, norm_layer, use_checkpoint)

        self.out_indices = tuple(feature_take_indices(self.num_layers, out_indices, "out_indices")[0])
        dims = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        reductions = [patch_size * 2**i for i in range(self.num_layers)]
        self.feature_info = self._build_feature_info(
            dims, reductions, self.out_indices if features_only else range(self.num_layers)
        )
        self.head_drop = nn.Dropout(check_fraction(head_drop_rate, "head_drop_rate"))
        if features_only:
            self.norm = nn.Identity()
            self.head = nn.Identity()
        else:
            self.norm = norm_layer(self.num_features)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        update_pretrained_cfg(self, base=_default_cfg(img_size, self.num_classes, in_chans))

    def _build_stages(self, res: Tuple[int, int], depths: Sequence[int], num_heads: Sequence[int], qkv_bias: bool,
                      qk_scale: Optional[float], drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                      norm_layer: Callable[[int], nn.Module], use_checkpoint: bool) -> nn.ModuleList:
        """The stages ``layers.{i}`` for a first map of ``res`` patches (each merge halves it, rounding up)."""
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # the official float32 steps
        layers = nn.ModuleList()
        for i in range(self.num_layers):
            layers.append(BasicLayer(
                dim=int(self.embed_dim * 2**i),
                input_resolution=res,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=self.window_size,
                mlp_ratio=self.mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None,
                use_checkpoint=use_checkpoint,
            ))
            res = (_ceil_div(res[0], 2), _ceil_div(res[1], 2))
        return layers

    # ---- timm's model API -------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names excluded from weight decay (as the official model)."""
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        """Name fragments excluded from weight decay (as the official model)."""
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable
        for layer in self.layers:
            layer.grad_checkpointing = enable

    # ---- forward (the rest: HierarchicalModel) -----------------------------------------------
    @property
    def min_input_size(self) -> int:
        """Smallest image side: one patch."""
        return self.patch_size

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        H0, W0 = self.patches_resolution
        pos = self.absolute_pos_embed.reshape(1, H0, W0, self.embed_dim)
        if x.shape[1:3] != (H0, W0):  # resized as the official detection backbone does
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic", align_corners=False)
            pos = pos.permute(0, 2, 3, 1)
        return x + pos

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # channels-last image: the convolution then writes (B, H/4, W/4, C) rows directly (no copy before the norm)
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))  # (B, H/4, W/4, C)
        if self.ape:
            x = self._pos_embed(x)
        return self.pos_drop(x)

    def _run_stage(self, i: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[i]
        out = layer.forward_blocks(x)  # the stage's map, before merging
        return out, (layer.downsample(out) if layer.downsample is not None else out)

    # ---- FLOPs ------------------------------------------------------------------------------
    def flops_breakdown(self, img_size: Optional[Union[int, Tuple[int, int]]] = None) -> Dict[str, int]:
        """Multiply-adds per part for one image of ``img_size`` (default: the construction size).

        Keys: ``patch_embed`` (projection), ``attention`` (qkv, both products and proj, counted
        at each block's padded size), ``mlp``, ``merging`` (reductions), ``head``, and ``norms``
        (each LayerNorm counted as ``H W C``, as the official code does). Everything but
        ``norms`` is a matrix product; :func:`hilovit.flops.count_flops` counts exactly those.
        """
        H, W = to_2tuple(img_size, "img_size") if img_size is not None else self.img_size
        H, W = _ceil_div(H, self.patch_size), _ceil_div(W, self.patch_size)
        out = {"patch_embed": self.patch_embed.flops(H * self.patch_size, W * self.patch_size)}
        norms = H * W * self.embed_dim if self.patch_embed.norm is not None else 0
        attn = mlp = merging = 0
        for layer in self.layers:
            C = layer.dim
            for blk in layer.blocks:
                attn += blk.attn.flops(H, W)
                mlp += 2 * H * W * C * int(C * blk.mlp_ratio)
                norms += 2 * H * W * C
            if layer.downsample is not None:
                merging += layer.downsample.flops(H, W)
                norms += H * W * C  # the official count of the merging LayerNorm over 4C
                H, W = _ceil_div(H, 2), _ceil_div(W, 2)
        head = 0
        if not self.features_only:
            norms += H * W * self.num_features
            head = self.num_features * self.num_classes
        out.update(attention=attn, mlp=mlp, merging=merging, head=head, norms=norms)
        return {k: int(v) for k, v in out.items()}

    def flops(self, img_size: Optional[Union[int, Tuple[int, int]]] = None) -> int:
        """Analytic multiply-adds for one image (the official ``flops()`` convention).

        Counts the patch projection, every block's attention at its padded size (qkv, ``q k^T``,
        ``attn v``, proj) and MLP, the mergings, the head, and each LayerNorm as ``H W C``.
        Differences from the official count: other sizes than ``img_size`` are counted at the
        padded sizes the model really runs; the final norm is counted as ``H W C`` at the last
        stage (the official code counts ``C * H0 * W0 / 2**num_layers``, a 0.003% difference for
        Swin-T). The executed count of :func:`hilovit.flops.count_flops` equals this total minus
        the ``norms`` entry of :meth:`flops_breakdown` (norms, softmax, bias and mask additions are
        not matrix products).
        """
        return int(sum(self.flops_breakdown(img_size).values()))

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Adapt an official or timm state dict (see :func:`hilovit.models.swin_convert.swin_filter`)."""
        return swin_filter(self, state_dict)


# ---- helpers --------------------------------------------------------------------------------


def _check_args(img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size) -> None:
    for name, value in (("patch_size", patch_size), ("in_chans", in_chans), ("embed_dim", embed_dim),
                        ("window_size", window_size)):
        check_int(value, name, 1)
    check_int(num_classes, "num_classes", 0)
    if min(img_size) < patch_size:
        raise ValueError(f"img_size {img_size} is smaller than patch_size={patch_size}")
    if not depths or not all(isinstance(d, int) and d >= 1 for d in depths):
        raise ValueError(f"depths must be a non-empty list of positive ints, got {depths!r}")
    if len(num_heads) != len(depths):
        raise ValueError(f"num_heads {num_heads!r} must have one entry per stage of depths {depths!r}")
    for i, h in enumerate(num_heads):
        dim = embed_dim * 2**i
        if not isinstance(h, int) or h < 1 or dim % h:
            raise ValueError(f"num_heads[{i}]={h!r} must be a positive int dividing the stage's {dim} channels")


def _default_cfg(img_size: Tuple[int, int], num_classes: int, in_chans: int) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": num_classes,
        "input_size": (in_chans, img_size[0], img_size[1]),
        "crop_pct": 0.9 if max(img_size) <= 224 else 1.0,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "fixed_input_size": False,
        "crop_mode": "center",
        "license": "mit",  # microsoft/Swin-Transformer is released under the MIT licence
    }




# ---- registry -------------------------------------------------------------------------------


def _create_swin(variant: str, defaults: Dict[str, Any], overrides: Dict[str, Any], **cfg: Any) -> SwinTransformer:
    model = SwinTransformer(**{**defaults, **overrides})
    update_pretrained_cfg(model, **cfg, architecture=variant, input_size=(model.in_chans, *model.img_size),
                          num_classes=model.num_classes)
    return model


@register_model(aliases={"swin_tiny_patch4_window7_224": "ms_in1k"})
def swin_t(**kwargs: Any) -> SwinTransformer:
    """Swin-T: 28.3M parameters, 4.49 GFLOPs (multiply-adds) at 224, window 7."""
    defaults = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2)
    return _create_swin("swin_t", defaults, kwargs)


@register_model(aliases={"swin_small_patch4_window7_224": "ms_in22k_ft_in1k"})
def swin_s(**kwargs: Any) -> SwinTransformer:
    """Swin-S: 49.6M parameters, 8.75 GFLOPs at 224, window 7."""
    defaults = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3)
    return _create_swin("swin_s", defaults, kwargs)


@register_model(aliases={"swin_base_patch4_window7_224": "ms_in22k_ft_in1k"})
def swin_b(**kwargs: Any) -> SwinTransformer:
    """Swin-B: 87.8M parameters, 15.4 GFLOPs at 224, window 7 (ImageNet-1k weights)."""
    defaults = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.5)
    return _create_swin("swin_b", defaults, kwargs)


@register_model(aliases={"swin_large_patch4_window7_224": "ms_in22k_ft_in1k"})
def swin_l(**kwargs: Any) -> SwinTransformer:
    """Swin-L: 196.5M parameters, 34.5 GFLOPs at 224, window 7 (ImageNet-22k pre-trained, 1k fine-tuned)."""
    defaults = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.2)
    return _create_swin("swin_l", defaults, kwargs)


@register_model(aliases={"swin_base_patch4_window12_384": "ms_in22k_ft_in1k"})
def swin_b_384(**kwargs: Any) -> SwinTransformer:
    """Swin-B at 384, window 12: 87.9M parameters, 47.1 GFLOPs (ImageNet-22k pre-trained, 1k fine-tuned)."""
    defaults = dict(
        img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12,
        drop_path_rate=0.2,
    )
    return _create_swin(
        "swin_b_384", defaults, kwargs, crop_pct=1.0
    )


@register_model(aliases={"swin_large_patch4_window12_384": "ms_in22k_ft_in1k"})
def swin_l_384(**kwargs: Any) -> SwinTransformer:
    """Swin-L at 384, window 12: 197.2M parameters, 104 GFLOPs (ImageNet-22k pre-trained, 1k fine-tuned)."""
    defaults = dict(
        img_size=384, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12,
        drop_path_rate=0.2,
    )
    return _create_swin(
        "swin_l_384", defaults, kwargs, crop_pct=1.0
    )


@register_model
def swin_nano(**kwargs: Any) -> SwinTransformer:
    """A small Swin for 28-32 px images (Fashion-MNIST, CIFAR); no published weights.

    ``img_size=28, patch_size=2, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12), window_size=7,
    num_classes=10, drop_path_rate=0.1``: three stages of 14x14 (windows of 7, shifted by 3), 7x7 (one
    window) and 4x4 (one window). 1,270,516 parameters (1,270,132 with ``in_chans=1``); 41.09 M multiply-adds
    per 28x28 image (``model.flops()``; 41.01 M with ``in_chans=1``). Use ``in_chans=1`` for grey images
    (``pretrained_cfg`` then has one mean/std value, 0.5); for 32 px inputs ``img_size=32, window_size=4``
    avoids padding.
    """
    defaults = dict(
        img_size=28, patch_size=2, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12), window_size=7,
        num_classes=10, drop_path_rate=0.1,
    )
    chans = kwargs.get("in_chans", 3)
    stats = (0.5,) * chans if isinstance(chans, int) else (0.5,)
    return _create_swin("swin_nano", defaults, kwargs, crop_pct=1.0, mean=stats, std=stats)


# ---- published weights ----------------------------------------------------------------------
# MODELHUB.md of microsoft/Swin-Transformer. The official evaluation resizes 224 models to 256 and
# centre-crops (crop_pct 0.875; timm uses 0.9) and resizes 384 models straight to 384x384. timm's own
# names (the aliases above) default to timm's first tag (timm/models/swin_transformer.py default_cfgs:
# the ImageNet-22k fine-tuned weights first, except for Swin-T); ours to the official ImageNet-1k file.
def _weights(model: str, tag: str, file: str, top1: Optional[float], timm_name: str, **kw: Any) -> PretrainedWeights:
    if tag == "ms_in22k":
        kw.setdefault("num_classes", _IN22K)
        kw.setdefault("model_args", {"num_classes": _IN22K})
        kw.setdefault("dataset", "imagenet-22k")
    elif tag == "ms_in22k_ft_in1k":
        kw.setdefault("dataset", "imagenet-22k, fine-tuned on imagenet-1k")
    if kw.get("input_size", (3, 224, 224))[1] >= 384:
        kw.update(SQUASH)
    return PretrainedWeights(model=model, tag=tag, url=_RELEASES + file, top1=top1, paper=_PAPER,
                             hf_hub_id=f"timm/{timm_name}.{tag}", **kw)


register_weights(
    _weights("swin_t", "ms_in1k", "v1.0.0/swin_tiny_patch4_window7_224.pth", 81.2, "swin_tiny_patch4_window7_224"),
    _weights("swin_t", "ms_in22k_ft_in1k", "v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth", 80.9,
             "swin_tiny_patch4_window7_224"),
    _weights("swin_t", "ms_in22k", "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", None, "swin_tiny_patch4_window7_224"),
    _weights("swin_s", "ms_in1k", "v1.0.0/swin_small_patch4_window7_224.pth", 83.2, "swin_small_patch4_window7_224"),
    _weights("swin_s", "ms_in22k_ft_in1k", "v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth", 83.2,
             "swin_small_patch4_window7_224"),
    _weights("swin_s", "ms_in22k", "v1.0.8/swin_small_patch4_window7_224_22k.pth", None,
             "swin_small_patch4_window7_224"),
    _weights("swin_b", "ms_in1k", "v1.0.0/swin_base_patch4_window7_224.pth", 83.5, "swin_base_patch4_window7_224"),
    _weights("swin_b", "ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth", 85.2,
             "swin_base_patch4_window7_224"),
    _weights("swin_b", "ms_in22k", "v1.0.0/swin_base_patch4_window7_224_22k.pth", None,
             "swin_base_patch4_window7_224"),
    _weights("swin_b_384", "ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth", 86.4,
             "swin_base_patch4_window12_384", input_size=(3, 384, 384)),
    _weights("swin_b_384", "ms_in1k", "v1.0.0/swin_base_patch4_window12_384.pth", 84.5, "swin_base_patch4_window12_384",
          input_size=(3, 384, 384)),
    _weights("swin_b_384", "ms_in22k", "v1.0.0/swin_base_patch4_window12_384_22k.pth", None,
             "swin_base_patch4_window12_384", input_size=(3, 384, 384)),
    _weights("swin_l", "ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth", 86.3,
             "swin_large_patch4_window7_224"),
    _weights("swin_l", "ms_in22k", "v1.0.0/swin_large_patch4_window7_224_22k.pth", None,
             "swin_large_patch4_window7_224"),
    _weights("swin_l_384", "ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth", 87.3,
             "swin_large_patch4_window12_384", input_size=(3, 384, 384)),
    _weights("swin_l_384", "ms_in22k", "v1.0.0/swin_large_patch4_window12_384_22k.pth", None,
             "swin_large_patch4_window12_384", input_size=(3, 384, 384)),
)

# The keys that name a Swin checkpoint in loading errors, and its stem convolution.
register_family("a Swin Transformer", markers=("relative_position_bias_table",), stem="patch_embed.proj.weight")
