"""benchmarks/repeat_check.py: the ratios of two attention runs, compared row by row."""

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("repeat_check", ROOT / "benchmarks" / "repeat_check.py")
repeat_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repeat_check)

FIELDS = ["tokens", "mechanism", "dtype", "images_per_s", "share_of_fp32_matmul", "speedup_vs_naive_fp32"]


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(dict(zip(FIELDS, r)))
    return path


def test_ratios_are_compared_row_by_row_and_drifts_beyond_the_tolerance_named(tmp_path):
    first = _csv(tmp_path / "a.csv", [("14x14", "MSA", "float32", 100, 0.9, 0.5),
                                       ("14x14", "HiLo", "float32", 200, 0.95, 1.0),
                                       ("14x14", "HiLo", "bfloat16", 400, 1.9, 2.0)])
    # MSA slower by 15% in the second run: HiLo's speed against it moves from 2.00x to 2.35x
    second = _csv(tmp_path / "b.csv", [("14x14", "MSA", "float32", 85, 0.93, 0.52),
                                        ("14x14", "HiLo", "float32", 200, 0.95, 1.0),
                                        ("14x14", "HiLo", "bfloat16", 380, 1.8, 1.9)])
    a = repeat_check.ratios(repeat_check.read_rows(first))
    assert a[("14x14", "MSA", "float32", "HiLo speed / this")] == pytest.approx(2.0)
    assert ("14x14", "HiLo", "float32", "HiLo speed / this") not in a  # no ratio of HiLo to itself
    table = repeat_check.compare(a, repeat_check.ratios(repeat_check.read_rows(second)), 0.10)
    by = {(r["mechanism"], r["dtype"], r["ratio"]): r for r in table}
    assert not by[("MSA", "float32", "HiLo speed / this")]["agrees"]
    assert by[("MSA", "float32", "HiLo speed / this")]["change"] == pytest.approx(200 / 85 / 2 - 1, abs=1e-4)
    assert by[("HiLo", "bfloat16", "speedup_vs_naive_fp32")]["agrees"]  # -5%
    assert sum(not r["agrees"] for r in table) == 1
    summary = repeat_check.write(table, tmp_path / "out", "cmd", 0.10)
    assert summary.startswith(f"{len(table) - 1} of {len(table)} ratios agree within 10%")
    assert "largest change +17.6% (MSA, float32, HiLo speed / this)" in summary
    with open(tmp_path / "out.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(table)
    assert summary in (tmp_path / "out.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "out.csv", "out.md"]  # no temporaries


def test_runs_with_different_rows_are_refused(tmp_path):
    first = _csv(tmp_path / "a.csv", [("14x14", "HiLo", "float32", 200, 0.95, 1.0)])
    second = _csv(tmp_path / "b.csv", [("14x14", "HiLo", "bfloat16", 200, 0.95, 1.0)])
    with pytest.raises(SystemExit, match="different ratios"):
        repeat_check.compare(repeat_check.ratios(repeat_check.read_rows(first)),
                             repeat_check.ratios(repeat_check.read_rows(second)), 0.1)


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        repeat_check.main(["--first", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o")])
    assert "no such file" in capsys.readouterr().err
    first = _csv(tmp_path / "a.csv", [("14x14", "HiLo", "float32", 200, 0.95, 1.0)])
    with pytest.raises(SystemExit):
        repeat_check.main(["--first", str(first), "--output", str(tmp_path / "o"), "--tolerance", "5"])
    assert "--tolerance" in capsys.readouterr().err
