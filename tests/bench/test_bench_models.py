"""The model benchmark: rows for every model, dtype and mode, the matmul reference, files, and the CLI."""

import csv

import pytest

from hilovit.bench.models import resolve_models, run_models_benchmark
from hilovit.cli import main


def test_resolve_models():
    assert resolve_models(["swin_tiny_patch4_window7_224"]) == ["swin_t"]
    assert {"swin_t", "swin_nano", "swin_l_384"} <= set(resolve_models(["swin_*"]))
    assert resolve_models(None)[0] == "swin_t"
    with pytest.raises(ValueError, match="matches no registered model"):
        resolve_models(["vit_huge"])


def test_benchmark_rows_sweep_and_files(tmp_path):
    out = tmp_path / "bench" / "models"
    result = run_models_benchmark(
        models=["swin_nano"], batch=2, img_size=28, dtypes=["float32", "bfloat16"], train=True, sweep=[28, 36],
        repeats=1, warmup=0, output=str(out), quiet=True, matmul_n=128,
    )
    rows = result["rows"]
    assert [(r["mode"], r["dtype"]) for r in rows] == [
        ("inference", "float32"), ("inference", "bfloat16"), ("train", "float32"), ("train", "bfloat16")]
    for r in rows:
        assert r["images_per_s"] > 0 and r["peak_memory_MB"] > 0 and r["share_of_fp32_matmul"] > 0
        assert r["params_M"] == pytest.approx(1.270516)
        assert r["counted_flops_G"] <= r["flops_G"]  # the norms are not matrix products
    assert rows[1]["speedup_vs_first_dtype"] == pytest.approx(rows[0]["images_per_s"] and
                                                              rows[1]["images_per_s"] / rows[0]["images_per_s"])
    assert set(result["matmul_gflops"]) == {"float32", "bfloat16"}
    sweep = result["sweep_rows"]
    assert [r["img_size"] for r in sweep] == [28, 36] and sweep[0]["time_growth"] == 1.0
    with open(out.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = out.with_suffix(".md").read_text()
    assert "matrix-multiply rate" in md and "swin_nano inference: float32 at" in md
    assert (tmp_path / "bench" / "models_sweep.csv").exists()
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_bench_models(tmp_path, capsys):
    rc = main(["bench", "models", "--models", "swin_nano", "--batch", "1", "--img-size", "28", "--dtype", "float32",
               "--repeats", "1", "--warmup", "0", "--output", str(tmp_path / "m"), "--no-plot"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "swin_nano" in printed and "share_of_fp32_matmul" in printed
    assert (tmp_path / "m.csv").exists() and not (tmp_path / "m.png").exists()
    assert main(["bench", "models", "--models", "nope*", "--output", ""]) == 2


def test_op_time_breakdown_sorts_ops_by_kind():
    import torch
    import torch.nn.functional as F

    from hilovit.bench.models import OP_KINDS, interleaved_breakdown, op_time_breakdown

    a, x = torch.randn(256, 256), torch.randn(4096, 64)
    w = torch.ones(64)
    parts = op_time_breakdown(lambda: (torch.mm(a, a), F.layer_norm(x, (64,), w, w), torch.exp(x)))
    assert set(parts) == set(OP_KINDS) | {"other", "total"}
    assert parts["linear layers"] > 0 and parts["norms"] > 0 and parts["other"] > 0
    assert parts["fused attention"] == parts["convolutions"] == parts["attention products"] == 0
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    med = interleaved_breakdown({"mm": lambda: torch.mm(a, a), "bmm": lambda: torch.bmm(a[None], a[None])}, runs=2)
    assert med["mm"]["linear layers"] > 0 and med["mm"]["attention products"] == 0
    assert med["bmm"]["attention products"] > 0 and med["bmm"]["linear layers"] == 0
    with pytest.raises(ValueError, match="runs"):
        interleaved_breakdown({"mm": lambda: None}, runs=0)


def test_cli_bench_models_breakdown(tmp_path, capsys):
    """Windows (short key sequences) are attended by two batched products in both dtypes, not by
    PyTorch's fused attention kernel: the breakdown must file them under 'attention products'."""
    rc = main(["bench", "models", "--models", "swin_nano", "--batch", "2", "--img-size", "56", "--repeats", "1",
               "--warmup", "0", "--breakdown", "--output", str(tmp_path / "m"), "--no-plot",
               "--matmul-n", "256"])  # bfloat16 products are emulated (slow) on CPUs without them
    assert rc == 0
    printed = capsys.readouterr().out
    assert "linear layers" in printed and "bfloat16 vs float32 by kind" in printed
    with open(tmp_path / "m_breakdown.csv") as f:
        rows = {(r["dtype"], r["kind"]): float(r["ms_per_batch"]) for r in csv.DictReader(f)}
    assert rows[("float32", "fused attention")] == 0 and rows[("float32", "attention products")] > 0
    assert rows[("bfloat16", "fused attention")] == 0 and rows[("bfloat16", "attention products")] > 0
    assert rows[("float32", "linear layers")] > 0 and rows[("bfloat16", "linear layers")] > 0
    assert "whole call" in (tmp_path / "m_breakdown.md").read_text()
