"""Semantic FPN building blocks: ``ConvModule``, the ``FPN`` neck and the ``FPNHead`` decoder.

Names, arguments and state-dict keys follow mmsegmentation 0.x (the code behind the official LITv2
and Swin segmentation checkpoints) and mmcv 1.x's ``ConvModule``: a convolution ``conv``, its norm
under mmcv's abbreviation (``bn`` for ``BN``/``SyncBN``, ``gn`` for ``GN``) and the activation
``activate``, in that order; the convolution has a bias only when there is no norm.

The maps are NCHW ``(B, C, H, W)`` throughout.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers import fast
from hilovit.options import check_fraction, check_int, check_ints

__all__ = ["ConvModule", "FPN", "FPNHead", "build_norm"]

_NORMS = {"BN": "bn", "BN2d": "bn", "SyncBN": "bn", "GN": "gn"}


def _cfg_type(cfg: Optional[Mapping[str, Any]], what: str, allowed: Sequence[str]) -> Optional[str]:
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"{what} must be None or a dict with a 'type' key, got {cfg!r}")
    if cfg["type"] not in allowed:
        raise ValueError(f"{what} type {cfg['type']!r} is not supported; expected one of {list(allowed)}")
    return cfg["type"]


def build_norm(norm_cfg: Mapping[str, Any], channels: int) -> tuple:
    """``(name, module)`` for an mmcv ``norm_cfg``: ``BN``/``SyncBN`` -> ``('bn', BatchNorm2d)``,
    ``GN`` -> ``('gn', GroupNorm)`` (``num_groups`` required). ``SyncBN`` builds a plain
    ``BatchNorm2d`` (the same function in eval; for synchronised statistics in distributed
    training convert with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``). ``requires_grad``
    (default True) freezes the affine parameters when False; ``eps``/``momentum`` are honoured."""
    kind = _cfg_type(norm_cfg, "norm_cfg", list(_NORMS))
    extra = {k: v for k, v in norm_cfg.items() if k not in ("type", "requires_grad", "eps", "momentum", "num_groups")}
    if extra:
        raise ValueError(f"norm_cfg has unsupported keys {sorted(extra)} (norm_cfg={dict(norm_cfg)!r})")
    if kind == "GN":
        if "num_groups" not in norm_cfg:
            raise ValueError(f"norm_cfg of type 'GN' needs num_groups, got {dict(norm_cfg)!r}")
        norm = nn.GroupNorm(norm_cfg["num_groups"], channels, eps=norm_cfg.get("eps", 1e-5))
    else:
        norm = nn.BatchNorm2d(channels, eps=norm_cfg.get("eps", 1e-5), momentum=norm_cfg.get("momentum", 0.1))
    for p in norm.parameters():
        p.requires_grad = bool(norm_cfg.get("requires_grad", True))
    return _NORMS[kind], norm


class ConvModule(nn.Module):
    """Convolution -> norm -> ReLU, keyed as mmcv 1.x's ``ConvModule`` (``conv``, ``bn``/``gn``).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: of the ``nn.Conv2d``.
        norm_cfg: ``None`` or an mmcv norm config (see :func:`build_norm`).
        act_cfg: ``dict(type='ReLU')`` or ``None`` (the default: no activation).
        bias: ``'auto'`` (a bias only without norm, as mmcv) or a bool.

    Shape: ``(B, in_channels, H, W) -> (B, out_channels, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm_cfg: Optional[Mapping[str, Any]] = None,
        act_cfg: Optional[Mapping[str, Any]] = None,
        bias: Any = "auto",
    ):
        super().__init__()
        if bias != "auto" and not isinstance(bias, bool):
            raise ValueError(f"bias must be 'auto' or a bool, got {bias!r}")
        act = _cfg_type(act_cfg, "act_cfg", ["ReLU"])
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              bias=(norm_cfg is None) if bias == "auto" else bias)
        self.norm_name = None
        self.norm_type = None if norm_cfg is None else norm_cfg.get("type")
        if norm_cfg is not None:
            self.norm_name, norm = build_norm(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.activate = nn.ReLU(inplace=bool(act_cfg.get("inplace", True))) if act else None
        # mmcv's init: Kaiming-normal (fan_out, ReLU) convolutions, unit norms
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def _extra_convs_mode(add_extra_convs: Any, on_inputs: Optional[bool]):
    """``False`` or the source of the first extra conv, from mmdet's / mmseg's arguments."""
    if add_extra_convs is False or add_extra_convs is None:
        return False
    if add_extra_convs is True:
        return "on_output" if on_inputs is False else "on_input"
    if add_extra_convs not in ("on_input", "on_lateral", "on_output"):
        raise ValueError(f"FPN add_extra_convs must be False, True, 'on_input', 'on_lateral' or 'on_output', "
                         f"got {add_extra_convs!r}")
    return add_extra_convs


class FPN(nn.Module):
    r"""Feature pyramid network neck (Lin et al., 2017), as mmsegmentation 0.x's ``FPN``.

    ``laterals[i] = lateral_convs[i](x[start_level + i])`` (1x1); from the coarsest level down,
    ``laterals[i - 1] += interpolate(laterals[i], size=laterals[i - 1].shape[2:], **upsample_cfg)``
    (default ``mode='nearest'``: PyTorch's legacy nearest, source index ``floor(dst * in / out)``,
    so 4 -> 9 rows reads ``[0, 0, 0, 1, 1, 2, 2, 3, 3]``); ``outs[i] = fpn_convs[i](laterals[i])``
    (3x3). Extra levels beyond the inputs (``num_outs`` larger) are 1x1 max-pools with stride 2
    (mmseg and mmdet with ``add_extra_convs=False``) or 3x3 stride-2 convolutions (mmdet's
    ``add_extra_convs``): the first reads the last input map used (``'on_input'``), the last lateral
    (``'on_lateral'``) or the last output (``'on_output'``), each further one the previous extra
    output (through a ReLU first when ``relu_before_extra_convs``). RetinaNet uses ``start_level=1,
    add_extra_convs='on_input', num_outs=5``: outputs at strides 8 to 128.

    Args:
        in_channels: channels of each input map; out_channels: of every output.
        num_outs: number of outputs; start_level, end_level: the inputs used (``end_level=-1``: all).
        add_extra_convs: ``False``, ``'on_input'``, ``'on_lateral'``, ``'on_output'``, or ``True``
            (mmdet's meaning, ``'on_input'``; with ``extra_convs_on_inputs=False`` given explicitly,
            mmseg's older meaning ``'on_output'``).
        relu_before_extra_convs: a ReLU before every extra conv after the first.
        no_norm_on_lateral: accepted (no effect without norms).
        conv_cfg, norm_cfg, act_cfg: only ``None`` (the necks of the official configs).
        upsample_cfg: keyword arguments of ``F.interpolate`` for the top-down path.

    Keys: ``lateral_convs.{i}.conv.{weight,bias}``, ``fpn_convs.{i}.conv.{weight,bias}`` (the extra
    convs follow the output convs in ``fpn_convs``).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: Any = False,
        extra_convs_on_inputs: Optional[bool] = None,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: Optional[Mapping[str, Any]] = None,
        norm_cfg: Optional[Mapping[str, Any]] = None,
        act_cfg: Optional[Mapping[str, Any]] = None,
        upsample_cfg: Optional[Mapping[str, Any]] = None,
        init_cfg: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        self.in_channels = check_ints(in_channels, "FPN in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "FPN out_channels", minimum=1)
        self.num_outs = check_int(num_outs, "FPN num_outs", minimum=1)
        n = len(self.in_channels)
        check_int(start_level, "FPN start_level", minimum=0, maximum=n - 1)
        if end_level == -1:
            self.backbone_end_level = n
        elif isinstance(end_level, int) and start_level < end_level < n:
            self.backbone_end_level = end_level + 1
        else:
            raise ValueError(f"FPN end_level must be -1 or in ({start_level}, {n}), got {end_level!r}")
        self.start_level = start_level
        used = self.backbone_end_level - start_level
        if num_outs < used:
            raise ValueError(f"FPN num_outs ({num_outs}) must be at least the number of levels used ({used})")
        self.add_extra_convs = _extra_convs_mode(add_extra_convs, extra_convs_on_inputs)
        if not isinstance(relu_before_extra_convs, bool):
            raise ValueError(f"FPN relu_before_extra_convs must be a bool, got {relu_before_extra_convs!r}")
        self.relu_before_extra_convs = relu_before_extra_convs
        if self.add_extra_convs and end_level != -1 and num_outs > used:
            raise ValueError(f"FPN with end_level={end_level} allows no extra levels: num_outs must be {used}")
        for name, cfg in (("conv_cfg", conv_cfg), ("norm_cfg", norm_cfg), ("act_cfg", act_cfg)):
            if cfg is not None:
                raise ValueError(f"FPN {name}={cfg!r} is not supported; the Semantic FPN neck uses None")
        upsample_cfg = dict(mode="nearest") if upsample_cfg is None else dict(upsample_cfg)
        if upsample_cfg.get("mode", "nearest") not in ("nearest", "bilinear", "bicubic", "nearest-exact"):
            raise ValueError(f"FPN upsample_cfg mode {upsample_cfg.get('mode')!r} is not supported")
        self.upsample_cfg = upsample_cfg
        self.lateral_convs = nn.ModuleList(
            ConvModule(self.in_channels[i], out_channels, 1) for i in range(start_level, self.backbone_end_level)
        )
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, padding=1) for _ in range(used))
        if self.add_extra_convs:
            for i in range(num_outs - used):
                cin = self.in_channels[self.backbone_end_level - 1] if i == 0 and self.add_extra_convs == "on_input" \
                    else out_channels
                self.fpn_convs.append(ConvModule(cin, out_channels, 3, stride=2, padding=1))
        for m in self.modules():  # mmseg's FPN init: Xavier-uniform convolutions, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expected {len(self.in_channels)} maps, got {len(inputs)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used and not self.add_extra_convs:
            while len(outs) < self.num_outs:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_outs > used:
            source = {"on_input": inputs[self.backbone_end_level - 1], "on_lateral": laterals[-1],
                      "on_output": outs[-1]}[self.add_extra_convs]
            outs.append(self.fpn_convs[used](source))
            for i in range(used + 1, self.num_outs):
                outs.append(self.fpn_convs[i](F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return outs


class FPNHead(nn.Module):
    r"""Semantic FPN decoder (Kirillov et al., 2019), as mmsegmentation 0.x's ``FPNHead``.

    Level ``i`` runs ``max(1, log2(stride_i / stride_0))`` times [3x3 ``ConvModule`` (norm, ReLU),
    then, for the coarser levels, ``nn.Upsample(scale_factor=2, mode='bilinear')``]; the levels
    are summed at the size of level 0 (bilinear resize when a level comes out of another size,
    as for odd inputs), then ``Dropout2d`` and the 1x1 classifier ``conv_seg``.

    Args (mmseg's ``BaseDecodeHead`` names):
        in_channels: per level; channels: of the stacks; num_classes: classifier outputs.
        feature_strides: per level, powers of two, the first the smallest.
        in_index: which input maps the levels read (default all, in order).
        dropout_ratio: of ``Dropout2d`` before the classifier (0: none).
        norm_cfg, act_cfg, conv_cfg: of the ``ConvModule``s (``conv_cfg`` only ``None``).
        align_corners: of the bilinear upsampling and resizes.
        ignore_index, loss_decode: the label ignored by :meth:`losses` and its loss
            (``CrossEntropyLoss`` with ``use_sigmoid=False``, ``loss_weight``, ``class_weight``).
        input_transform: only ``'multiple_select'`` (what ``FPNHead`` sets).

    Keys: ``scale_heads.{i}.{j}.conv.weight``, ``scale_heads.{i}.{j}.bn.*`` (the ``nn.Upsample``
    layers take the odd ``j``), ``conv_seg.{weight,bias}``.

    Shape: maps ``(B, in_channels[i], H_i, W_i)`` -> logits ``(B, num_classes, H_0, W_0)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        feature_strides: Sequence[int],
        in_index: Any = None,
        dropout_ratio: float = 0.1,
        conv_cfg: Optional[Mapping[str, Any]] = None,
        norm_cfg: Optional[Mapping[str, Any]] = None,
        act_cfg: Optional[Mapping[str, Any]] = None,
        align_corners: bool = False,
        ignore_index: int = 255,
        loss_decode: Optional[Mapping[str, Any]] = None,
        input_transform: Optional[str] = "multiple_select",
        sampler: Any = None,
        init_cfg: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        self.in_channels = check_ints(in_channels, "FPNHead in_channels", minimum=1)
        self.channels = check_int(channels, "FPNHead channels", minimum=1)
        self.num_classes = check_int(num_classes, "FPNHead num_classes", minimum=1)
        n = len(self.in_channels)
        strides = check_ints(feature_strides, "FPNHead feature_strides", minimum=1)
        if len(strides) != n:
            raise ValueError(f"FPNHead feature_strides {strides} must have one entry per in_channels ({n})")
        if min(strides) != strides[0] or any(s & (s - 1) for s in strides):
            raise ValueError(f"FPNHead feature_strides must be powers of two, the first the smallest; got {strides}")
        self.feature_strides = strides
        in_index = list(range(n)) if in_index is None else in_index
        in_index = [in_index] if isinstance(in_index, int) and not isinstance(in_index, bool) else in_index
        if not isinstance(in_index, Sequence) or len(in_index) != n or any(
            isinstance(i, bool) or not isinstance(i, int) for i in in_index
        ):
            raise ValueError(f"FPNHead in_index must list one input index per level ({n}), got {in_index!r}")
        self.in_index = list(in_index)
        if input_transform not in ("multiple_select", None):
            raise ValueError(f"FPNHead input_transform must be 'multiple_select', got {input_transform!r}")
        if conv_cfg is not None:
            raise ValueError(f"FPNHead conv_cfg={conv_cfg!r} is not supported; use None")
        if sampler is not None:
            raise ValueError(f"FPNHead sampler={sampler!r} is not supported; use None")
        check_fraction(dropout_ratio, "FPNHead dropout_ratio")
        if not isinstance(align_corners, bool):
            raise ValueError(f"FPNHead align_corners must be a bool, got {align_corners!r}")
        self.loss_decode = _check_loss(loss_decode)
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        act_cfg = dict(type="ReLU") if act_cfg is None else act_cfg
        self.scale_heads = nn.ModuleList()
        for i, stride in enumerate(strides):
            ops: List[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(strides[0])))):
                ops.append(ConvModule(self.in_channels[i] if k == 0 else channels, channels, 3, padding=1,
                                      norm_cfg=norm_cfg, act_cfg=act_cfg))
                if stride != strides[0]:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners))
            self.scale_heads.append(nn.Sequential(*ops))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)  # mmseg's init of the classifier
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = [inputs[i] for i in self.in_index]
        out = self.scale_heads[0](x[0])
        for i in range(1, len(x)):
            y = self.scale_heads[i](x[i])
            # traced, the resize is always kept (an identity at equal sizes), so other input sizes still add up
            if y.shape[2:] != out.shape[2:] or fast.tracing():
                y = F.interpolate(y, size=out.shape[2:], mode="bilinear", align_corners=self.align_corners)
            out = out + y
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)

    def losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel-wise cross-entropy of ``logits`` ``(B, K, h, w)`` (resized bilinearly to the labels)
        against ``labels`` ``(B, H, W)`` (int64, ``ignore_index`` skipped), times ``loss_weight``, as
        mmseg's ``CrossEntropyLoss`` (mean over the counted pixels)."""
        if labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.dim() != 3 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must be (B, H, W) for logits {tuple(logits.shape)}, got {tuple(labels.shape)}")
        if logits.shape[2:] != labels.shape[1:]:
            logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=self.align_corners)
        weight = self.loss_decode.get("class_weight")
        if weight is not None:
            weight = logits.new_tensor(weight)
        loss = F.cross_entropy(logits, labels.long(), weight=weight, ignore_index=self.ignore_index)
        return loss * float(self.loss_decode.get("loss_weight", 1.0))


def _check_loss(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if cfg is None:
        return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
    _cfg_type(cfg, "loss_decode", ["CrossEntropyLoss"])
    extra = set(cfg) - {"type", "use_sigmoid", "use_mask", "loss_weight", "class_weight", "reduction", "loss_name"}
    if extra:
        raise ValueError(f"loss_decode has unsupported keys {sorted(extra)}: {dict(cfg)!r}")
    if cfg.get("use_sigmoid", False) or cfg.get("use_mask", False) or cfg.get("reduction", "mean") != "mean":
        raise ValueError(f"loss_decode: only softmax cross-entropy with mean reduction is supported, got {dict(cfg)!r}")
    return dict(cfg)
