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
