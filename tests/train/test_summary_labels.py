"""The closing summary labels top-k truthfully (top-min(5, K)) and tells a stopped run how to continue."""

from hilovit.train import format_summary

BASE = {"model": "litv2_nano", "dataset": "tiny", "eval_split": "test", "eval_images": 6, "epochs": 1, "steps": 3,
        "train_images_per_second": 10.0, "wall_seconds": 2.0, "test_top1": 50.0, "test_top5": 100.0,
        "test_loss": 0.7}


def test_top_k_label_follows_the_class_count():
    three = format_summary({**BASE, "test_topk": 3, "test_top1_ema": 40.0, "test_top5_ema": 90.0})
    assert "top-3 100.00%" in three and "EMA weights: top-1 40.00%  top-3 90.00%" in three
    assert "top-5" not in three
    assert "top-5 100.00%" in format_summary({**BASE, "test_topk": 5})


def test_a_stopped_run_says_the_command_that_continues_it():
    stopped = format_summary({**BASE, "finished": False, "epochs_planned": 4,
                              "files": {"last": "runs/my run/last.pt"}})
    assert stopped.splitlines()[0] == ("stopped after epoch 1 of 4; continue with: hilovit train --resume "
                                       "--output 'runs/my run'")
    from_config = format_summary({**BASE, "finished": False, "epochs_planned": 4, "config": {"output": "runs/x"}})
    assert "continue with: hilovit train --resume --output runs/x" in from_config
    assert "continue with" not in format_summary({**BASE, "finished": True})


def test_training_on_three_classes_prints_top_3(tmp_path, capsys):
    from PIL import Image

    from hilovit.train import print_summary, train

    folder = tmp_path / "three"
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 200, 30)), ("c", (30, 30, 200))):
        (folder / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (28, 28), tuple(v + 10 * i for v in colour)).save(folder / c / f"{i}.png")
    summary = train(model="litv2_nano", data=str(folder), val_split=0.5, epochs=1, batch_size=4, progress="log",
                    threads=1, output=str(tmp_path / "run"), img_size=32)
    print_summary(summary)
    out = capsys.readouterr().out
    assert summary["test_topk"] == 3
    assert "epoch 1/1: train loss" in out and "top-3 100.00%" in out and "top-5" not in out
