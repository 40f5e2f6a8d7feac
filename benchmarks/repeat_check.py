"""Run-to-run stability of the attention benchmark: run it again and compare every ratio it prints.

``make bench`` writes ``benchmarks/attention.csv`` first; this script then runs the same
``hilovit bench attention`` command a second time (a fresh process, the other benchmarks in
between) and compares, row by row, the ratios the benchmark reports: the share of the matmul rate,
the speed-up over the naive HiLo in float32, and HiLo's speed against each other mechanism in the
same dtype. A ratio agrees when the two runs are within ``--tolerance`` (10%) of each other.

    python benchmarks/repeat_check.py --first benchmarks/attention.csv --output benchmarks/attention_repeat \\
        -- --repeats 10 --dtype float32,bfloat16

Writes ``OUTPUT.csv`` and ``OUTPUT.md`` (``hilovit.bench.common.write_table``) and prints the summary; exits 0
whether or not every ratio agrees (the files say which did not).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from hilovit.bench.common import write_table

ROOT = Path(__file__).resolve().parents[1]
RATIO_COLUMNS = ("share_of_fp32_matmul", "speedup_vs_naive_fp32")


def read_rows(path: Path) -> Dict[Tuple[str, str, str], dict]:
    with open(path, newline="") as f:
        return {(r["tokens"], r["mechanism"], r["dtype"]): r for r in csv.DictReader(f)}


def ratios(rows: Dict[Tuple[str, str, str], dict]) -> Dict[Tuple[str, str, str, str], float]:
    """Every ratio the attention benchmark reports, keyed ``(tokens, mechanism, dtype, ratio name)``."""
    out: Dict[Tuple[str, str, str, str], float] = {}
    for (tokens, mech, dtype), r in rows.items():
        for col in RATIO_COLUMNS:
            if r.get(col):
                out[(tokens, mech, dtype, col)] = float(r[col])
        hilo = rows.get((tokens, "HiLo", dtype))
        if hilo is not None and mech != "HiLo":
            out[(tokens, mech, dtype, "HiLo speed / this")] = float(hilo["images_per_s"]) / float(r["images_per_s"])
    return out


def compare(first: Dict, second: Dict, tolerance: float) -> List[dict]:
    missing = sorted(set(first) ^ set(second))
    if missing:
        raise SystemExit(f"repeat_check: the two runs report different ratios: {missing[:4]}")
    table = []
    for key in sorted(first):
        a, b = first[key], second[key]
        change = b / a - 1.0
        table.append({"tokens": key[0], "mechanism": key[1], "dtype": key[2], "ratio": key[3],
                      "first": round(a, 4), "second": round(b, 4), "change": round(change, 4),
                      "agrees": abs(change) <= tolerance})
    return table


def write(table: Sequence[dict], output: Path, command: str, tolerance: float) -> str:
    agree = sum(r["agrees"] for r in table)
    summary = f"{agree} of {len(table)} ratios agree within {tolerance:.0%} between the two runs"
    worst = max(table, key=lambda r: abs(r["change"]))
    summary += (f"; largest change {worst['change']:+.1%} ({worst['mechanism']}, {worst['dtype']}, "
                f"{worst['ratio']})")
    write_table(table, output, "Attention benchmark, run twice", command, notes=[summary])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", required=True, help="the first run's attention CSV")
    p.add_argument("--output", required=True, help="OUTPUT.csv and OUTPUT.md")
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("bench_args", nargs="*", help="after --: the arguments the first run was made with")
    args = p.parse_args(argv)
    first_path = Path(args.first)
    if not first_path.is_file():
        p.error(f"--first: no such file {first_path}")
    if not 0 < args.tolerance < 1:
        p.error(f"--tolerance must be between 0 and 1, got {args.tolerance}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "hilovit", "bench", "attention", *args.bench_args,
               "--output", str(Path(tmp) / "attention"), "--no-plot"]
        print("second run:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        second = read_rows(Path(tmp) / "attention.csv")
    table = compare(ratios(read_rows(first_path)), ratios(second), args.tolerance)
    command = "python benchmarks/repeat_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(write(table, Path(args.output), command, args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
