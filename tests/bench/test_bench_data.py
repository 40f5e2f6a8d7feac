"""The data-path benchmark: rows per image size, crop, decoding and worker count, the derived
ratios, the model's training step beside them, the files, the CLI and its errors."""

import csv
import tempfile

import pytest

from hilovit.bench.data import make_jpeg_folder, run_data_benchmark
from hilovit.cli import main


def test_rows_ratios_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "b" / "data"
    result = run_data_benchmark(sizes=[(160, 120)], files_per_size=4, img_size=32, batch=4, batches=2,
                                workers=[0, 1], model="litv2_nano", model_repeats=1, output=str(out), quiet=True)
    rows = result["rows"]
    assert [(r["crop"], r["reduced_decode"], r["workers"]) for r in rows] == [
        (c, d, w) for c in ("train", "eval") for d in ("off", "on") for w in (0, 1)]
    assert all(r["images"] == "160x120 JPEG" for r in rows)
    model_rate = result["model"]["images_per_s"]
    for r in rows:
        assert r["images_per_s"] > 0
        assert r["ms_per_image_per_worker"] == pytest.approx(1e3 * max(r["workers"], 1) / r["images_per_s"])
        assert r["core_share_at_model_speed"] == pytest.approx(model_rate * max(r["workers"], 1) / r["images_per_s"])
        off = next(o for o in rows
                   if (o["crop"], o["workers"], o["reduced_decode"]) == (r["crop"], r["workers"], "off"))
        assert r["speedup_from_reduced_decode"] == pytest.approx(r["images_per_s"] / off["images_per_s"])
    assert result["pipeline"]["images_per_s"] > 0
    assert result["model"]["model"] == "litv2_nano" and model_rate > 0
    with open(out.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = out.with_suffix(".md").read_text()
    assert "litv2_nano training step" in md and "reduced-scale decoding, training crops of 160x120 JPEG" in md
    assert list((tmp_path / "tmp").glob("hilovit-bench-data-*")) == []  # the generated JPEGs are removed


def test_generated_folder_is_photo_like_jpegs(tmp_path):
    from PIL import Image

    root = make_jpeg_folder(tmp_path / "j", (96, 64), 3)
    files = sorted(root.rglob("*.jpg"))
    assert [f.parent.name for f in files] == ["class0", "class0", "class1"]
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (96, 64)


def test_cli_bench_data_on_a_folder_and_its_errors(tmp_path, capsys):
    root = make_jpeg_folder(tmp_path / "mine", (80, 60), 4)
    rc = main(["bench", "data", "--folder", str(root), "--img-size", "32", "--batch", "2", "--batches", "1",
               "--workers", "0", "--model", "none", "--output", str(tmp_path / "d")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| mine " in printed and "images_per_s" in printed
    assert (tmp_path / "d.csv").exists()
    assert main(["bench", "data", "--folder", str(tmp_path / "nowhere"), "--output", ""]) == 2
    assert "--folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "data", "--sizes", "2048by1536"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["bench", "data", "--workers", "-1", "--model", "none", "--output", ""]) == 2
    assert "workers" in capsys.readouterr().err
