"""Pictures: benchmark plots, training curves, confusion matrices (:mod:`~hilovit.viz.plots`), what
HiLo's branches see and attention maps (:mod:`~hilovit.viz.hilo`), segmentation maps
(:mod:`~hilovit.viz.segmentation`). Matplotlib (Agg); PNG, JPEG or WebP by the file's extension,
written atomically (:mod:`~hilovit.viz.files`)."""

from hilovit.viz.hilo import (
    AttentionMap,
    HiLoBranches,
    HiLoCapture,
    WindowAttentionInput,
    amplitude_spectrum,
    attention_map,
    feature_energy,
    high_frequency_share,
    hilo_branches,
    hilo_layers,
    hilo_picture,
    lofi_attention,
    model_input,
    plot_attention,
    plot_hilo,
    radial_profile,
    select_hilo,
    small_map_warning,
    viz_attention,
    viz_hilo,
    window_attention,
)
from hilovit.viz.plots import (
    plot_attention_benchmark,
    plot_bars,
    plot_confusion_matrix,
    plot_sweep,
    plot_training_curves,
    save_figure,
)

__all__ = ["save_figure", "plot_attention_benchmark", "plot_bars", "plot_sweep", "plot_training_curves",
           "plot_confusion_matrix", "hilo_layers", "select_hilo", "HiLoCapture", "amplitude_spectrum",
           "high_frequency_share", "radial_profile", "feature_energy", "HiLoBranches", "small_map_warning",
           "hilo_branches", "plot_hilo", "lofi_attention", "window_attention", "WindowAttentionInput", "AttentionMap",
           "attention_map", "plot_attention", "model_input", "hilo_picture", "viz_hilo", "viz_attention"]
