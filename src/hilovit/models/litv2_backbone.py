"""The official LITv2 dense-prediction backbones on :class:`LITv2`, registered under the config type ``'LITv2'``.

The official code has one per task: the detection backbone (``detection/mmdet/models/backbones/litv2.py``,
:class:`LITv2Backbone`) returns stage 0 without a norm; the segmentation backbone
(``segmentation/mmseg/models/backbones/litv2.py``, :class:`LITv2SegBackbone`) adds ``norm0``. Their
state dicts differ by that norm, so each is registered for its task (:func:`register_dense_backbone`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models._api import freeze_stages
from hilovit.models.litv2 import LITv2
from hilovit.models.registry import register_dense_backbone
from hilovit.options import check_int

__all__ = ["LITv2Backbone", "LITv2SegBackbone"]


class LITv2Backbone(LITv2):
    r"""The official LITv2 detection backbone (``detection/mmdet/models/backbones/litv2.py``).

    A :class:`LITv2` with ``features_only=True`` under the official backbone's arguments: the
    stages in ``out_indices`` are returned as a tuple of ``(B, C_i, H_i, W_i)`` maps, stage 0 as is
    and the others through the LayerNorms ``norm1``..``norm3``; no final norm, no head. Its state
    dict is the official backbone's, so the ``backbone.*`` weights of the official mmdet
    checkpoints load with :func:`hilovit.load_checkpoint` (the prefix is removed), and ImageNet
    classification checkpoints load too (their ``norm``/``head`` dropped, ``norm1``..``norm3``
    left fresh, as the official detection training starts).

    Args:
        pretrain_img_size: recorded in ``pretrained_cfg`` (any input size works).
        window_size: accepted and unused, as in the official backbone.
        frozen_stages: -1 none; >= 0 freezes the patch embedding; >= 2 also stages
            ``0 .. frozen_stages - 2`` (the official numbering), kept in eval mode by :meth:`train`.
        init_cfg: ``{'checkpoint': path}`` loaded by :meth:`init_weights` (``strict=False``).
        The others: as :class:`LITv2` (defaults of the official backbone: ``drop_path_rate=0.2``,
        ``alpha=0.5``, ``local_ws=[0, 0, 2, 1]``).

    Example::

        >>> bb = LITv2Backbone(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
        ...                    alpha=0.9, local_ws=[0, 0, 4, 2])
        >>> [tuple(o.shape) for o in bb(torch.randn(2, 3, 70, 102))]
        [(2, 16, 18, 26), (2, 32, 9, 13), (2, 64, 4, 6), (2, 128, 2, 3)]
    """

    def __init__(
        self,
        pretrain_img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
        has_msa: Sequence[int] = (0, 0, 1, 1),
        alpha: float = 0.5,
        local_ws: Sequence[int] = (0, 0, 2, 1),
        init_cfg: Optional[Dict[str, Any]] = None,
    ):
        super().__init__(
            img_size=pretrain_img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
            embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            norm_layer=norm_layer, ape=ape, patch_norm=patch_norm, use_checkpoint=use_checkpoint, has_msa=has_msa,
            alpha=alpha, local_ws=local_ws, features_only=True, out_indices=out_indices,
        )
        check_int(frozen_stages, "frozen_stages", -1)
        if init_cfg is not None and not (isinstance(init_cfg, dict) and "checkpoint" in init_cfg):
            raise ValueError(f"init_cfg must be None or a dict with a 'checkpoint' path, got {init_cfg!r}")
        self.pretrain_img_size = self.img_size
        self.window_size = window_size
        self.frozen_stages = frozen_stages
        self.init_cfg = init_cfg
        self.out_channels = [self.embed_dim * 2**i for i in self.out_indices]
        freeze_stages(self, frozen_stages)

    def train(self, mode: bool = True) -> LITv2Backbone:
        """Switch mode, keeping the frozen stages in eval mode."""
        super().train(mode)
        freeze_stages(self, self.frozen_stages)
        return self

    def init_weights(self) -> None:
        """Load ``init_cfg['checkpoint']`` (non-strict), as the official backbone does."""
        if self.init_cfg is not None:
            from hilovit.models.checkpoint import load_checkpoint

            load_checkpoint(self, self.init_cfg["checkpoint"], strict=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.forward_feature_maps(x))


class LITv2SegBackbone(LITv2Backbone):
    r"""The official LITv2 *segmentation* backbone (``segmentation/mmseg/models/backbones/litv2.py``).

    The detection backbone (:class:`~hilovit.models.litv2_backbone.LITv2Backbone`, same arguments) plus a
    LayerNorm ``norm0`` on stage 0: every returned map goes through its ``norm{i}``. State dict keys
    are the official ones (``norm0``..``norm3`` beside the stages).

    Shape: ``(B, in_chans, H, W) ->`` a tuple of ``(B, embed_dim * 2**i, H_i, W_i)`` for
    ``i in out_indices`` (strides 4, 8, 16, 32; any ``H, W``, padded as the official code does).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if 0 in self.out_indices:
            self.norm0 = kwargs.get("norm_layer", nn.LayerNorm)(self.embed_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = list(super().forward(x))  # stage 0 raw, the others through norm1..norm3
        if 0 in self.out_indices:
            outs[0] = self.norm0(outs[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # a channel norm on NCHW
        return tuple(outs)


register_dense_backbone("LITv2", LITv2SegBackbone, task="segmentation")
register_dense_backbone("LITv2", LITv2Backbone, task="detection")
