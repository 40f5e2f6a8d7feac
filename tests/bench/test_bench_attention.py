"""The attention benchmark: its naive baseline is the same function, and its results files are complete."""

import csv

import pytest
import torch

from hilovit import HiLo
from hilovit.bench.attention import MECHANISMS, NaiveHiLo, run_attention_benchmark
from hilovit.bench.common import interleaved_timings, peak_memory_bytes
from hilovit.cli import main


@pytest.mark.parametrize("heads,ws,alpha", [(12, 2, 0.9), (4, 2, 0.5), (4, 1, 0.5), (4, 2, 0.0), (4, 2, 1.0)])
def test_naive_hilo_is_the_same_function(heads, ws, alpha):
    torch.manual_seed(0)
    fast = HiLo(48, heads, qkv_bias=True, window_size=ws, alpha=alpha).eval()
    naive = NaiveHiLo(48, heads, qkv_bias=True, window_size=ws, alpha=alpha).eval()
    naive.load_state_dict(fast.state_dict())
    x = torch.randn(2, 8, 12, 48)
    with torch.no_grad():
        torch.testing.assert_close(naive(x), fast(x), atol=1e-5, rtol=1e-5)
    assert naive.flops(8, 12) == fast.flops(8, 12)


def test_benchmark_rows_and_files(tmp_path):
    out = tmp_path / "bench" / "attention"
    result = run_attention_benchmark(
        sizes=[14], dtypes=["float32", "bfloat16"], batch=2, dim=64, num_heads=4, repeats=1, warmup=0,
        output=str(out), quiet=True, matmul_n=256,  # bfloat16 products are emulated (slow) on CPUs without them
    )
    rows = result["rows"]
    assert len(rows) == 2 * len(MECHANISMS)
    assert {r["mechanism"] for r in rows} == {m.name for m in MECHANISMS}
    for r in rows:
        assert r["images_per_s"] > 0 and r["peak_memory_MB"] > 0
        # the banded HiLo also executes its few masked cross-window products
        assert abs(r["counted_flops_M"] - r["flops_M"]) <= 0.1 * r["flops_M"]
        # the share is of the reference products timed in the same rounds, reported with the result
        assert r["share_of_fp32_matmul"] == pytest.approx(r["gflops_per_s"] / result["matmul_gflops"])
    naive = next(r for r in rows if r["mechanism"] == "HiLo (naive)" and r["dtype"] == "float32")
    assert naive["speedup_vs_naive_fp32"] == pytest.approx(1.0)
    msa = next(r for r in rows if r["mechanism"] == "MSA" and r["dtype"] == "float32")
    assert msa["flops_M"] == pytest.approx(msa["counted_flops_M"])
    with open(out.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = out.with_suffix(".md").read_text()
    assert "fp32 matrix-multiply rate" in md and "HiLo (naive)" in md
    assert out.with_suffix(".png").stat().st_size > 1000
    assert any("paper, CPU: 2.04x" in line for line in result["summary"])


def test_cli_bench_attention(tmp_path, capsys):
    rc = main(["bench", "attention", "--dim", "32", "--heads", "4", "--batch", "1", "--sizes", "8",
               "--repeats", "1", "--warmup", "0", "--dtype", "float32", "--mechanisms", "HiLo,HiLo (naive),MSA",
               "--output", str(tmp_path / "a"), "--no-plot"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "HiLo float32 is" in printed and "x HiLo (naive)" in printed
    assert (tmp_path / "a.csv").exists() and not (tmp_path / "a.png").exists()


def test_cli_reports_bad_options(capsys):
    assert main(["bench", "attention", "--dtype", "float8", "--output", ""]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err
    assert main(["bench", "attention", "--mechanisms", "Nope", "--output", ""]) == 2
    assert "no mechanism matches" in capsys.readouterr().err
    # one unknown name among known ones is named too, not dropped (a name with a comma splits in two)
    assert main(["bench", "attention", "--mechanisms", "HiLo,Shifted window (7, shift 3)", "--output", ""]) == 2
    err = capsys.readouterr().err
    assert "['Shifted window (7', 'shift 3)']" in err
    # the choices offered name the mechanisms and their families (the text after the unknown names)
    choices = err.split("choose names or families from:")[1]
    assert "Shifted window (7, shift 3)" in choices and "Shifted window," in choices and "HiLo," in choices


def test_interleaved_timings_visit_rows_in_rounds():
    order = []
    times = interleaved_timings({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert all(len(v) == 3 for v in times.values())


def test_peak_memory_sees_what_is_allocated_and_freed():
    def work():
        a = torch.empty(1_000_000)  # 4 MB alive ...
        b = torch.empty(500_000)  # ... plus 2 MB
        del a, b
        return torch.empty(250_000)  # 1 MB returned

    peak = peak_memory_bytes(work)
    assert 6_000_000 <= peak < 6_100_000


def test_peak_memory_does_not_count_views_of_existing_tensors():
    weight = torch.randn(1000, 1000)  # 4 MB that exist before the call
    x = torch.randn(10, 1000)

    def work():
        wt = weight.t()  # a view: no new memory
        same = weight.to(torch.float32)  # the tensor itself
        y = torch.nn.functional.linear(x, weight)  # 40 KB output (its transpose of the weight is a view)
        return wt, same, y.mul_(2)  # in place: nothing new

    peak = peak_memory_bytes(work)
    assert 40_000 <= peak < 100_000, peak


def test_rows_and_reference_report_their_fastest_run(monkeypatch):
    """Each row's speed and the reference rate come from the fastest of the timed runs (a busy moment of a
    shared machine only adds time), so one slow round moves neither the rows nor the shares."""
    import hilovit.bench.attention as attention

    def fake_timings(fns, repeats, warmup, device, progress):
        # row i takes (i + 1) ms, with one round 3x slower; the reference takes 1 ms at best
        return {name: [(i + 1) * 1e-3 * f for f in (1.0, 3.0, 1.2)] for i, name in enumerate(fns)}

    monkeypatch.setattr(attention, "interleaved_timings", fake_timings)
    result = run_attention_benchmark(sizes=[8], dtypes=["float32"], batch=2, dim=32, num_heads=4, repeats=3,
                                     warmup=0, output=None, quiet=True, matmul_n=64,
                                     mechanisms=["HiLo", "HiLo (naive)"])
    assert result["matmul_gflops"] == pytest.approx(2 * 64**3 / 1e-3 / 1e9)
    ms = {r["mechanism"]: r["ms_per_batch"] for r in result["rows"]}
    assert ms == pytest.approx({"HiLo (naive)": 2.0, "HiLo": 3.0})  # the fastest run, not the median (2.4, 3.6)
    assert "the fastest of 3 interleaved runs" in "\n".join(result["notes"])
