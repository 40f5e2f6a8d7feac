"""What HiLo's branches see (frequency maps) and attention maps, for ``hilovit viz``. Matplotlib; PNG,
JPEG or WebP by the file's extension, written atomically."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from hilovit.viz.plots import _pyplot, save_figure

__all__ = ["hilo_layers", "select_hilo", "HiLoCapture", "amplitude_spectrum",
           "high_frequency_share", "radial_profile", "feature_energy", "HiLoBranches", "small_map_warning",
           "hilo_branches", "plot_hilo",
           "lofi_attention", "window_attention", "WindowAttentionInput", "AttentionMap", "attention_map",
           "plot_attention", "model_input", "hilo_picture", "viz_hilo", "viz_attention"]

# =========================================================================== what HiLo sees
# ``hilovit viz hilo``: the Hi-Fi and Lo-Fi branch outputs of one HiLo layer (feature energy per
# position) and their 2-D Fourier amplitude spectra; ``hilovit viz attention``: the Lo-Fi attention
# of a query over the pooled keys (LITv2) or a Swin window attention map, over the image.


def hilo_layers(model) -> List[Tuple[str, Any]]:
    """``[(name, HiLo), ...]`` of every HiLo module in ``model`` (``model`` itself included), in order."""
    from hilovit.layers.hilo import HiLo

    return [(name or type(model).__name__, m) for name, m in model.named_modules() if isinstance(m, HiLo)]


def select_hilo(model, layer: Optional[int] = None, need: str = "both") -> Tuple[int, str, Any]:
    """Pick a HiLo layer: ``(index, name, module)``.

    Args:
        layer: index into :func:`hilo_layers` (negative counts from the end); None: the first layer
            that has what ``need`` asks for.
        need: ``'both'`` (Hi-Fi and Lo-Fi heads) or ``'lofi'`` (Lo-Fi heads).
    """
    layers = hilo_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no HiLo layer (choose a LITv2 model)")

    def fits(m) -> bool:
        return m.l_heads > 0 and (need == "lofi" or m.h_heads > 0)

    what = "Hi-Fi and Lo-Fi heads" if need == "both" else "Lo-Fi heads"
    if layer is None:
        for i, (name, m) in enumerate(layers):
            if fits(m):
                return i, name, m
        raise ValueError(f"no HiLo layer of {type(model).__name__} has {what} (alpha is 0 or 1 everywhere)")
    if isinstance(layer, bool) or not isinstance(layer, int) or not -len(layers) <= layer < len(layers):
        raise ValueError(
            f"--layer {layer!r}: {type(model).__name__} has {len(layers)} HiLo layers (0..{len(layers) - 1})"
        )
    index = layer % len(layers)
    name, m = layers[index]
    if not fits(m):
        raise ValueError(
            f"--layer {layer}: HiLo layer {name} has {m.h_heads} Hi-Fi and {m.l_heads} Lo-Fi heads; it needs {what}"
        )
    return index, name, m


class HiLoCapture:
    """Record what one HiLo module computes in the next forward passes (a context manager).

    Forward hooks on the module and on its branch methods' projections are not enough to tell the
    branches apart, so the capture wraps the module's ``hifi`` and ``lofi`` methods (instance
    attributes, removed on exit) and keeps, for the last call, ``hifi`` ``(B, H, W, h_dim)`` and
    ``lofi`` ``(B, H, W, l_dim)`` (each after its output projection, padding cropped), and
    ``lofi_source``, the padded map ``(B, Hp, Wp, C)`` both branches received.

    Example::

        >>> _, _, hilo = select_hilo(model)
        >>> with HiLoCapture(hilo) as cap:
        ...     model(x)
        >>> cap.hifi.shape, cap.lofi.shape
    """

    def __init__(self, hilo):
        self.hilo = hilo
        self.size: Optional[Tuple[int, int]] = None
        self._hifi = self._lofi = self.lofi_source = None
        self._hook = None

    def __enter__(self) -> HiLoCapture:
        m, cls = self.hilo, type(self.hilo)

        def size_hook(_module, args, kwargs):
            x = args[0]
            H, W = (args[1:3] if len(args) >= 3 else (kwargs.get("H"), kwargs.get("W")))
            self.size = (int(x.shape[1]), int(x.shape[2])) if x.dim() == 4 else (int(H), int(W))

        def hifi(x):
            out = cls.hifi(m, x)
            self._hifi = out.detach()
            return out

        def lofi(x):
            out = cls.lofi(m, x)
            self._lofi, self.lofi_source = out.detach(), x.detach()
            return out

        self._hook = m.register_forward_pre_hook(size_hook, with_kwargs=True)
        m.hifi, m.lofi = hifi, lofi
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()
        for name in ("hifi", "lofi"):
            self.hilo.__dict__.pop(name, None)

    def _crop(self, t):
        if t is None or self.size is None:
            return t
        H, W = self.size
        return t[:, :H, :W]

    @property
    def hifi(self):
        return self._crop(self._hifi)

    @property
    def lofi(self):
        return self._crop(self._lofi)


def _as_map(feat):
    """``(H, W, C)`` float64 tensor from ``(B, H, W, C)`` (first image) or ``(H, W, C)``."""
    import torch

    feat = torch.as_tensor(feat).detach().cpu().double()
    if feat.dim() == 4:
        feat = feat[0]
    if feat.dim() != 3:
        raise ValueError(f"expected a feature map (H, W, C) or (B, H, W, C), got shape {tuple(feat.shape)}")
    return feat


def _power(feat):
    """Power spectrum ``|FFT|^2`` per channel of the mean-removed map, ``(C, H, W)``, unshifted."""
    import torch

    feat = _as_map(feat)
    centred = feat - feat.mean(dim=(0, 1), keepdim=True)
    return torch.fft.fft2(centred.permute(2, 0, 1)).abs() ** 2


def _radius(H: int, W: int):
    """Radial frequency ``sqrt(fy^2 + fx^2)`` in cycles per position (Nyquist 0.5), unshifted ``(H, W)``."""
    import torch

    fy = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    return (fy**2 + fx**2).sqrt()


def amplitude_spectrum(feat):
    """The 2-D Fourier amplitude spectrum averaged over channels, centred (``fftshift``): ``(H, W)``.

    Each channel's spatial mean is removed first, so the spectrum shows how the features vary
    over positions, not their constant offset.
    """
    import torch

    feat = _as_map(feat)
    centred = feat - feat.mean(dim=(0, 1), keepdim=True)
    amp = torch.fft.fft2(centred.permute(2, 0, 1)).abs().mean(dim=0)
    return torch.fft.fftshift(amp)


def high_frequency_share(feat, cutoff: float = 0.25) -> float:
    """Share of the (mean-removed) spectral energy at radial frequencies above ``cutoff``.

    Frequencies are in cycles per position (Nyquist 0.5; the default ``cutoff`` is half of it),
    energy is ``|FFT|^2`` summed over channels. 0 for a constant map.
    """
    if not 0.0 < cutoff < 0.5 * 2**0.5:
        raise ValueError(f"cutoff must be in (0, 0.707) cycles per position, got {cutoff!r}")
    feat = _as_map(feat)
    power = _power(feat).sum(dim=0)
    total = float(power.sum())
    # a map that does not vary (e.g. Lo-Fi with a single pooled key) leaves only rounding noise
    if total <= 1e-10 * float((feat**2).sum()) * feat.shape[0] * feat.shape[1] or total == 0.0:
        return 0.0
    return float(power[_radius(*power.shape) > cutoff].sum()) / total


def radial_profile(feat, bins: int = 12):
    """Mean amplitude (averaged over channels) per radial-frequency bin: ``(centres, values)`` arrays."""
    import numpy as np

    amp = _power(feat).sqrt().mean(dim=0).numpy()
    r = _radius(*amp.shape).numpy()
    edges = np.linspace(0.0, r.max() + 1e-9, bins + 1)
    idx = np.digitize(r, edges) - 1
    centres, values = [], []
    for b in range(bins):
        sel = (idx == b) & (r > 0)
        if sel.any():
            centres.append(0.5 * (edges[b] + edges[b + 1]))
            values.append(float(amp[sel].mean()))
    return np.asarray(centres), np.asarray(values)


def feature_energy(feat):
    """Energy per position: mean over channels of the squared deviation from the channel's mean, ``(H, W)``."""
    feat = _as_map(feat)
    return ((feat - feat.mean(dim=(0, 1), keepdim=True)) ** 2).mean(dim=-1)


@dataclass
class HiLoBranches:
    """The two branch outputs of one HiLo layer for one image, and what :func:`plot_hilo` draws."""

    layer: int
    name: str
    hifi: Any  # (H, W, h_dim)
    lofi: Any  # (H, W, l_dim)
    cutoff: float = 0.25
    window: int = 1  # the layer's window / pooling size

    @property
    def warning(self) -> Optional[str]:
        """One line when the layer's map is too small for the comparison to mean much, else None."""
        H, W, _ = self.hifi.shape
        return small_map_warning(self.layer, self.name, (H, W), self.window)

    @property
    def hifi_share(self) -> float:
        return high_frequency_share(self.hifi, self.cutoff)

    @property
    def lofi_share(self) -> float:
        return high_frequency_share(self.lofi, self.cutoff)

    def summary(self) -> str:
        H, W, _ = self.hifi.shape
        return (
            f"HiLo layer {self.layer} ({self.name}, {H}x{W} tokens): share of spectral energy above "
            f"{self.cutoff:g} cycles/token: Hi-Fi {self.hifi_share:.3f}, Lo-Fi {self.lofi_share:.3f}"
        )


MIN_POOLED_SIDE = 3  # Lo-Fi keys per side below which the branch pictures say little


def small_map_warning(layer: int, name: str, tokens: Tuple[int, int], window: int) -> Optional[str]:
    """Why the pictures of a HiLo layer on a ``tokens`` map with window ``window`` say little, or None.

    The Lo-Fi branch attends to the map average-pooled over ``window x window`` cells; when that
    leaves fewer than :data:`MIN_POOLED_SIDE` keys per side (e.g. 1x1 or 2x2), Lo-Fi sees an
    almost constant summary and Hi-Fi's windows cover nearly the whole map, so the two branches'
    spectra (a few frequencies at most) cannot be compared meaningfully.
    """
    H, W = tokens
    kh, kw = -(-H // window), -(-W // window)
    if min(kh, kw) >= MIN_POOLED_SIDE:
        return None
    need = MIN_POOLED_SIDE * window
    return (f"HiLo layer {layer} ({name}) works on a {H}x{W} token map: its window size {window} pools it to "
            f"{kh}x{kw} Lo-Fi keys, too few for the Hi-Fi/Lo-Fi comparison to mean much (a map of at least "
            f"{need}x{need} tokens is needed: a larger --img-size)")


def hilo_branches(model, x, layer: Optional[int] = None, cutoff: float = 0.25) -> HiLoBranches:
    """Run ``model`` on the image batch ``x`` and return the branch outputs of a HiLo layer (first image).

    ``layer`` as in :func:`select_hilo` (default: the first layer with both branches).
    """
    import torch

    index, name, hilo = select_hilo(model, layer, need="both")
    was_training = model.training
    model.eval()
    try:
        with HiLoCapture(hilo) as cap, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    if cap.hifi is None or cap.lofi is None:
        raise RuntimeError(f"HiLo layer {name} did not run in the forward pass")
    return HiLoBranches(index, name, cap.hifi[0].cpu(), cap.lofi[0].cpu(), cutoff, window=hilo.ws)


def _show_image(ax, image, title: str = "input") -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_hilo(branches: HiLoBranches, image, path: str | os.PathLike, title: Optional[str] = None) -> Path:
    """The input image beside each branch's feature energy, their amplitude spectra, and the radial profiles."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11, 7))
    _show_image(axes[0][0], image)
    H, W, _ = branches.hifi.shape
    energies = [feature_energy(branches.hifi).numpy(), feature_energy(branches.lofi).numpy()]
    energies = [e / (e.max() or 1.0) for e in energies]
    logs = []
    for feat in (branches.hifi, branches.lofi):
        amp = amplitude_spectrum(feat).numpy()
        amp[H // 2, W // 2] = np.nan  # the DC term, zero once the channel means are removed
        logs.append(np.log10(np.maximum(amp, 1e-12 * max(np.nanmax(amp), 1e-30))))
    lo, hi = min(np.nanmin(v) for v in logs), max(np.nanmax(v) for v in logs)
    shares = [branches.hifi_share, branches.lofi_share]
    fy = np.fft.fftshift(np.fft.fftfreq(H))
    fx = np.fft.fftshift(np.fft.fftfreq(W))
    extent = [fx[0] - 0.5 / W, fx[-1] + 0.5 / W, fy[-1] + 0.5 / H, fy[0] - 0.5 / H]
    for col, (label, energy, logamp, share) in enumerate(zip(("Hi-Fi", "Lo-Fi"), energies, logs, shares), 1):
        ax = axes[0][col]
        im = ax.imshow(energy, cmap="magma")
        ax.set_title(f"{label} output: feature energy per position\n(channel means removed, / max)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax = axes[1][col]
        im = ax.imshow(logamp, cmap="viridis", vmin=lo, vmax=hi, extent=extent)
        ax.add_patch(plt.Circle((0, 0), branches.cutoff, fill=False, color="white", ls="--", lw=1))
        ax.set_title(f"{label}: log10 |FFT| (channel mean)\nenergy above {branches.cutoff:g}: {share:.0%}",
                     fontsize=9)
        ax.set_xlabel("cycles / token", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax = axes[1][0]
    for label, feat in (("Hi-Fi", branches.hifi), ("Lo-Fi", branches.lofi)):
        r, v = radial_profile(feat)
        ax.plot(r, v / max(v.max(), 1e-12), marker="o", label=label)
    ax.axvline(branches.cutoff, color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("radial frequency (cycles / token)", fontsize=8)
    ax.set_ylabel("mean |FFT| (normalised)", fontsize=8)
    ax.set_title("radial amplitude profile", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title or branches.summary(), fontsize=10, wrap=True)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- attention maps
def lofi_attention(hilo, source, position: Tuple[int, int]):
    """Lo-Fi attention weights of one query over the pooled keys: ``(l_heads, Hp / s, Wp / s)``.

    ``source``: what the HiLo module's ``lofi`` received (the padded map ``(B, Hp, Wp, C)``, see
    :class:`HiLoCapture`); ``position``: the query's ``(row, col)`` on the token grid (first image).
    The weights are the module's own (:meth:`~hilovit.layers.hilo.HiLo.lofi_attention_weights`).
    """
    return hilo.lofi_attention_weights(source, position)


def window_attention(attn, x, position: Tuple[int, int]):
    """Weights of one query in Swin window attention, on the token map: ``(heads, H, W)``.

    ``attn``: the :class:`~hilovit.layers.window_attention.WindowAttention`; ``x``: its input
    ``(B, H, W, C)`` (first image); ``position``: the query's ``(row, col)``. Keys outside the
    query's (shifted) window get 0 (:meth:`~hilovit.layers.window_attention.WindowAttention.attention_weights`).
    """
    return attn.attention_weights(x, position)


class WindowAttentionInput:
    """Record the input of one :class:`WindowAttention` in the next forward passes (a context
    manager around a forward pre-hook: the module runs its own forward in training and inference)."""

    def __init__(self, model, attn):
        self.model, self.attn, self.input = model, attn, None
        self._hook = None

    def __enter__(self) -> WindowAttentionInput:
        def hook(_module, args):
            self.input = args[0].detach()

        self._hook = self.attn.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()


@dataclass
class AttentionMap:
    """Attention weights of one query, for :func:`plot_attention`.

    ``kind``: ``'lofi'`` (weights over the pooled keys, ``grid`` = the pooled grid, each cell
    ``cell`` tokens wide) or ``'window'`` (weights on the token map, ``cell`` = 1). ``tokens`` is
    the layer's token grid ``(H, W)``; ``query`` the query's ``(row, col)`` on it.
    """

    kind: str
    layer: int
    name: str
    weights: Any  # (heads, gh, gw)
    tokens: Tuple[int, int]
    query: Tuple[int, int]
    cell: int = 1

    def summary(self) -> str:
        what = "Lo-Fi attention over pooled keys" if self.kind == "lofi" else "window attention"
        return (f"{what}: layer {self.layer} ({self.name}, {self.tokens[0]}x{self.tokens[1]} tokens), "
                f"query at token {self.query}, {self.weights.shape[0]} heads")


def _token_position(query: Optional[Tuple[float, float]], image_hw: Tuple[int, int], tokens: Tuple[int, int]):
    H, W = image_hw
    y, x = (H / 2.0, W / 2.0) if query is None else query
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"--query {y} {x} lies outside the {H}x{W} model input (row, column in pixels)")
    return min(int(y * tokens[0] / H), tokens[0] - 1), min(int(x * tokens[1] / W), tokens[1] - 1)


def attention_map(model, x, layer: Optional[int] = None, query: Optional[Tuple[float, float]] = None) -> AttentionMap:
    """The attention of one query for the image batch ``x`` (first image).

    LITv2 (any model with HiLo): the Lo-Fi weights over the pooled keys of HiLo layer ``layer``
    (default: the first with both branches). Swin: the window attention weights of
    ``WindowAttention`` number ``layer`` (default 0). ``query``: ``(row, col)`` in pixels of the
    model input (default: its centre).
    """
    import torch

    from hilovit.layers.window_attention import WindowAttention

    img_hw = (int(x.shape[-2]), int(x.shape[-1]))
    was_training = model.training
    model.eval()
    try:
        if hilo_layers(model):
            index, name, hilo = select_hilo(model, layer, need="both" if layer is None else "lofi")
            with HiLoCapture(hilo) as cap, torch.no_grad():
                model(x)
            tokens = tuple(cap.lofi.shape[1:3])
            pos = _token_position(query, img_hw, tokens)
            weights = lofi_attention(hilo, cap.lofi_source, pos)
            return AttentionMap("lofi", index, name, weights, tokens, pos, cell=hilo.ws)
        windows = [(n, m) for n, m in model.named_modules() if isinstance(m, WindowAttention)]
        if not windows:
            raise ValueError(f"{type(model).__name__} has neither HiLo nor window attention layers")
        index = 0 if layer is None else layer
        if isinstance(index, bool) or not isinstance(index, int) or not -len(windows) <= index < len(windows):
            raise ValueError(f"--layer {layer!r}: {type(model).__name__} has {len(windows)} window attention layers "
                             f"(0..{len(windows) - 1})")
        index %= len(windows)
        name, attn = windows[index]
        with WindowAttentionInput(model, attn) as rec, torch.no_grad():
            model(x)
        if rec.input is None:
            raise RuntimeError(f"window attention layer {name} did not run in the forward pass")
        tokens = tuple(rec.input.shape[1:3])
        pos = _token_position(query, img_hw, tokens)
        return AttentionMap("window", index, name, window_attention(attn, rec.input, pos), tokens, pos)
    finally:
        model.train(was_training)


def plot_attention(amap: AttentionMap, image, path: str | os.PathLike, heads: int = 4,
                   title: Optional[str] = None) -> Path:
    """The image with the query marked, the head-averaged attention over it, and a few single heads."""
    import numpy as np

    plt = _pyplot()
    H, W = image.shape[:2]
    th, tw = amap.tokens
    sy, sx = H / th, W / tw  # pixels per token
    gh, gw = amap.weights.shape[1:]
    extent = [0, gw * amap.cell * sx, gh * amap.cell * sy, 0]  # pooled cells may cover padding
    qy, qx = (amap.query[0] + 0.5) * sy, (amap.query[1] + 0.5) * sx
    weights = np.asarray(amap.weights, dtype=np.float64)
    panels = [("mean over heads", weights.mean(axis=0))]
    panels += [(f"head {h}", weights[h]) for h in range(min(heads, weights.shape[0]))]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.6))
    _show_image(axes[0], image, "input and query")
    axes[0].plot(qx, qy, marker="+", color="red", ms=14, mew=2)
    for ax, (label, w) in zip(axes[1:], panels):
        _show_image(ax, image, label)
        ax.imshow(w, cmap="inferno", alpha=0.65, extent=extent, interpolation="nearest", vmin=0.0, vmax=w.max() or 1)
        ax.plot(qx, qy, marker="+", color="cyan", ms=12, mew=2)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
    fig.suptitle(title or amap.summary(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the viz commands
def model_input(net, image, img_size=None):
    """Prepare ``image`` (a path, a PIL image or an array) for the classifier ``net`` as its ``pretrained_cfg``
    says (``img_size``: another input size ``H`` or ``(H, W)``). Returns ``(x (1, C, H, W), display)``:
    the batch and the same picture un-normalised to [0, 1] for drawing (``(H, W)`` grey or ``(H, W, 3)``)."""
    import numpy as np

    from hilovit.data.folders import open_image, preprocess_image

    cfg = dict(net.pretrained_cfg)
    C = int(cfg["input_size"][0])
    if img_size is not None:
        sizes = [img_size] if isinstance(img_size, int) else list(img_size)
        if len(sizes) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"--img-size must be one or two positive ints, got {img_size!r}")
        cfg["input_size"] = (C, sizes[0], sizes[-1])
    x = preprocess_image(open_image(image, C), cfg)
    mean = np.asarray(cfg.get("mean") or (0.0,) * C, dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(cfg.get("std") or (1.0,) * C, dtype=np.float64).reshape(-1, 1, 1)
    shown = np.clip(x.numpy() * std + mean, 0.0, 1.0)
    display = shown[0] if C == 1 else shown.transpose(1, 2, 0)
    return x.unsqueeze(0), display


def _load_net(model: Optional[str], checkpoint=None):
    """``model`` with random weights, or the model ``checkpoint`` holds (sized from it), in eval mode."""
    from hilovit.models._builder import create_model, load_model

    if checkpoint is None:
        if model is None:
            raise ValueError("give a model name or a checkpoint")
        return create_model(model).eval()
    net, _ = load_model(checkpoint, model)  # sized from the checkpoint, in eval mode
    return net


def _model_input(image: str | os.PathLike, model: str, checkpoint=None, img_size=None):
    """Load ``model`` (sized for ``checkpoint``) and prepare ``image`` for it (:func:`model_input`).
    Returns ``(model, x (1, C, H, W), display)``."""
    net = _load_net(model, checkpoint)
    return (net, *model_input(net, image, img_size))


def hilo_picture(net, image, output, name: str, layer: Optional[int] = None, img_size=None,
                 cutoff: float = 0.25) -> Tuple[Path, HiLoBranches]:
    """The picture of a HiLo layer's two branches of the loaded classifier ``net`` for ``image``, titled with
    ``name`` (the model and its weights); returns ``(path, branches)``. ``layer``, ``img_size`` and ``cutoff``
    as in :func:`viz_hilo`; the small-map warning is left to the caller (``branches.warning``)."""
    x, display = model_input(net, image, img_size)
    param = next(net.parameters(), None)
    branches = hilo_branches(net, x if param is None else x.to(param.device), layer, cutoff)
    return plot_hilo(branches, display, output, title=f"{name}\n{branches.summary()}"), branches


def viz_hilo(image, model: str, output, checkpoint=None, layer: Optional[int] = None, img_size=None,
             cutoff: float = 0.25) -> Tuple[Path, HiLoBranches]:
    """``hilovit viz hilo``: the picture of a HiLo layer's two branches for ``image``; returns (path, branches).

    The picture's format follows ``output``'s extension (.png, .jpg/.jpeg, .webp); a map too small to
    mean much gets one warning line on stderr (:func:`small_map_warning`)."""
    from hilovit.viz.files import image_format

    image_format(output)  # refused before the model runs
    net = _load_net(model, checkpoint)
    weights = "trained weights" if checkpoint else "random weights"
    path, branches = hilo_picture(net, image, output, f"{model} ({weights})", layer, img_size, cutoff)
    if branches.warning:
        print(f"warning: {branches.warning}", file=sys.stderr)
    return path, branches


def viz_attention(image, model: str, output, checkpoint=None, layer: Optional[int] = None, img_size=None,
                  query: Optional[Tuple[float, float]] = None, heads: int = 4) -> Tuple[Path, AttentionMap]:
    """``hilovit viz attention``: one query's attention over ``image``; returns (path, map). Formats and
    the small-map warning as :func:`viz_hilo`."""
    from hilovit.viz.files import image_format

    image_format(output)
    net, x, display = _model_input(image, model, checkpoint, img_size)
    amap = attention_map(net, x, layer, query)
    warning = small_map_warning(amap.layer, amap.name, amap.tokens, amap.cell) if amap.kind == "lofi" else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    weights = "trained weights" if checkpoint else "random weights"
    return plot_attention(amap, display, output, heads=heads, title=f"{model} ({weights})\n{amap.summary()}"), amap
