"""Semantic segmentation: Semantic FPN on LITv2 and Swin backbones, exact to the official models.

:class:`EncoderDecoder` is mmsegmentation 0.x's segmentor of the same name (the code behind the
official LITv2 ADE20K checkpoints): a backbone giving four maps at strides 4, 8, 16, 32, an
:class:`~hilovit.models.heads.fpn.FPN` neck, an :class:`~hilovit.models.heads.fpn.FPNHead` decoder, and a
bilinear resize of the stride-4 logits onto the input. Its state dict is an mmseg checkpoint's
(``backbone.*``, ``neck.*``, ``decode_head.*``), so the official ``.pth`` files load with every
key checked through :func:`hilovit.load_checkpoint`.

:func:`build_segmentor` takes the ``model`` dict of an official mmseg config as it stands
(``type='EncoderDecoder'``, ``backbone=dict(type='LITv2' | 'SwinTransformer', ...)``,
``neck=dict(type='FPN', ...)``, ``decode_head=dict(type='FPNHead', ...)``, ``test_cfg``). The
registered ``semfpn_*`` models are built through it.

Two details of the official code are kept on purpose: the FPN's top-down path uses PyTorch's
legacy ``nearest`` interpolation, and the final resize stretches the logits of the *padded*
image (the backbone pads to a multiple of the patch size) onto the unpadded input size.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.models._api import PretrainedCfgMixin, update_pretrained_cfg
from hilovit.models._prefix import add_backbone_prefix, backbone_key, has_backbone_keys, split_backbone
from hilovit.models.heads.fpn import FPN, FPNHead
from hilovit.models.litv2_backbone import LITv2SegBackbone  # noqa: F401  (its public name is kept here)
from hilovit.models.pretrained import PretrainedWeights, register_weights
from hilovit.models.registry import dense_backbones, register_model
from hilovit.models.swin_backbone import SwinSegBackbone  # noqa: F401  (its public name is kept here)

__all__ = ["EncoderDecoder", "LITv2SegBackbone", "SwinSegBackbone", "build_segmentor"]

_RELEASE = "https://github.com/ziplab/LITv2/releases/download/v1.0/"


def _pair(value, name: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or an (h, w) pair, got {value!r}")
    return int(value[0]), int(value[1])


def _check_windows(crop_size, stride) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    crop, step = _pair(crop_size, "crop_size"), _pair(stride, "stride")
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"sliding windows: stride {step} must not exceed crop_size {crop} (the windows would leave "
                         "pixels uncovered)")
    return crop, step


def _check_test_cfg(test_cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    cfg = dict(mode="whole") if test_cfg is None else dict(test_cfg)
    extra = set(cfg) - {"mode", "crop_size", "stride"}
    if extra:
        raise ValueError(f"test_cfg has unknown keys {sorted(extra)}; expected mode, crop_size, stride")
    mode = cfg.setdefault("mode", "whole")
    if mode == "slide":
        if "crop_size" not in cfg or "stride" not in cfg:
            raise ValueError(f"test_cfg mode='slide' needs crop_size and stride, got {cfg!r}")
        cfg["crop_size"], cfg["stride"] = _check_windows(cfg["crop_size"], cfg["stride"])
    elif mode != "whole":
        raise ValueError(f"test_cfg mode must be 'whole' or 'slide', got {mode!r}")
    return cfg


class EncoderDecoder(PretrainedCfgMixin, nn.Module):
    r"""Backbone -> FPN neck -> FPN head -> bilinear resize: mmseg 0.x's ``EncoderDecoder``.

    Args:
        backbone: a module returning the multi-scale NCHW maps (e.g. :class:`LITv2SegBackbone`).
        neck: an :class:`~hilovit.models.heads.fpn.FPN`; decode_head: an :class:`~hilovit.models.heads.fpn.FPNHead`.
        test_cfg: ``dict(mode='whole')`` (default) or ``dict(mode='slide', crop_size=(h, w),
            stride=(h, w))``: how ``forward`` and :meth:`predict` run in eval mode.

    Shape:
        ``forward``: ``(B, C, H, W) -> (B, num_classes, H, W)`` logits (before softmax);
        :meth:`predict`: ``-> (B, H, W)`` int64 labels; :meth:`forward_features`: the FPN maps.

    In training mode ``forward`` is always whole-image (sliding windows are a test-time mode).

    Example::

        >>> model = hilovit.create_model("semfpn_litv2_nano").eval()
        >>> model(torch.randn(1, 1, 128, 96)).shape
        torch.Size([1, 11, 128, 96])
        >>> model.predict(torch.randn(1, 1, 200, 300), mode="slide", crop_size=128, stride=96).shape
        torch.Size([1, 200, 300])
    """

    def __init__(self, backbone: nn.Module, neck: FPN, decode_head: FPNHead,
                 test_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.test_cfg = _check_test_cfg(test_cfg)
        self.align_corners = decode_head.align_corners
        self.num_classes = decode_head.num_classes
        self.in_chans = getattr(backbone, "in_chans", 3)
        update_pretrained_cfg(self, base=_seg_cfg(num_classes=self.num_classes, in_chans=self.in_chans))

    # ------------------------------------------------------------------ forward
    def _check_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor (B, {self.in_chans}, H, W), got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"images must have shape (B, in_chans={self.in_chans}, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point, got dtype {images.dtype}")

    def forward_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """The FPN maps ``(B, out_channels, H_i, W_i)`` at strides 4, 8, 16, 32 (mmseg's ``extract_feat``)."""
        self._check_input(images)
        return self.neck(list(self.backbone(images)))

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """The head's logits ``(B, num_classes, h, w)`` at stride 4 of the padded image."""
        return self.decode_head(self.forward_features(images))

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Whole-image logits ``(B, num_classes, H, W)``: the stride-4 logits of the padded image
        resized bilinearly onto the input size (the padding is not cropped first, as the official
        code)."""
        logits = self.decode(images)
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def slide_inference(self, images: torch.Tensor, crop_size, stride) -> torch.Tensor:
        """Logits from overlapping ``crop_size`` windows every ``stride`` pixels (the last window of a
        row or column is moved back to end at the border; a crop larger than the image is cut to
        it): each crop through :meth:`encode_decode`, the logits summed and divided by the number of
        windows covering each pixel, as mmseg's ``slide_inference``."""
        (hc, wc), (hs, ws) = _check_windows(crop_size, stride)
        self._check_input(images)
        B, _, H, W = images.shape
        rows = max(H - hc + hs - 1, 0) // hs + 1
        cols = max(W - wc + ws - 1, 0) // ws + 1
        total = count = None
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * hs + hc, H), min(c * ws + wc, W)
                y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
                out = self.encode_decode(images[:, :, y1:y2, x1:x2])
                if total is None:
                    total = out.new_zeros(B, out.shape[1], H, W)
                    count = out.new_zeros(1, 1, H, W)
                total[:, :, y1:y2, x1:x2] += out
                count[:, :, y1:y2, x1:x2] += 1
        return total / count

    def inference(self, images: torch.Tensor, mode: Optional[str] = None, crop_size=None,
                  stride=None) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)`` in ``mode`` (default: ``test_cfg``'s): ``'whole'`` or
        ``'slide'`` (``crop_size``/``stride`` default to ``test_cfg``'s)."""
        mode = self.test_cfg["mode"] if mode is None else mode
        if mode == "whole":
            return self.encode_decode(images)
        if mode != "slide":
            raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
        crop_size = self.test_cfg.get("crop_size") if crop_size is None else crop_size
        stride = self.test_cfg.get("stride") if stride is None else stride
        if crop_size is None or stride is None:
            raise ValueError("mode='slide' needs crop_size and stride (arguments or test_cfg)")
        return self.slide_inference(images, crop_size, stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.encode_decode(images)
        return self.inference(images)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, mode: Optional[str] = None, crop_size=None, stride=None) -> torch.Tensor:
        """Labels ``(B, H, W)`` (int64): the argmax over classes of :meth:`inference`'s logits (the
        official ``simple_test``; softmax does not change the argmax)."""
        return self.inference(images, mode, crop_size, stride).argmax(dim=1)

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss: the decode head's cross-entropy of the stride-4 logits resized to the labels."""
        return self.decode_head.losses(self.decode(images), labels)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_filter_fn(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Let the backbone adapt its ``backbone.*`` part (e.g. Swin's derived buffers), for
        :func:`hilovit.load_checkpoint`; the rest is used as it is."""
        fn = getattr(self.backbone, "checkpoint_filter_fn", None)
        if fn is None or not has_backbone_keys(state_dict):
            return dict(state_dict)
        part, out = split_backbone(state_dict)
        out.update(add_backbone_prefix(fn(part)))
        return out

    def flops(self, img_size: Union[int, Tuple[int, int]] = 512, breakdown: bool = False):
        """The official ``tools/get_flops.py`` count for one image (LITv2 backbones): mmcv's hooks
        plus the script's attention terms; see :func:`hilovit.models.segmentation_flops.official_flops`.
        41,292,310,528 for ``semfpn_litv2_s`` at 512 x 512. ``breakdown``: the dict of parts."""
        from hilovit.models.segmentation_flops import official_flops

        counts = official_flops(self, _pair(img_size, "img_size"))
        return counts if breakdown else counts["total"]

    def param_count_by_part(self) -> Dict[str, int]:
        """Parameters of ``backbone``, ``neck`` and ``decode_head``."""
        return {name: sum(p.numel() for p in getattr(self, name).parameters())
                for name in ("backbone", "neck", "decode_head")}


def _seg_cfg(**kwargs) -> Dict[str, Any]:
    cfg = {
        "task": "segmentation",
        "num_classes": 150,
        "input_size": (3, 512, 512),
        "test_scale": (2048, 512),
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "ignore_index": 255,
        "classifier": "decode_head.conv_seg",
        "first_conv": backbone_key("patch_embed.proj"),
    }
    cfg.update(kwargs)
    cfg["input_size"] = (cfg.pop("in_chans", cfg["input_size"][0]), *cfg["input_size"][1:])
    return cfg


# ---------------------------------------------------------------------------- config dicts
def _split_type(cfg: Any, what: str, allowed: Sequence[str]) -> Tuple[str, Dict[str, Any]]:
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} must be a dict with a 'type' key, got {type(cfg).__name__}: {cfg!r}")
    args = dict(cfg)
    kind = args.pop("type", None)
    if kind not in allowed:
        raise ValueError(f"{what} type {kind!r} is not supported; expected one of {list(allowed)}")
    return kind, args


def _named_parameters(cls: type) -> List[str]:
    """The argument names of ``cls``: of the first constructor on its MRO that names them all (a subclass
    taking ``*args, **kwargs`` on to its base's is read through to the base)."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            if not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values()):
                return [n for n in params if n != "self"]
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _check_keys(cls: type, args: Mapping[str, Any], what: str) -> None:
    allowed = _named_parameters(cls)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise TypeError(f"{what} got unknown argument(s) {unknown}; accepted: {', '.join(allowed)}")


def build_segmentor(cfg: Mapping[str, Any]) -> EncoderDecoder:
    """Build an :class:`EncoderDecoder` from the ``model`` dict of an official mmseg config.

    Understood: ``type='EncoderDecoder'``; ``backbone`` of a type registered for segmentation with
    :func:`hilovit.models.registry.register_dense_backbone` (``'LITv2'``: the official LITv2
    segmentation backbone, :class:`LITv2SegBackbone`; ``'SwinTransformer'``: :class:`SwinSegBackbone`)
    with the official argument names; ``neck=dict(type='FPN', ...)``;
    ``decode_head=dict(type='FPNHead', ...)``; ``test_cfg`` (``mode``, ``crop_size``, ``stride``:
    honoured by ``forward``/``predict``); ``pretrained`` (a checkpoint path loaded into the
    backbone, non-strictly, as mmseg's ``init_weights``; ``None``: no weights); ``train_cfg``
    (accepted, no effect); ``auxiliary_head`` only ``None``. Anything else raises an error naming
    it, as do neck channels that do not fit the backbone or a head that does not fit the neck.

    Example::

        >>> cfg = dict(type="EncoderDecoder",
        ...            backbone=dict(type="LITv2", embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
        ...                          alpha=0.9, local_ws=[0, 0, 2, 1]),
        ...            neck=dict(type="FPN", in_channels=[16, 32, 64, 128], out_channels=32, num_outs=4),
        ...            decode_head=dict(type="FPNHead", in_channels=[32] * 4, in_index=[0, 1, 2, 3],
        ...                             feature_strides=[4, 8, 16, 32], channels=16, num_classes=5,
        ...                             norm_cfg=dict(type="SyncBN", requires_grad=True)),
        ...            test_cfg=dict(mode="whole"))
        >>> build_segmentor(cfg).eval()(torch.randn(1, 3, 70, 102)).shape
        torch.Size([1, 5, 70, 102])
    """
    _, top = _split_type(cfg, "model", ["EncoderDecoder"])
    top = copy.deepcopy(top)
    unknown = sorted(set(top) - {"backbone", "neck", "decode_head", "auxiliary_head", "pretrained", "train_cfg",
                                 "test_cfg", "init_cfg"})
    if unknown:
        raise ValueError(f"model (type='EncoderDecoder') has unknown keys {unknown}")
    for key in ("backbone", "neck", "decode_head"):
        if top.get(key) is None:
            raise ValueError(f"model needs a {key!r} dict")
    if top.get("auxiliary_head") is not None:
        raise ValueError("model auxiliary_head is not supported (only used in training by mmseg); set it to None")
    if top.get("init_cfg") is not None:
        raise ValueError(f"model init_cfg={top['init_cfg']!r} is not supported; use 'pretrained' for a backbone path")

    backbones = dense_backbones("segmentation")
    bb_type, bb_args = _split_type(top["backbone"], "backbone", list(backbones))
    bb_cls = backbones[bb_type]
    bb_pretrained = bb_args.pop("pretrained", None)
    _check_keys(bb_cls, bb_args, f"backbone (type={bb_type!r})")
    backbone = bb_cls(**bb_args)

    _, neck_args = _split_type(top["neck"], "neck", ["FPN"])
    _check_keys(FPN, neck_args, "neck (type='FPN')")
    neck = FPN(**neck_args)
    if list(neck.in_channels) != list(backbone.out_channels):
        raise ValueError(f"neck in_channels {neck.in_channels} do not match the backbone's output channels "
                         f"{backbone.out_channels} (out_indices {list(backbone.out_indices)})")

    _, head_args = _split_type(top["decode_head"], "decode_head", ["FPNHead"])
    _check_keys(FPNHead, head_args, "decode_head (type='FPNHead')")
    head = FPNHead(**head_args)
    for level, (i, c) in enumerate(zip(head.in_index, head.in_channels)):
        if not -neck.num_outs <= i < neck.num_outs or c != neck.out_channels:
            raise ValueError(f"decode_head level {level} reads neck output {i} with {c} channels, but the neck has "
                             f"{neck.num_outs} outputs of {neck.out_channels} channels")

    model = EncoderDecoder(backbone, neck, head, test_cfg=top.get("test_cfg"))
    for path in (top.get("pretrained"), bb_pretrained):
        if path is not None:
            if not isinstance(path, str):
                raise TypeError(f"pretrained must be a checkpoint path or None, got {path!r}")
            from hilovit.models.checkpoint import load_checkpoint

            load_checkpoint(model.backbone, path, strict=False)
    model.config = copy.deepcopy(dict(cfg))  # the config it was built from, as given
    return model


# ---------------------------------------------------------------------------- registry
def _merge(base: Dict[str, Any], new: Mapping[str, Any]) -> Dict[str, Any]:
    """mmcv's config rule: dicts merge recursively, anything else replaces."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _fpn_config(backbone: Dict[str, Any], in_channels: List[int], out_channels: int = 256, channels: int = 128,
                num_classes: int = 150) -> Dict[str, Any]:
    return dict(
        type="EncoderDecoder",
        pretrained=None,
        backbone=backbone,
        neck=dict(type="FPN", in_channels=in_channels, out_channels=out_channels, num_outs=4),
        decode_head=dict(type="FPNHead", in_channels=[out_channels] * 4, in_index=[0, 1, 2, 3],
                         feature_strides=[4, 8, 16, 32], channels=channels, dropout_ratio=0.1,
                         num_classes=num_classes, norm_cfg=dict(type="SyncBN", requires_grad=True),
                         align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


_OVERRIDES = ("num_classes", "in_chans", "drop_path_rate", "img_size", "test_cfg", "backbone", "neck", "decode_head")


def _create(config: Dict[str, Any], cfg_overrides: Dict[str, Any], **kwargs) -> EncoderDecoder:
    unknown = sorted(set(kwargs) - set(_OVERRIDES))
    if unknown:
        raise TypeError(f"unexpected argument(s) {unknown}; a segmentation model takes {', '.join(_OVERRIDES)}")
    cfg = copy.deepcopy(config)
    for part in ("backbone", "neck", "decode_head"):
        if kwargs.get(part) is not None:
            cfg[part] = _merge(cfg[part], kwargs[part])
    if kwargs.get("num_classes") is not None:
        cfg["decode_head"]["num_classes"] = kwargs["num_classes"]
    for key in ("in_chans", "drop_path_rate"):
        if kwargs.get(key) is not None:
            cfg["backbone"][key] = kwargs[key]
    if kwargs.get("test_cfg") is not None:
        cfg["test_cfg"] = dict(kwargs["test_cfg"])
    model = build_segmentor(cfg)
    pcfg = _seg_cfg(**cfg_overrides)
    size = kwargs.get("img_size") or pcfg["input_size"][1:]
    size = (size, size) if isinstance(size, int) else tuple(size)
    chans = model.in_chans
    if len(pcfg["mean"]) != chans:
        pcfg["mean"], pcfg["std"] = (0.5,) * chans, (0.5,) * chans
    pcfg.update(num_classes=model.num_classes, input_size=(chans, *size))
    update_pretrained_cfg(model, base=pcfg)
    return model


def _litv2(embed_dim: int, depths: List[int], num_heads: List[int], drop_path_rate: float) -> Dict[str, Any]:
    backbone = dict(type="LITv2", embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=7,
                    mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                    drop_path_rate=drop_path_rate, ape=False, patch_norm=True, out_indices=[0, 1, 2, 3],
                    use_checkpoint=False, alpha=0.9, local_ws=[0, 0, 2, 1])
    return _fpn_config(backbone, [embed_dim * 2**i for i in range(4)])


def _swin(depths: List[int], drop_path_rate: float) -> Dict[str, Any]:
    backbone = dict(type="SwinTransformer", embed_dim=96, depths=depths, num_heads=[3, 6, 12, 24], window_size=7,
                    mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                    drop_path_rate=drop_path_rate, ape=False, patch_norm=True, out_indices=[0, 1, 2, 3],
                    use_checkpoint=False)
    return _fpn_config(backbone, [96, 192, 384, 768])


_ADE = {"dataset": "ade20k", "reduce_zero_label": True, "crop_size": (512, 512)}


@register_model(task="segmentation")
def semfpn_litv2_s(**kwargs) -> EncoderDecoder:
    """LITv2-S + Semantic FPN, ADE20K (official ``litv2_s_fpn_r50_512x512_80k_ade20k``): 31,449,486
    parameters (backbone 27,076,344, neck 2,729,984, head 1,643,158); official 44.3 mIoU, 41 GFLOPs."""
    return _create(_litv2(96, [2, 2, 6, 2], [3, 6, 12, 24], 0.2), dict(_ADE), **kwargs)


@register_model(task="segmentation")
def semfpn_litv2_m(**kwargs) -> EncoderDecoder:
    """LITv2-M + Semantic FPN, ADE20K: 52,435,854 parameters; official 45.7 mIoU, 63 GFLOPs."""
    return _create(_litv2(96, [2, 2, 18, 2], [3, 6, 12, 24], 0.2), dict(_ADE), **kwargs)


@register_model(task="segmentation")
def semfpn_litv2_b(**kwargs) -> EncoderDecoder:
    """LITv2-B + Semantic FPN, ADE20K: 89,993,518 parameters; official 47.2 mIoU, 93 GFLOPs."""
    return _create(_litv2(128, [2, 2, 18, 2], [4, 8, 16, 32], 0.3), dict(_ADE), **kwargs)


@register_model(task="segmentation")
def semfpn_litv2_nano(**kwargs) -> EncoderDecoder:
    """A small LITv2 + Semantic FPN for 128 x 128 scenes (``fashion-scenes``): no pretrained weights.

    Backbone ``embed_dim=32``, ``depths=[1, 1, 2, 1]``, ``num_heads=[1, 2, 4, 8]``, alpha 0.9,
    ``local_ws=[0, 0, 2, 1]``, drop path 0.1 (maps 32, 16, 8, 4 at 128 x 128); FPN 64 channels,
    head 32 channels; 11 classes (background + 10 garments); grey input (``in_chans=1``, mean and
    std 0.5; ``in_chans=3`` for colour).
    """
    backbone = dict(type="LITv2", in_chans=1, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                    drop_path_rate=0.1, alpha=0.9, local_ws=[0, 0, 2, 1], out_indices=[0, 1, 2, 3])
    config = _fpn_config(backbone, [32, 64, 128, 256], out_channels=64, channels=32, num_classes=11)
    return _create(config, dict(input_size=(1, 128, 128), test_scale=(128, 128), mean=(0.5,), std=(0.5,),
                                dataset="fashion-scenes", reduce_zero_label=False), **kwargs)


@register_model(task="segmentation")
def semfpn_swin_t(**kwargs) -> EncoderDecoder:
    """Swin-T + Semantic FPN (the LITv2 FPN recipe on the official Swin segmentation backbone, for
    comparison; no published checkpoint). Drop path 0.2 as LITv2-S's config."""
    return _create(_swin([2, 2, 6, 2], 0.2), dict(_ADE), **kwargs)


@register_model(task="segmentation")
def semfpn_swin_s(**kwargs) -> EncoderDecoder:
    """Swin-S + Semantic FPN (as :func:`semfpn_swin_t`, ``depths=[2, 2, 18, 2]``, drop path 0.3)."""
    return _create(_swin([2, 2, 18, 2], 0.3), dict(_ADE), **kwargs)


# ---------------------------------------------------------------------------- published weights
# The official ADE20K models (ziplab/LITv2 segmentation/README.md, release v1.0): single-scale mIoU on the
# 2,000 validation images, evaluated whole-image at the test scale 2048x512.
def _ade_weights(size: str, miou: float) -> PretrainedWeights:
    return PretrainedWeights(model=f"semfpn_litv2_{size}", tag="ade20k",
                             url=_RELEASE + f"litv2_{size}_fpn_r50_512x512_80k_ade20k.pth", top1=None,
                             num_classes=150, input_size=(3, 512, 512), crop_pct=1.0, interpolation="bilinear",
                             dataset="ade20k", paper="https://arxiv.org/abs/2205.13213", metrics={"miou": miou})


register_weights(_ade_weights("s", 44.3), _ade_weights("m", 45.7), _ade_weights("b", 47.2))
