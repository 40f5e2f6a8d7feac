"""Tests for hilovit.export: ONNX export of LITv2 (deformable token merging included) and Swin,
dynamic batch, verification with onnxruntime, atomic writing, and ``hilovit export``."""

from __future__ import annotations

import json

import pytest
import torch

from hilovit import WindowAttention, create_model
from hilovit.cli import main
from hilovit.export import ExportVerificationError, export_onnx, verify_onnx
from hilovit.models.checkpoint import save_safetensors

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# small enough to trace in seconds; every kind of layer is still there
SMALL_LITV2 = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
SMALL_SWIN = dict(embed_dim=16, depths=[2, 2], num_heads=[1, 2])  # W-MSA and SW-MSA in both stages


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _batch_dim(path):
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or dim.dim_value


@pytest.mark.parametrize(
    "name, overrides, img_size",
    [
        # LITv2: HiLo windows that need padding (stage maps 17x25, 8x12, 4x6, 2x3), DTM on odd sides
        pytest.param("litv2_s", SMALL_LITV2, (70, 102), marks=pytest.mark.slow),
        # Swin: padding to the window (25 -> 28, 13 -> 14 tokens) and shifted windows with their mask
        ("swin_t", SMALL_SWIN, (100, 100)),
    ],
)
def test_export_dynamic_batch_matches_pytorch(tmp_path, name, overrides, img_size):
    model = create_model(name, **overrides).eval()
    out = tmp_path / f"{name}.onnx"
    result = export_onnx(model, out, img_size=img_size, dynamic_batch=True)
    assert out.is_file() and result.path == out
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left
    assert result.input_shape == (3, *img_size)
    assert set(result.diffs) == {1, 3} and result.max_abs_diff <= 1e-4
    assert _batch_dim(out) == "batch"
    # independently of verify_onnx: another batch size, other inputs
    x = torch.randn(4, 3, *img_size)
    with torch.no_grad():
        ref = model(x)
    assert (_run(out, x) - ref).abs().max() <= 1e-4
    # the model is left as it was
    assert not any("forward" in vars(m) for m in model.modules())
    torch.testing.assert_close(model(x[:1]), ref[:1], atol=1e-5, rtol=0)


def test_window_attention_export_form_equals_the_module():
    """The documented export form (reshapes, no index plan) computes the module's function, and
    the module takes it by itself while tracing."""
    torch.manual_seed(0)
    for window, shift, (H, W) in [(7, 3, (14, 14)), (7, 3, (10, 17)), (4, 0, (9, 8)), ((3, 5), (1, 2), (6, 11))]:
        attn = WindowAttention(24, 3, window_size=window, shift_size=shift).eval()
        x = torch.randn(2, H, W, 24)
        with torch.no_grad():
            torch.testing.assert_close(attn.forward_windows(x), attn(x), atol=1e-5, rtol=1e-5)
            traced = torch.jit.trace(attn, x)
        assert "index_select" not in str(traced.graph)  # the export form, not the plan's row gather
        with torch.no_grad():
            torch.testing.assert_close(traced(torch.randn(3, H, W, 24)).shape, torch.Size([3, H, W, 24]))


def test_export_leaves_the_modules_unpatched():
    model = create_model("swin_nano").eval()
    seen = []
    attn = model.layers[0].blocks[1].attn
    handle = attn.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        model(x)  # the inference fast path runs inside the module: its hooks fire
    assert seen == [(2, 14, 14, 48)]
    handle.remove()
    assert not any("forward" in vars(m) for m in model.modules())


def test_static_batch_and_failed_verification(tmp_path):
    model = create_model("swin_nano", depths=(2,), num_heads=(3,), num_classes=5).eval()
    out = tmp_path / "model.onnx"
    result = export_onnx(model, out, dynamic_batch=False)
    assert set(result.diffs) == {1} and result.max_abs_diff <= 1e-4
    assert _batch_dim(out) == 1
    assert verify_onnx(out, model, {1: torch.randn(1, 3, 28, 28)})[1] <= 1e-4
    # a failed verification leaves the previous file as it was and no temporary file
    before = out.read_bytes()
    with pytest.raises(ExportVerificationError, match="does not match PyTorch"):
        export_onnx(model, out, dynamic_batch=False, atol=-1.0, overwrite=True)  # no difference passes atol < 0
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_rejects_bad_arguments(tmp_path):
    model = create_model("litv2_nano")
    with pytest.raises(ValueError, match="directory"):
        export_onnx(model, tmp_path)
    with pytest.raises(ValueError, match="img_size"):
        export_onnx(model, tmp_path / "m.onnx", img_size=(0, 28))


def test_cli_export_with_checkpoint(tmp_path, capsys):
    torch.manual_seed(1)
    trained = create_model("litv2_nano", num_classes=3, in_chans=1).eval()
    ckpt = tmp_path / "model.safetensors"
    save_safetensors(trained.state_dict(), ckpt, metadata={"model": "litv2_nano", "classes": json.dumps("abc")})
    out = tmp_path / "out" / "nano.onnx"
    # odd sizes: maps of 18x21, 9x10, 4x5 (HiLo window 3: padded), 2x2; deformable merging on odd sides
    rc = main(["export", "--model", "litv2_nano", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(out),
               "--dynamic-batch", "--img-size", "35", "41"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "max |diff|" in text and f"wrote {out}" in text
    assert float(text.split("max |diff| = ")[1].split()[0]) <= 1e-4
    # the file holds the checkpoint's weights: its outputs are those of the trained model
    x = torch.randn(2, 1, 35, 41)
    with torch.no_grad():
        torch.testing.assert_close(_run(out, x), trained(x), atol=1e-4, rtol=0)
    assert main(["export", "--model", "litv2_nano", "--output", str(out), "--img-size", "1", "2", "3"]) == 2


def test_cli_export_failure_exit_status(monkeypatch, tmp_path, capsys):
    import hilovit.export

    def fail(*args, **kwargs):
        raise ExportVerificationError("max |onnx - torch| = 1 > 0.0001")

    monkeypatch.setattr(hilovit.export, "export_model", fail)
    assert main(["export", "--model", "litv2_nano", "--output", str(tmp_path / "x.onnx")]) == 1
    assert "verification failed" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_swin_classifier_at_a_size_no_window_or_32_divides(tmp_path, capsys):
    """swin_nano (windows of 7) at 36 x 44: maps of 9x11 and 5x6 tokens padded to the window, fixed in the graph."""
    torch.manual_seed(2)
    trained = create_model("swin_nano", num_classes=4).eval()
    ckpt = tmp_path / "model.safetensors"
    save_safetensors(trained.state_dict(), ckpt, metadata={"model": "swin_nano"})
    out = tmp_path / "swin.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out), "--img-size", "36", "44"]) == 0
    assert "input (1, 3, 36, 44)" in capsys.readouterr().out
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 36, 44]
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        torch.testing.assert_close(_run(out, x), trained(x), atol=1e-4, rtol=0)


class _FixedReshape(torch.nn.Module):
    """Traces a reshape to the example's sizes: the graph cannot run at any other size."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        b, c, h, w = (int(v) for v in x.shape)  # Python numbers: constants in the traced graph
        return (x * self.scale).reshape(b, c * h * w).reshape(b, c, h, w)


def test_a_graph_that_fails_in_onnxruntime_prints_no_log_lines(tmp_path, capfd):
    """onnxruntime logs its own error in colour (ANSI escapes) on stderr, even into a file: kept silent, the
    error is said once, by the exception."""
    capfd.readouterr()
    with pytest.raises(ExportVerificationError, match=r"does not run at input \(1, 3, 12, 10\)"):
        export_onnx(_FixedReshape(), tmp_path / "m.onnx", sizes=[(16, 16), (12, 10)], dynamic_batch=False)
    captured = capfd.readouterr()
    assert "\x1b" not in captured.err and "onnxruntime" not in captured.err, captured.err
    assert not (tmp_path / "m.onnx").exists()


class _Scale(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((1,), value))

    def forward(self, x, y=None):
        return x * self.w if y is None else (x * self.w, y + self.w)


def _pair_spec():
    """A graph with a companion of two inputs (as a detector's network and its RoI heads)."""
    from hilovit.tasks.base import ExportSpec

    g = torch.Generator().manual_seed(0)
    heads = ExportSpec(_Scale(2.0), (torch.randn(3, 4, generator=g), torch.randn(2, 5, generator=g)), ["a", "b"],
                       ["a2", "b2"], {"a": {0: "K"}, "b": {0: "M"}, "a2": {0: "K"}, "b2": {0: "M"}},
                       {"K=1,M=4": (torch.randn(1, 4, generator=g), torch.randn(4, 5, generator=g))}, (4,))
    return ExportSpec(_Scale(3.0), torch.randn(2, 4, generator=g), ["input"], ["out"],
                      {"input": {0: "batch"}, "out": {0: "batch"}}, {1: torch.randn(1, 4, generator=g)}, (4,),
                      ["a note"], {".heads.onnx": heads})


def test_companion_graphs_are_verified_and_written_all_or_none(tmp_path, monkeypatch):
    import hilovit.export as ex

    out = tmp_path / "net.onnx"
    result = ex.export_graph(_pair_spec(), out)
    (heads,) = result.companions
    assert heads.path == tmp_path / "net.heads.onnx" == ex.companion_path(out, ".heads.onnx")
    assert heads.input_names == ("a (K, 4)", "b (M, 5)") and result.input_names == ("input (batch, 4)",)
    assert set(heads.diffs) == {"K=1,M=4"} and heads.max_abs_diff <= 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.heads.onnx", "net.onnx"]
    session = ort.InferenceSession(str(heads.path), providers=["CPUExecutionProvider"])
    a, b = session.run(None, {"a": torch.ones(6, 4).numpy(), "b": torch.ones(1, 5).numpy()})
    assert a.shape == (6, 4) and b.shape == (1, 5) and float(a.max()) == 2.0 and float(b.min()) == 3.0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # both exist: without overwrite refused before anything is traced
    with pytest.raises(ValueError, match="net.onnx' exists"):
        ex.export_graph(_pair_spec(), out)
    (tmp_path / "other.heads.onnx").write_bytes(b"old heads")
    with pytest.raises(ValueError, match="other.heads.onnx' exists"):
        ex.export_graph(_pair_spec(), tmp_path / "other.onnx")
    (tmp_path / "other.heads.onnx").unlink()

    # the companion misses the tolerance: neither file is written, the existing ones are kept as they were
    real_verify = ex.verify_onnx

    def worse_heads(path, module, checks):
        diffs = real_verify(path, module, checks)
        return {k: v + (1.0 if ".heads.onnx" in str(path) else 0.0) for k, v in diffs.items()}

    monkeypatch.setattr(ex, "verify_onnx", worse_heads)
    with pytest.raises(ExportVerificationError, match=r"net.heads.onnx not written"):
        ex.export_graph(_pair_spec(), out, overwrite=True)
    with pytest.raises(ExportVerificationError):
        ex.export_graph(_pair_spec(), tmp_path / "new" / "fresh.onnx")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file, no 'new' folder
    monkeypatch.setattr(ex, "verify_onnx", real_verify)

    # the second rename fails: the first file is put back as it was
    real_replace, seen = ex.os.replace, []

    def failing_replace(src, dst):
        seen.append(str(dst))
        if str(src).endswith(f".net.heads.onnx.tmp-{ex.os.getpid()}"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(ex.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        ex.export_graph(_pair_spec(), out, overwrite=True)
    monkeypatch.setattr(ex.os, "replace", real_replace)
    assert str(out) in seen and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # with overwrite and success both are replaced
    assert ex.export_graph(_pair_spec(), out, overwrite=True).companions[0].path.is_file()


def test_export_puts_every_module_back_in_its_own_mode(tmp_path):
    """A wrapper made for the export starts in training mode; the model inside it stays as it was (a detector
    left in training mode would predict with stochastic depth on)."""
    from hilovit.export import export_graph
    from hilovit.tasks.base import ExportSpec

    inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).eval()
    inner[2].train()
    wrapper = torch.nn.Sequential(inner)
    before = [m.training for m in wrapper.modules()]
    assert before == [True, False, False, False, True]
    spec = ExportSpec(wrapper, torch.randn(2, 4), ["input"], ["out"], {"input": {0: "batch"}, "out": {0: "batch"}},
                      {1: torch.randn(1, 4), 3: torch.randn(3, 4)}, (4,))
    result = export_graph(spec, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-6  # dropout off while tracing and verifying
    assert [m.training for m in wrapper.modules()] == before
