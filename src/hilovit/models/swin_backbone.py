"""The official Swin dense-prediction backbone on :class:`~hilovit.models.swin.SwinTransformer`, registered under
the config type ``'SwinTransformer'`` for both segmentation and detection (one class for both tasks, norms on
every returned map).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models._api import freeze_stages
from hilovit.models.registry import register_dense_backbone
from hilovit.models.swin import SwinTransformer
from hilovit.options import check_int, check_ints

__all__ = ["SwinSegBackbone"]


class SwinSegBackbone(SwinTransformer):
    r"""The official Swin segmentation backbone (Swin-Transformer-Semantic-Segmentation,
    ``mmseg/models/backbones/swin_transformer.py``) on :class:`~hilovit.models.swin.SwinTransformer`.

    Every block keeps ``window_size`` and the stages alternate W-MSA and SW-MSA (shift
    ``window_size // 2``) at every input size: a map smaller than the window is zero-padded to one
    window and still shifted with the mask, as the official backbone does (no clamping of the
    window to the map). The image is padded to a multiple of the patch size, odd maps before each
    merge. The outputs go through LayerNorms ``norm{i}``. State dict: the official keys
    (``patch_embed.*``, ``layers.*`` with ``relative_position_index``, ``norm{i}.*``; the shift masks
    are computed, not stored).

    Args (the official ones): pretrain_img_size, patch_size, in_chans, embed_dim, depths, num_heads,
    window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate,
    norm_layer, ape (only ``False``), patch_norm, out_indices, frozen_stages, use_checkpoint.
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
        norm_layer=nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        if ape:
            raise ValueError("SwinTransformer segmentation backbone: ape=True is not supported (the official "
                             "ADE20K configs use ape=False)")
        depths = list(depths)
        out_indices = tuple(sorted(set(check_ints(out_indices, "out_indices", minimum=0, maximum=len(depths) - 1))))
        check_int(window_size, "window_size", minimum=1)
        check_int(frozen_stages, "frozen_stages", -1)
        # Built for a size whose every stage is larger than the window, so that no block clamps its
        # window or drops its shift (the classification rule); other sizes are padded at run time.
        side = patch_size * 2 ** (len(depths) - 1) * (window_size + 1)
        super().__init__(
            img_size=side, patch_size=patch_size, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
            depths=depths, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            norm_layer=norm_layer, ape=False, patch_norm=patch_norm, use_checkpoint=use_checkpoint,
            features_only=True, out_indices=out_indices,
        )
        for m in self.modules():  # the official segmentation backbone stores no shift masks
            if isinstance(getattr(m, "attn_mask", None), torch.Tensor) and "attn_mask" in dict(
                m.named_buffers(recurse=False)
            ):
                mask = m.attn_mask
                delattr(m, "attn_mask")
                m.register_buffer("attn_mask", mask, persistent=False)
        self.pretrain_img_size = pretrain_img_size
        self.out_indices = out_indices
        self.out_channels = [embed_dim * 2**i for i in out_indices]
        for i in out_indices:
            self.add_module(f"norm{i}", norm_layer(embed_dim * 2**i))
        self.frozen_stages = frozen_stages
        freeze_stages(self, frozen_stages)

    def train(self, mode: bool = True) -> SwinSegBackbone:
        super().train(mode)
        freeze_stages(self, self.frozen_stages)
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        maps = self.forward_intermediates(x, list(self.out_indices), output_fmt="NHWC", intermediates_only=True)
        return tuple(getattr(self, f"norm{i}")(m).permute(0, 3, 1, 2) for i, m in zip(self.out_indices, maps))


register_dense_backbone("SwinTransformer", SwinSegBackbone)
