"""The segmentation benchmark: its rows, ratios and growths follow from the timings, files, skipped bfloat16, CLI."""

import csv
import importlib

import pytest
import torch

from hilovit.bench import seg as seg_bench
from hilovit.bench.seg import COLUMNS, parse_size, run_seg_benchmark
from hilovit.cli import build_parser, main


def test_parse_size():
    assert parse_size(512) == (512, 512)
    assert parse_size("2048x512") == (512, 2048)  # W x H, as the ADE20K test scale is written
    assert parse_size("96") == (96, 96)
    assert parse_size((40, 60)) == (40, 60)
    # the default sizes, as (H, W): the ADE20K test scale 2048x512 is 512 rows of 2048 pixels
    assert seg_bench.DEFAULT_SIZES == ((512, 512), (1024, 1024), parse_size("2048x512"))
    for bad in ("2048x", "ax5", 0, (3, 0), "1x2x3"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_rows_ratios_growth_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(seg_bench, "bf16_skip_reason", lambda device: "skipped: no native bfloat16 (test)")
    out = tmp_path / "b" / "seg"
    result = run_seg_benchmark(model="semfpn_litv2_nano", baseline="semfpn_litv2_nano", sizes=[32, "64x32"],
                               dtypes=["float32", "bfloat16"], num_classes=5, repeats=1, warmup=0, output=str(out),
                               quiet=True, matmul_n=32, memory=False)
    rows = result["rows"]
    assert [(r["img_size"], r["dtype"]) for r in rows] == [
        ("32x32", "float32"), ("32x32", "bfloat16"), ("64x32", "float32"), ("64x32", "bfloat16")]
    timed = [r for r in rows if r["status"] == "timed"]
    assert len(timed) == 2 and all(r["status"].startswith("skipped") for r in rows if r["dtype"] == "bfloat16")
    for r in timed:
        assert r["speed_ratio"] == pytest.approx(r["baseline_ms"] / r["model_ms"])
        assert r["model_counted_gmacs"] == pytest.approx(r["baseline_counted_gmacs"])  # same architecture
        assert r["model_official_gflops"] > 0 and r["model_peak_memory_MB"] != r["model_peak_memory_MB"]  # NaN
        share = 2 * r["model_counted_gmacs"] / (r["model_ms"] / 1e3) / r["fp32_matmul_gflops"]
        assert r["model_share_of_fp32_matmul"] == pytest.approx(share)
    first, second = timed
    assert first["pixel_growth"] == 1.0 and second["pixel_growth"] == 2.0
    for role in ("model", "baseline"):
        growth = second[f"{role}_ms"] / first[f"{role}_ms"]
        assert second[f"{role}_time_growth"] == pytest.approx(growth)
        assert second[f"{role}_growth_per_pixel"] == pytest.approx(growth / 2.0)
    # the official count of the model at the larger size, from the library's formula
    from hilovit import create_model

    assert second["model_official_gflops"] == pytest.approx(
        create_model("semfpn_litv2_nano", num_classes=5).flops((32, 64)) / 1e9)

    with open(out.with_suffix(".csv")) as f:
        read = list(csv.DictReader(f))
    assert list(read[0].keys()) == COLUMNS
    for r in read:
        if r["status"] == "timed":
            assert float(r["speed_ratio"]) == pytest.approx(float(r["baseline_ms"]) / float(r["model_ms"]))
        else:
            assert r["model_ms"] == "" and "no native bfloat16" in r["status"]
    md = out.with_suffix(".md").read_text()
    assert "speed_ratio = baseline_ms / model_ms" in md and "64x32 bfloat16: skipped" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]


def test_bf16_skip_reason_follows_the_native_check(monkeypatch):
    ev = importlib.import_module("hilovit.runtime")

    monkeypatch.setattr(ev, "native_bf16", lambda device="cpu": False)
    assert "no native bfloat16" in seg_bench.bf16_skip_reason(torch.device("cpu"))
    monkeypatch.setattr(ev, "native_bf16", lambda device="cpu": True)
    assert seg_bench.bf16_skip_reason(torch.device("cpu")) is None
    assert seg_bench.bf16_skip_reason(torch.device("cuda")) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        run_seg_benchmark(repeats=0, output=None)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        run_seg_benchmark(dtypes=["float8"], output=None)


def test_cli_bench_seg(tmp_path, capsys):
    assert build_parser().parse_args(["bench", "seg"]).output == "runs/bench/seg"
    rc = main(["bench", "seg", "--model", "semfpn_litv2_nano", "--baseline", "semfpn_litv2_nano", "--sizes", "32",
               "--dtype", "float32", "--num-classes", "3", "--repeats", "1", "--warmup", "0", "--matmul-n", "32",
               "--output", str(tmp_path / "s"), "--no-plot"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "speed_ratio" in printed and "wrote csv" in printed
    assert (tmp_path / "s.csv").exists() and not (tmp_path / "s.png").exists()
    with open(tmp_path / "s.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["model_peak_memory_MB"]) > 0 and float(row["baseline_peak_memory_MB"]) > 0
    assert main(["bench", "seg", "--quick", "--sizes", "32", "--output", ""]) == 2
    assert "--quick and --sizes" in capsys.readouterr().err
