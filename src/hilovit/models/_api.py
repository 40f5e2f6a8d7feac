"""The model API that every hilovit family shares (timm's, which users already know).

* :func:`feature_take_indices`: which stages ``indices`` / ``out_indices`` select. None: all; an
  int ``n``: the last ``n``; a sequence: those stages, negative ones counted from the end. Anything
  out of range is the same ``ValueError`` in every family.
* :class:`FeatureInfo`: the list of ``{'num_chs', 'reduction', 'module', 'stage'}`` dicts a model
  carries as ``feature_info``, with ``.channels()``, ``.reduction()``, ``.module_name()``.
* :class:`HierarchicalModel`: the classification/backbone methods written once on top of two
  family hooks, ``_stem(x)`` (image -> first token map, ``(B, H, W, C)``) and
  ``_run_stage(i, x)`` (-> the stage's output before any merge and the next stage's input):
  ``forward_features``, ``forward_head``, ``forward_intermediates``, ``forward_feature_maps``,
  ``get_classifier``, ``reset_classifier``, and the input check.
* :func:`freeze_stages`: the official ``frozen_stages`` rule of the detection and segmentation
  backbones.
* :func:`init_weights`: the official initialisation of both families (truncated normal linear
  weights, std 0.02, zero biases, unit LayerNorms).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.options import check_int
from hilovit.runtime import tune_allocator

__all__ = ["feature_take_indices", "FeatureInfo", "HierarchicalModel", "PretrainedCfgMixin", "init_weights",
           "check_image_input", "update_pretrained_cfg", "freeze_stages", "global_pool_nhwc", "check_global_pool",
           "GLOBAL_POOLS", "CFG_FIELDS"]

Indices = Union[int, Sequence[int], None]


# ---- constructor argument checks -------------------------------------------------------------
def _as_list(value, name: str, n: Optional[int] = None) -> List:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list, got {value!r}")
    value = list(value)
    if n is not None and len(value) != n:
        raise ValueError(f"{name} must have one entry per stage (len(depths) = {n}), got {value!r}")
    return value





def feature_take_indices(num_features: int, indices: Indices = None, name: str = "indices") -> Tuple[List[int], int]:
    """Resolve stage indices the way timm does: ``(sorted indices, largest index)``.

    Args:
        num_features: how many stages there are (``n``).
        indices: None (all), an int ``k`` in ``[1, n]`` (the last ``k``), or a sequence of ints in
            ``[-n, n)`` (negative ones counted from the end; repeats are taken once).
        name: the argument's name in the error message (``'out_indices'`` for a constructor).

    Raises:
        ValueError: an index outside the model's stages, an empty selection or a non-int.
    """
    n = num_features
    if indices is None:
        return list(range(n)), n - 1
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence)) or isinstance(indices, (str, bytes)):
        raise ValueError(f"{name} must be None, an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 1 <= indices <= n:
            raise ValueError(f"{name}={indices}: an int selects the last k of the {n} stages, so k must be in [1, {n}]")
        take = list(range(n - indices, n))
        return take, n - 1
    take = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"{name}={tuple(indices)!r}: every index must be an int in [{-n}, {n}) for {n} stages")
        take.append(i + n if i < 0 else i)
    if not take:
        raise ValueError(f"{name} selects no stage (got an empty sequence)")
    take = sorted(set(take))
    return take, take[-1]


class FeatureInfo(list):
    """``model.feature_info``: one dict per returned stage (``num_chs``, ``reduction``, ``module``,
    ``stage``), and timm's accessors. ``idx`` is an int or a sequence of positions in this list;
    None gives every entry.

    Example::

        >>> info = create_model("swin_t", features_only=True, out_indices=(1, 3)).feature_info
        >>> info.channels(), info.reduction(), info.module_name()
        ([192, 768], [8, 32], ['layers.1', 'layers.3'])
    """

    def get(self, key: str, idx: Union[int, Sequence[int], None] = None) -> Any:
        if idx is None:
            return [entry[key] for entry in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: Union[int, Sequence[int], None] = None) -> Any:
        """Channels of the maps."""
        return self.get("num_chs", idx)

    def reduction(self, idx: Union[int, Sequence[int], None] = None) -> Any:
        """Stride of the maps relative to the image."""
        return self.get("reduction", idx)

    def module_name(self, idx: Union[int, Sequence[int], None] = None) -> Any:
        """The module whose output each map is (``'layers.i'``)."""
        return self.get("module", idx)

    def get_dicts(self, keys: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
        keys = list(keys) if keys is not None else None
        return [dict(e) if keys is None else {k: e[k] for k in keys} for e in self]


# The ``pretrained_cfg`` fields users of timm read, present in every model's configuration (None where
# unknown): the registered name, the weights tag, the weights' Hugging Face repository, the size the
# weights are best evaluated at, the evaluation crop, the class names and the licence of the weights.
CFG_FIELDS = ("architecture", "tag", "hf_hub_id", "test_input_size", "crop_mode", "label_names", "license")


def update_pretrained_cfg(model: nn.Module, base: Optional[Dict[str, Any]] = None, **changes: Any) -> Dict[str, Any]:
    """The one writer of ``model.pretrained_cfg``: ``base`` (default: the current one) updated with
    ``changes``, set on the model and returned. Families, the model builder, loading and
    ``reset_classifier`` all go through here, so the configuration is never half-replaced. Every
    field of :data:`CFG_FIELDS` is present afterwards (None where nothing set it)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {}) if base is None else dict(base)
    cfg.update(changes)
    for key in CFG_FIELDS:
        cfg.setdefault(key, None)
    model.pretrained_cfg = cfg
    return cfg


class PretrainedCfgMixin:
    """``model.default_cfg``: timm's older name of ``model.pretrained_cfg``, a read-only alias (the same
    dict; change the configuration through ``pretrained_cfg``)."""

    @property
    def default_cfg(self) -> Dict[str, Any]:
        return self.pretrained_cfg


GLOBAL_POOLS = ("avg", "max", "avgmax", "")


def global_pool_nhwc(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """timm's global pooling of a channels-last map ``(B, H, W, C)``: ``'avg'`` (mean), ``'max'``,
    ``'avgmax'`` (the mean of the two) give ``(B, C)``; ``''`` returns the map unpooled."""
    if pool_type == "avg":
        return x.mean(dim=(1, 2))
    if pool_type == "max":
        return x.amax(dim=(1, 2))
    if pool_type == "avgmax":
        return 0.5 * (x.mean(dim=(1, 2)) + x.amax(dim=(1, 2)))
    if pool_type == "":
        return x
    raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {pool_type!r}")


def check_global_pool(global_pool: Any) -> str:
    """``global_pool`` checked against :data:`GLOBAL_POOLS` (ValueError naming the value and the choices)."""
    if not isinstance(global_pool, str) or global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS} ('' = no pooling), got {global_pool!r}")
    return global_pool


def freeze_stages(model: nn.Module, frozen_stages: int) -> None:
    """Freeze a backbone's first stages by the official rule of the LITv2 and Swin detection and
    segmentation backbones: ``frozen_stages >= 0`` freezes ``model.patch_embed``, ``>= 2`` also
    ``model.layers[0 .. frozen_stages - 2]``; -1 freezes nothing. The frozen modules are put in eval
    mode and their parameters stop requiring gradients (call it again after every ``train()``)."""
    mods: List[nn.Module] = [model.patch_embed] if frozen_stages >= 0 else []
    if frozen_stages >= 2:
        mods.extend(model.layers[: frozen_stages - 1])
    for m in mods:
        m.eval()
        for p in m.parameters():
            p.requires_grad = False


def init_weights(m: nn.Module) -> None:
    """The official initialisation of LITv2 and Swin: linear weights truncated normal (std 0.02) with
    zero biases, LayerNorms to the identity; other modules keep their own."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm) and m.weight is not None:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def check_image_input(model: nn.Module, x: Any, min_size: int = 1, min_reason: str = "") -> None:
    """The input check of every model: a 4-D floating tensor ``(B, in_chans, H, W)`` of the model's
    dtype (any floating dtype under autocast), with sides of at least ``min_size``.

    Raises:
        TypeError: not a tensor, not floating point (e.g. a uint8 image), or another float dtype
            than the model's (e.g. float64 into a float32 model), each naming the dtype.
        ValueError: another shape or channel count, or sides smaller than ``min_size``.
    """
    name, C = type(model).__name__, model.in_chans
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected an image tensor (B, {C}, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: x must be an image batch (B, {C}, H, W) for in_chans={C}, got {tuple(x.shape)}")
    if x.shape[1] != C:
        raise ValueError(
            f"{name}: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but the model was built with in_chans={C}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point image, got dtype {x.dtype}; scale and normalise it first "
            "(e.g. x.float() / 255, then the model's mean and std)"
        )
    param = next(model.parameters(), None)
    if param is not None and x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name}: input dtype {x.dtype} does not match the model's {param.dtype}; convert the input "
            f"(x.to({param.dtype})) or the model (model.to({x.dtype})), or run under torch.autocast"
        )
    H, W = x.shape[2], x.shape[3]
    if H < min_size or W < min_size:
        raise ValueError(
            f"{name}: an image of {H}x{W} pixels is smaller than {min_reason or min_size}; "
            f"expected H and W >= {min_size}"
        )


class HierarchicalModel(PretrainedCfgMixin, nn.Module):
    """What LITv2 and Swin share above their stages.

    A family sets ``in_chans``, ``num_classes``, ``num_layers``, ``num_features``,
    ``features_only``, ``out_indices``, ``global_pool``, ``feature_info``, ``norm`` (the final
    norm), ``head_drop`` (dropout before the head), ``head``, and defines ``_stem(x)``,
    ``_run_stage(i, x) -> (out, next)``,
    ``min_input_size`` (smallest image side) and, for backbones, ``_feature_norm(i, out)``.
    Token maps are channels last ``(B, H, W, C)``.
    """

    _POOLS = GLOBAL_POOLS

    def __init__(self) -> None:
        super().__init__()
        # The first model built switches glibc to reuse freed activation memory (see
        # hilovit.runtime.tune_allocator; HILOVIT_NO_MALLOPT=1 leaves the allocator alone).
        tune_allocator()

    # ---- hooks ------------------------------------------------------------------------------
    def _feature_norm(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """The output norm of stage ``i`` in a ``features_only`` model (none by default)."""
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        check_image_input(self, x, self.min_input_size, f"patch_size={self.patch_size}")

    @staticmethod
    def _build_feature_info(dims: Sequence[int], reductions: Sequence[int], indices: Iterable[int]) -> FeatureInfo:
        return FeatureInfo(
            {"num_chs": int(dims[i]), "reduction": int(reductions[i]), "module": f"layers.{i}", "stage": i}
            for i in indices
        )

    # ---- timm's model API -------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier module (``nn.Identity`` without one: ``num_classes=0`` or ``features_only``)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head by a freshly initialised ``Linear(num_features, num_classes)`` (0: none).

        Raises:
            ValueError: a ``features_only`` model, a bad ``num_classes`` or ``global_pool``.
        """
        if self.features_only:
            raise ValueError(f"a features_only {type(self).__name__} has no classifier to reset")
        check_int(num_classes, "num_classes", minimum=0)
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.num_classes = num_classes
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            init_weights(self.head)
        else:
            self.head = nn.Identity()
        if getattr(self, "pretrained_cfg", None) is not None:
            update_pretrained_cfg(self, num_classes=num_classes)

    # ---- forward ----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, h, w, num_features)``: the last stage, unpooled, after the final
        norm (a ``features_only`` model has none). As in timm, :meth:`forward_head` pools."""
        x = self._stem(x)
        out = x
        for i in range(self.num_layers):
            out, x = self._run_stage(i, x)
        return self.norm(out)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the ``(B, h, w, C)`` map (``global_pool``: ``'avg'``, ``'max'``, ``'avgmax'`` -> ``(B, C)``;
        ``''`` keeps the map, as timm's), apply ``head_drop`` and classify (``''``: the head on every
        position, ``(B, h, w, num_classes)``); ``pre_logits``: the pooled features, after the dropout."""
        x = self.head_drop(global_pool_nhwc(x, self.global_pool))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))

    def forward_feature_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The maps ``(B, C_i, H_i, W_i)`` of the stages in ``out_indices``, through their output norms."""
        take, last = feature_take_indices(self.num_layers, self.out_indices, "out_indices")
        x = self._stem(x)
        maps = []
        for i in range(last + 1):
            out, x = self._run_stage(i, x)
            if i in take:
                maps.append(self._feature_norm(i, out).permute(0, 3, 1, 2))
        return maps

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's ``forward_intermediates``: the stage maps, taken after each stage's blocks (before merging).

        Args:
            indices: stages to return (see :func:`feature_take_indices`; default all).
            norm: apply the final norm to the last stage's map when it is returned.
            stop_early: stop after the last requested stage (``intermediates_only`` does too).
            output_fmt: ``'NCHW'`` (``(B, C_i, H_i, W_i)``, views of channels-last data) or ``'NHWC'``.
            intermediates_only: return only the list.

        Returns:
            the list of maps, or ``(final, list)`` with ``final`` the ``(B, h, w, C)`` map where the
            stages stopped, after the final norm (:meth:`forward_features` when not stopping early).

        Raises:
            ValueError: an ``output_fmt`` other than NCHW/NHWC, or indices outside the stages.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(self.num_layers, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_layers - 1
        x = self._stem(x)
        out, feats = x, []
        for i in range(last + 1):
            out, x = self._run_stage(i, x)
            if i in take:
                y = self.norm(out) if (norm and i == self.num_layers - 1) else out
                feats.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return feats
        return self.norm(out), feats
