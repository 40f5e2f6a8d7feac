"""The options of ``hilovit train``, one function per group (run, optimisation, fine-tuning, classification,
segmentation, detection, hardware). Options not given stay unset (the train parser's ``argument_default``
is ``argparse.SUPPRESS``), so a recipe, a checkpoint or a resumed run keeps its own value."""

from __future__ import annotations

import argparse

from hilovit.cli_support import device_name, float_pair, int_pair, non_negative_int
from hilovit.tasks import TASK_NAMES

__all__ = ["add_train_options", "add_finetune_options"]


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every option group of ``hilovit train``, in the order ``--help`` shows them."""
    _run_options(parser)
    _optimisation_options(parser)
    add_finetune_options(parser)
    _classification_options(parser)
    _segmentation_options(parser)
    _detection_options(parser)
    _hardware_options(parser)


def _run_options(parser: argparse.ArgumentParser) -> None:
    """What to train on which data, where to write, how long; the run's own options."""
    g = parser.add_argument_group("run")
    g.add_argument("--task", choices=TASK_NAMES, help=f"{', '.join(TASK_NAMES)} (default: from the recipe, the "
                   "resumed run or the model)")
    g.add_argument("--config", default=None, help="recipe: a YAML file or a packaged recipe name (fashion-mnist, "
                   "fashion-scenes, fashion-scenes-det)")
    g.add_argument("--model", help="registered model name (default litv2_nano; semfpn_litv2_s for segmentation)")
    g.add_argument("--data", help="the embedded data (fashion-mnist; fashion-scenes for segmentation) or a folder")
    g.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (default: HILOVIT_DATA_DIR, then "
                   "/usr/share/datasets/fashion-mnist)")
    g.add_argument("--output", help="output folder (default runs/train; runs/seg for segmentation)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="samples per optimiser step, all processes together")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    g.add_argument("--overwrite", action="store_true", help="start afresh even if --output holds a run")
    g.add_argument("--stop-at-epoch", type=int, help="end after this epoch (schedule still planned for --epochs)")
    g.add_argument("--seed", type=int)
    g.add_argument("--train-subset", type=int, metavar="N", help="use the first N training samples")
    g.add_argument("--eval-subset", type=int, metavar="N", help="evaluate on the first N evaluation samples")
    g.add_argument("--val-split", type=float, help="hold out this fraction of the training data for evaluation")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")


def _optimisation_options(parser: argparse.ArgumentParser) -> None:
    """The optimiser, its schedule and regularisation, shared by every task."""
    g = parser.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help="learning rate itself (classification default: --base-lr * batch / 512; "
                   "segmentation 1e-4)")
    g.add_argument("--min-lr", type=float, help="final rate of the schedule (classification: for a batch of 512)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--clip-grad", type=float, help="max gradient norm (0: off; classification default 5)")
    g.add_argument("--accum-steps", type=int, help="split each step's batch into this many micro-batches")
    g.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the model's)")
    g.add_argument("--model-ema", action="store_true", help="keep and evaluate an EMA of the weights")
    g.add_argument("--model-ema-decay", type=float)


def _classification_options(parser: argparse.ArgumentParser) -> None:
    """Classification: the linearly scaled rate, warm-up, mixing, sizes and augmentation."""
    g = parser.add_argument_group("classification")
    g.add_argument("--base-lr", type=float, help="learning rate for a batch of 512, scaled linearly (5e-4)")
    g.add_argument("--warmup-lr", type=float, help="initial warm-up rate for a batch of 512 (5e-7)")
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--optimizer", choices=["adamw", "sgd"])
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--mixup", type=float, help="Mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="CutMix alpha (0: off)")
    g.add_argument("--mixup-prob", type=float)
    g.add_argument("--img-size", type=int, help="model input side (default: the model's, 28 for the nano models)")
    g.add_argument("--in-chans", type=int, help="model input channels (default: the data's)")
    g.add_argument("--no-augment", action="store_true", help="no random augmentation at all")
    g.add_argument("--no-crop", dest="crop", action="store_false", help="no random resized crop")
    g.add_argument("--crop-scale", type=float_pair, metavar="LO,HI", help="area range of the random crop (0.6,1)")
    g.add_argument("--no-hflip", dest="hflip", action="store_false", help="no horizontal flips")
    g.add_argument("--rand-augment", action="store_true", help="RandAugment (2 operations)")
    g.add_argument("--rand-augment-m", type=int, help="RandAugment magnitude (9)")
    g.add_argument("--random-erasing", type=float, metavar="P", help="probability of random erasing")


def _segmentation_options(parser: argparse.ArgumentParser) -> None:
    """Segmentation: classes, poly schedule, crops, rescaling, photometric distortion, pictures."""
    g = parser.add_argument_group("segmentation")
    g.add_argument("--num-classes", type=int, help="classes of a mask folder (required there)")
    g.add_argument("--poly-power", type=float, help="power of the poly schedule (0.9)")
    g.add_argument("--warmup-iters", type=int, help="linear warm-up steps (0)")
    g.add_argument("--crop-size", type=int_pair, metavar="H,W", help="training crop (512)")
    g.add_argument("--img-scale", type=int_pair, metavar="LONG,SHORT",
                   help="bound of the random rescale (4 x crop, crop)")
    g.add_argument("--ratio-range", type=float_pair, metavar="LO,HI",
                   help="random rescale ratios (segmentation 0.5,2.0; detection: none)")
    g.add_argument("--eval-scale", type=int_pair, metavar="LONG,SHORT",
                   help="rescale before inference (default: --img-scale)")
    g.add_argument("--no-photometric", dest="photometric", action="store_false", help="no photometric distortion")
    g.add_argument("--predictions", type=int, help="test samples drawn in predictions.png (4; 0: none)")


def _detection_options(parser: argparse.ArgumentParser) -> None:
    """Detection: the training resize, flips and the step schedule."""
    g = parser.add_argument_group("detection (also --warmup-iters, --eval-scale, --predictions)")
    g.add_argument("--train-scale", type=int_pair, metavar="LONG,SHORT",
                   help="keep-ratio resize of the training images (1333,800)")
    g.add_argument("--flip-prob", type=float, help="probability of a horizontal flip (0.5)")
    g.add_argument("--step-epochs", type=lambda t: [int(v) for v in t.split(",") if v.strip()], metavar="E1,E2",
                   help="epochs after which the rate is multiplied by --gamma (8/12 and 11/12 of the run)")
    g.add_argument("--gamma", type=float, help="the factor of each step (0.1)")


def _hardware_options(parser: argparse.ArgumentParser) -> None:
    """Devices, precision, threads and workers, compilation, evaluation and progress reporting."""
    g = parser.add_argument_group("hardware")
    g.add_argument("--device", type=device_name, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast: auto = bfloat16 on a CPU with native bfloat16 (else float32), "
                   "float16 with a gradient scaler on CUDA")
    g.add_argument("--threads", type=int, help="CPU threads per process")
    g.add_argument("--workers", type=int, help="DataLoader workers")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute blocks in backward (less memory)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step after a few timed eager steps; reports the compile "
                   "time and the speed-up")
    g.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm over processes")
    g.add_argument("--eval-interval", type=int, help="evaluate every N epochs (and after the last)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--progress", choices=["auto", "bar", "log", "off"],
                   help="auto: a bar on a terminal, log lines otherwise")
    g.add_argument("--log-interval", type=int, help="steps between log lines")


def _layer_decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_finetune_options(parser: argparse.ArgumentParser) -> None:
    """``hilovit train``'s fine-tuning options (unset when not given, so a recipe keeps its own)."""
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--pretrained", "--initial-checkpoint", dest="pretrained", metavar="NAME|PATH|URL",
                   help="start from these weights: a model with published weights (litv2_s, NAME.TAG; sets --model), "
                   "a weights file or training output folder, an http(s) URL or hf-hub:org/name; the head is "
                   "re-initialised for the data's classes. Ignored with --resume")
    g.add_argument("--layer-decay", type=_layer_decay, metavar="D",
                   help="layer-wise learning-rate decay: layer i of L blocks trains at lr * D**(L+1-i) (default off)")
    g.add_argument("--freeze-backbone-epochs", type=non_negative_int, metavar="N",
                   help="train only the classifier head for the first N epochs")
    g.add_argument("--log-tensorboard", action="store_true",
                   help="also write TensorBoard scalars into OUTPUT/tensorboard (pip install 'hilovit[tensorboard]')")
