"""What every detector shares: the input side, the test-time resize, config parts and registry entries.

:class:`BaseDetector` holds a :class:`~hilovit.models.det_preprocessor.DetDataPreprocessor`, a
backbone and a neck, and gives every detector (RetinaNet in :mod:`hilovit.models.detector`, Mask
R-CNN in :mod:`hilovit.models.two_stage`) the same entry points: ``extract_feat``, ``predict`` on
uint8 images (the official keep-ratio resize, preprocessing, then the subclass's ``predict_batch``)
and ``checkpoint_filter_fn``. The helpers below build the parts of an official mmdet ``model`` dict
(:func:`build_part`, :func:`build_body`), load ``init_cfg`` checkpoints, check ground truth and turn
a config into a registered model (:func:`create_detector`).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from hilovit.data.constants import COCO_CLASSES, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.models._api import PretrainedCfgMixin, update_pretrained_cfg
from hilovit.models._prefix import backbone_key, has_backbone_keys
from hilovit.models.det_preprocessor import DetDataPreprocessor, Images, as_image_list, resize_keep_ratio
from hilovit.models.heads.fpn import FPN
from hilovit.models.pretrained import PretrainedWeights
from hilovit.models.registry import dense_backbones
from hilovit.models.segmentation import EncoderDecoder, _check_keys, _merge, _split_type

__all__ = ["BaseDetector", "build_body", "build_part", "check_targets", "coco_weights", "create_detector", "det_cfg",
           "litv2_backbone", "load_backbone_init", "load_into", "load_top_init"]

RELEASE = "https://github.com/ziplab/LITv2/releases/download/v1.0/"
Result = Dict[str, torch.Tensor]


def check_targets(targets: Any, batch: int, num_classes: int) -> List[Mapping[str, Any]]:
    """Validate per-image ground truth: a list of ``batch`` dicts with ``boxes`` float ``(N, 4)``,
    ``labels`` int ``(N,)`` in ``[0, num_classes)`` and ``img_shape``."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch:
        raise ValueError(f"targets must be a list of {batch} dicts (one per image), got {type(targets).__name__}"
                         + (f" of length {len(targets)}" if isinstance(targets, (list, tuple)) else ""))
    for i, t in enumerate(targets):
        if not isinstance(t, Mapping) or not {"boxes", "labels", "img_shape"} <= set(t):
            raise ValueError(f"targets[{i}] must be a dict with 'boxes', 'labels' and 'img_shape', got {t!r}")
        b, lab = t["boxes"], t["labels"]
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4 or not b.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be a float (N, 4) tensor, got {getattr(b, 'shape', b)}")
        if not isinstance(lab, torch.Tensor) or lab.shape != (b.shape[0],) or lab.is_floating_point():
            raise ValueError(f"targets[{i}]['labels'] must be an int tensor of shape ({b.shape[0]},), got "
                             f"{getattr(lab, 'dtype', type(lab).__name__)} {tuple(getattr(lab, 'shape', ()))}")
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels'] must be in [0, {num_classes}), got {lab.tolist()}")
    return list(targets)


class BaseDetector(PretrainedCfgMixin, nn.Module):
    """Preprocessor -> backbone -> neck, and prediction on raw images, shared by the detectors.

    Args:
        data_preprocessor: a :class:`DetDataPreprocessor`; backbone: a module returning NCHW maps;
        neck: an :class:`FPN`; num_classes: the detector's classes.
        test_scale: the default test-time resize of :meth:`predict`, ``(long, short)`` edges
            (the official ``(1333, 800)``), or None (no resize).

    A subclass adds its heads and ``predict_batch(inputs, metainfo, rescale=True)``.
    """

    def __init__(self, data_preprocessor: DetDataPreprocessor, backbone: nn.Module, neck: FPN, num_classes: int,
                 test_scale: Optional[Tuple[int, int]] = (1333, 800)):
        super().__init__()
        self.data_preprocessor = data_preprocessor
        self.backbone = backbone
        self.neck = neck
        self.test_scale = test_scale
        self.num_classes = num_classes
        self.in_chans = data_preprocessor.in_chans
        update_pretrained_cfg(self, base=det_cfg(num_classes=num_classes, in_chans=self.in_chans))

    def forward(self, inputs: torch.Tensor, targets: Optional[Sequence[Mapping[str, Any]]] = None):
        """The raw dense outputs of a preprocessed batch (:meth:`forward_dense`); with ``targets``
        (training) the losses of :meth:`loss`, so a DistributedDataParallel or compiled wrapper runs the
        whole step."""
        if targets is not None:
            return self.loss(inputs, targets)
        return self.forward_dense(inputs)

    def forward_dense(self, inputs: torch.Tensor):
        raise NotImplementedError

    def loss(self, inputs: torch.Tensor, targets: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def _check_inputs(self, inputs: Any) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a preprocessed (B, {self.in_chans}, H, W) float tensor, got "
                            f"{type(inputs).__name__}; use predict() for raw images")
        if inputs.dim() != 4 or inputs.shape[1] != self.in_chans or not inputs.is_floating_point():
            raise ValueError(f"inputs must be a float (B, in_chans={self.in_chans}, H, W) tensor, got "
                             f"{inputs.dtype} {tuple(inputs.shape)}")

    def extract_feat(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        """The FPN maps ``(B, out_channels, h_l, w_l)`` of a preprocessed batch."""
        self._check_inputs(inputs)
        return self.neck(list(self.backbone(inputs)))

    def predict_batch(self, inputs: torch.Tensor, metainfo: Sequence[Mapping[str, Any]],
                      rescale: bool = True) -> List[Result]:
        raise NotImplementedError

    def _test_scale(self, resize: Any) -> Optional[Tuple[int, int]]:
        if resize is None:
            return self.test_scale
        if resize is False:
            return None
        if resize is True:
            if self.test_scale is None:
                raise ValueError("resize=True: this model has no test_scale; pass a (long, short) pair")
            return self.test_scale
        if isinstance(resize, (tuple, list)) and len(resize) == 2:
            return (resize[0], resize[1])
        raise ValueError(f"resize must be None (the model's test_scale), True, False or a (long, short) pair, "
                         f"got {resize!r}")

    @torch.no_grad()
    def predict(self, images: Images, resize: Any = None, channel_order: str = "rgb") -> List[Result]:
        """Detect objects in uint8 images of any sizes.

        Args:
            images: a list of ``(C, H, W)`` uint8 tensors or one ``(B, C, H, W)`` uint8 tensor.
            resize: None: the model's ``test_scale`` (official models: keep-ratio into 1333 x 800,
                as the official test pipeline); False: none; a ``(long, short)`` pair.
            channel_order: ``'rgb'`` (default) or ``'bgr'`` (as OpenCV reads files).

        Returns: per image ``{'boxes', 'scores', 'labels'}`` (and ``'masks'`` for instance segmentation,
        bool ``(N, H, W)``), boxes and masks in that image's own pixels.
        Call ``model.eval()`` first (training mode keeps stochastic depth on).
        """
        imgs = as_image_list(images, self.in_chans)
        scale = self._test_scale(resize)
        metas: List[Dict[str, Any]] = []
        if scale is not None:
            resized = []
            for img in imgs:
                out, factor = resize_keep_ratio(img, scale)
                resized.append(out)
                metas.append({"ori_shape": tuple(img.shape[1:]), "scale_factor": factor})
            imgs = resized
        inputs, metas = self.data_preprocessor(imgs, channel_order, metas if scale is not None else None)
        return self.predict_batch(inputs, metas)

    checkpoint_filter_fn = EncoderDecoder.checkpoint_filter_fn


def det_cfg(**kwargs) -> Dict[str, Any]:
    """A detector's ``pretrained_cfg`` (COCO defaults, updated by ``kwargs``)."""
    cfg = {
        "task": "detection",
        "num_classes": 80,
        "class_names": COCO_CLASSES,
        "dataset": "coco",
        "input_size": (3, 1280, 800),  # the official get_flops / benchmark input
        "test_scale": (1333, 800),
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "box_ap": None,
        "classifier": "bbox_head.retina_cls",
        "first_conv": backbone_key("patch_embed.proj"),
    }
    cfg.update(kwargs)
    cfg["input_size"] = (cfg.pop("in_chans", cfg["input_size"][0]), *cfg["input_size"][1:])
    return cfg


# ---------------------------------------------------------------------------- config dicts
def load_into(module: nn.Module, init_cfg: Any, what: str) -> None:
    """mmengine's ``Pretrained`` init: load a checkpoint (path or URL) non-strictly."""
    if init_cfg is None:
        return
    if not isinstance(init_cfg, Mapping) or init_cfg.get("type", "Pretrained") != "Pretrained" \
            or not isinstance(init_cfg.get("checkpoint"), str):
        raise ValueError(f"{what} must be None or dict(type='Pretrained', checkpoint=<path or URL>), got {init_cfg!r}")
    from hilovit.models.pretrained import load_pretrained

    load_pretrained(module, init_cfg["checkpoint"], strict=False)


def build_part(cfg: Any, what: str, classes: Mapping[str, type], drop: Sequence[str] = ()):
    """``(type, module, popped)``: the class ``cfg['type']`` among ``classes`` built from the other keys
    (unknown arguments raise, naming ``what``); the keys in ``drop`` are popped and returned."""
    kind, args = _split_type(cfg, what, list(classes))
    popped = {k: args.pop(k) for k in drop if k in args}
    _check_keys(classes[kind], args, f"{what} (type={kind!r})")
    return kind, classes[kind](**args), popped


def build_body(top: Dict[str, Any], kind: str, allowed: Sequence[str]):
    """The preprocessor, backbone and neck of an mmdet ``model`` dict (after checking its keys against
    ``allowed``): ``(data_preprocessor, backbone, neck, backbone_init)``; ``backbone_init`` holds the
    backbone's ``init_cfg`` / ``pretrained`` entries for :func:`load_backbone_init`."""
    unknown = sorted(set(top) - set(allowed))
    if unknown:
        raise ValueError(f"model (type={kind!r}) has unknown keys {unknown}")
    for key in ("data_preprocessor", "backbone", "neck"):
        if top.get(key) is None:
            raise ValueError(f"model (type={kind!r}) needs a {key!r} dict")
    _, pre, _ = build_part(top["data_preprocessor"], "data_preprocessor", {"DetDataPreprocessor": DetDataPreprocessor})
    _, backbone, bb_init = build_part(top["backbone"], "backbone", dense_backbones("detection"),
                                      drop=("init_cfg", "pretrained"))
    if getattr(backbone, "in_chans", pre.in_chans) != pre.in_chans:
        raise ValueError(f"data_preprocessor has {pre.in_chans} channels (mean/std) but the backbone takes "
                         f"in_chans={backbone.in_chans}")
    _, neck, _ = build_part(top["neck"], "neck", {"FPN": FPN})
    out_channels = list(backbone.out_channels)
    if list(neck.in_channels) != out_channels:
        raise ValueError(f"neck in_channels {neck.in_channels} do not match the backbone's output channels "
                         f"{out_channels} (out_indices {list(backbone.out_indices)})")
    return pre, backbone, neck, bb_init


def load_backbone_init(model: nn.Module, top: Mapping[str, Any], bb_init: Mapping[str, Any]) -> None:
    """The ``pretrained`` / ``init_cfg`` checkpoints of a built detector's config, loaded non-strictly."""
    if bb_init.get("pretrained") is not None or top.get("pretrained") is not None:
        path = bb_init.get("pretrained") or top.get("pretrained")
        load_into(model.backbone, dict(type="Pretrained", checkpoint=path), "pretrained")
    load_into(model.backbone, bb_init.get("init_cfg"), "backbone init_cfg")
    load_top_init(model, top.get("init_cfg"))


def load_top_init(model: nn.Module, init_cfg: Any) -> None:
    """A model-level ``Pretrained`` init: an mmdet checkpoint (``backbone.*`` keys) loads into the
    whole detector, any other checkpoint into the backbone; both non-strictly."""
    if init_cfg is None:
        return
    if not isinstance(init_cfg, Mapping) or not isinstance(init_cfg.get("checkpoint"), str):
        raise ValueError(f"model init_cfg must be None or dict(type='Pretrained', checkpoint=...), got {init_cfg!r}")
    from hilovit.models import hub
    from hilovit.models.pretrained import _read_state_dict

    sd = _read_state_dict(hub.fetch(init_cfg["checkpoint"]))
    target = model if has_backbone_keys(sd) else model.backbone
    load_into(target, init_cfg, "model init_cfg")


# ---------------------------------------------------------------------------- registry entries
_OVERRIDES = ("num_classes", "in_chans", "drop_path_rate", "test_scale", "test_cfg", "train_cfg", "data_preprocessor",
              "backbone", "neck")


def create_detector(config: Dict[str, Any], cfg_overrides: Dict[str, Any], build: Callable[[Dict[str, Any]], Any],
                    heads: Sequence[str], num_classes_at: Sequence[Sequence[str]], **kwargs):
    """A registered detector from its official ``model`` dict: ``kwargs`` override parts of it
    (``num_classes`` at each path of ``num_classes_at``, ``in_chans`` and ``drop_path_rate`` of the
    backbone, ``test_scale``, and dicts merged into ``test_cfg``, ``train_cfg``, ``data_preprocessor``,
    ``backbone``, ``neck`` and the ``heads``); ``build`` makes the model; ``cfg_overrides`` update its
    ``pretrained_cfg`` (:func:`det_cfg`)."""
    allowed = _OVERRIDES + tuple(heads)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected argument(s) {unknown}; a detection model takes {', '.join(allowed)}")
    cfg = copy.deepcopy(config)
    for part in ("data_preprocessor", "backbone", "neck", *heads):
        if kwargs.get(part) is not None:
            cfg[part] = _merge(cfg[part], kwargs[part])
    if kwargs.get("num_classes") is not None:
        for path in num_classes_at:
            node = cfg
            for key in path:
                node = node[key]
            node["num_classes"] = kwargs["num_classes"]
    for key in ("in_chans", "drop_path_rate"):
        if kwargs.get(key) is not None:
            cfg["backbone"][key] = kwargs[key]
    chans = cfg["backbone"].get("in_chans", 3)
    if len(cfg["data_preprocessor"]["mean"]) != chans:  # another channel count: mid-grey normalisation
        cfg["data_preprocessor"].update(mean=[127.5] * chans, std=[127.5] * chans, bgr_to_rgb=False)
    for key in ("test_cfg", "train_cfg"):
        if kwargs.get(key) is not None:
            cfg[key] = _merge(cfg[key], kwargs[key])
    model = build(cfg)
    pcfg = det_cfg(**cfg_overrides)
    if "test_scale" in kwargs:
        pcfg["test_scale"] = kwargs["test_scale"]
    model.test_scale = pcfg["test_scale"]
    pre = cfg["data_preprocessor"]  # mean/std on the 0-255 scale; pretrained_cfg's are on [0, 1]
    pcfg.update(num_classes=model.num_classes, input_size=(model.in_chans, *pcfg["input_size"][1:]),
                mean=tuple(round(m / 255, 6) for m in pre["mean"]), std=tuple(round(s / 255, 6) for s in pre["std"]))
    if model.num_classes != len(pcfg["class_names"] or ()):
        pcfg["class_names"] = None
    update_pretrained_cfg(model, base=pcfg)
    return model


# ---------------------------------------------------------------------------- the official COCO models
#: The official LITv2 COCO detectors' backbone sizes: ``(embed_dim, depths, num_heads, drop_path_rate)``.
LITV2_SIZES = {
    "s": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "m": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.2),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.3),
}


def litv2_backbone(size: str, ws4: bool = False) -> Dict[str, Any]:
    """The ``backbone`` dict of the official LITv2 COCO detectors (RetinaNet and Mask R-CNN alike) of
    ``size`` (``'s'``, ``'m'``, ``'b'``): HiLo window 2 in stage 3, or 4 with ``ws4`` (the ``*_ws_4``
    configs); ``'b'`` trains with activation checkpointing (``use_checkpoint=True``) as its config does."""
    embed_dim, depths, num_heads, drop_path_rate = LITV2_SIZES[size]
    return dict(type="LITv2", embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), window_size=7,
                mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                drop_path_rate=drop_path_rate, ape=False, patch_norm=True, out_indices=[0, 1, 2, 3],
                use_checkpoint=size == "b", alpha=0.9, local_ws=[0, 0, 4 if ws4 else 2, 1])


def coco_weights(kind: str, size: str, ws4: bool, **aps: float) -> PretrainedWeights:
    """The published COCO 1x weights of ``{kind}_litv2_{size}[_ws4]`` (ziplab/LITv2 release v1.0,
    ``{kind}_litv2_{size}_fpn_1x_coco[_ws_4].pth``) with its COCO val2017 ``aps`` (``box_ap``, ``mask_ap``)."""
    file = f"{kind}_litv2_{size}_fpn_1x_coco{'_ws_4' if ws4 else ''}.pth"
    return PretrainedWeights(model=f"{kind}_litv2_{size}{'_ws4' if ws4 else ''}", tag="coco", url=RELEASE + file,
                             top1=None, num_classes=80, input_size=(3, 1280, 800), crop_pct=1.0,
                             interpolation="bilinear", dataset="coco", paper="https://arxiv.org/abs/2205.13213",
                             metrics=dict(aps), extra=dict(aps))
