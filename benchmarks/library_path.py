"""The speed a library user gets (``import hilovit; model(x)``), now and at an earlier revision.

Each configuration runs in its own process (the allocator setting is per process and cannot be
undone), and every process times the models *interleaved with* the float32 2048x2048 matrix
product, so each row's share of the machine's matmul rate is a ratio measured under the same load.
The configurations alternate over ``--rounds`` so a slow spell of the machine hits them alike.

    python benchmarks/library_path.py --before 7800cd4 --output benchmarks/library_path

Configurations (``--before`` adds the first two; the revision is checked out into a temporary
git worktree that is removed at the end):
  before, library        the earlier revision, plain ``import hilovit; model(x)``
  before, tuned          the earlier revision with ``hilovit.runtime.tune_allocator()`` (what its CLI did)
  now, library           this tree, plain ``import hilovit; model(x)`` (no call first; the first model
                         built tunes the allocator)
  now, opted out         this tree with ``HILOVIT_NO_MALLOPT=1`` (glibc's default allocator)

The training step is forward, cross-entropy, backward and torch's fused AdamW (what ``hilovit
train`` builds), the same in every configuration.

Writes ``OUTPUT.csv`` and ``OUTPUT.md`` (temporary file + rename). FLOPs are each model's official
count (``model.flops``), 2 FLOPs per multiply-add; training rows count 3x the forward.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- one process
def _worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    import hilovit

    if args.tune:
        from hilovit.runtime import tune_allocator

        tune_allocator()
    torch.manual_seed(0)
    n = args.matmul_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    fns, flops = {"matmul": lambda: torch.mm(a, b)}, {"matmul": 2.0 * n**3}
    for name in args.models.split(","):
        model = hilovit.create_model(name).eval()
        macs = float(model.flops(args.img_size) if _takes_size(model.flops) else model.flops())

        def infer(model=model):
            with torch.inference_mode():
                model(x)

        fns[f"{name} infer"], flops[f"{name} infer"] = infer, 2.0 * macs * args.batch
        if args.train:
            tmodel = hilovit.create_model(name).train()
            opt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, fused=True)
            target = torch.randint(0, tmodel.num_classes, (args.batch,))

            def step(tmodel=tmodel, opt=opt, target=target):
                loss = F.cross_entropy(tmodel(x), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            fns[f"{name} train"], flops[f"{name} train"] = step, 6.0 * macs * args.batch
    times = {k: [] for k in fns}
    for r in range(args.warmup + args.repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = flops["matmul"] / med["matmul"]
    out = {k: {"seconds": med[k], "share": flops[k] / med[k] / rate} for k in fns if k != "matmul"}
    out["matmul_gflops"] = rate / 1e9
    from hilovit import runtime

    out["allocator_tuned"] = bool(getattr(runtime, "_done", False))
    print("RESULT " + json.dumps(out), flush=True)


def _takes_size(fn) -> bool:
    import inspect

    return len(inspect.signature(fn).parameters) > 0


# ----------------------------------------------------------------------------- the driver
def _run(label: str, src: Path, env_extra: dict, tune: bool, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HILOVIT_NO_MALLOPT", "PYTHONPATH")}
    env.update(env_extra, PYTHONPATH=str(src))
    cmd = [sys.executable, __file__, "--worker", "--models", args.models, "--batch", str(args.batch),
           "--img-size", str(args.img_size), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--matmul-n", str(args.matmul_n)]
    cmd += ["--tune"] if tune else []
    cmd += ["--train"] if args.train else []
    print(f"[library_path] {label} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"library_path: the run '{label}' failed:\n{done.stderr[-3000:]}")
    line = [s for s in done.stdout.splitlines() if s.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="litv2_s,swin_t")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=2, help="runs of each configuration, alternating")
    p.add_argument("--train", action="store_true", help="also time a training step (forward, loss, backward, AdamW)")
    p.add_argument("--before", help="an earlier git revision to time beside this tree")
    p.add_argument("--output", help="OUTPUT.csv and OUTPUT.md (default: print only)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tune", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    configs = []
    tmp = None
    if args.before:
        tmp = Path(tempfile.mkdtemp(prefix="hilovit-before-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tmp / "tree"), args.before],
                       check=True)
        old = tmp / "tree" / "src"
        configs += [(f"before ({args.before}), library", old, {}, False),
                    (f"before ({args.before}), tuned as its CLI", old, {}, True)]
    configs += [("now, library", ROOT / "src", {}, False),
                ("now, opted out (HILOVIT_NO_MALLOPT=1)", ROOT / "src", {"HILOVIT_NO_MALLOPT": "1"}, False)]
    results = {c[0]: [] for c in configs}
    try:
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            for label, src, env, tune in order:
                results[label].append(_run(label, src, env, tune, args))
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "tree")], check=False)

    models = args.models.split(",")
    kinds = ["infer"] + (["train"] if args.train else [])
    rows = []
    for label, runs in results.items():
        for kind in kinds:
            row = {"configuration": label, "kind": kind, "allocator tuned": runs[0]["allocator_tuned"],
                   "matmul GFLOP/s": statistics.mean(r["matmul_gflops"] for r in runs)}
            for m in models:
                row[f"{m} s/batch"] = statistics.mean(r[f"{m} {kind}"]["seconds"] for r in runs)
                row[f"{m} share"] = statistics.mean(r[f"{m} {kind}"]["share"] for r in runs)
            if len(models) == 2:
                row[f"{models[0]}/{models[1]} speed"] = row[f"{models[1]} s/batch"] / row[f"{models[0]} s/batch"]
            rows.append(row)
    cols = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    cmd = "python benchmarks/library_path.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"`{cmd}` — batch {args.batch}, {args.img_size}x{args.img_size}, float32, {args.threads} threads, "
          f"{args.rounds} alternating runs per configuration; share = model FLOP/s over the fp32 "
          f"{args.matmul_n}^2 matmul rate timed in the same process.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        md.append("| " + " | ".join(f"{v:.1%}" if k.endswith("share") else f"{v:.3g}" if isinstance(v, float)
                                    else str(v) for k, v in row.items()) + " |")
    print("\n".join(md))
    if args.output:
        _atomic_write(Path(args.output + ".csv"), buf.getvalue())
        _atomic_write(Path(args.output + ".md"), "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
