#!/usr/bin/env python3
"""Side-by-side encoder speed: plugformer's BertModel and PyTorch eager (eager_bert.py) on the
same random bert-base weights, in one run. Prints a markdown table with GFLOP/s against the
sgemm peak measured in the same run. The two sides take turns for --rounds rounds (each the best
of --repeat forwards): on a shared machine the speed drifts by tens of percent within minutes,
so the speed-up is the median of the rounds' ratios, with their range.

    run_bench.py --build build --work /tmp/encbench [--shapes 8x128,1x16] [--dtypes float32,bfloat16] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default="/tmp/encbench")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--shapes", default="8x128,1x16")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eager-skip", default="", help="dtype:BxS pairs not to run in eager, e.g. bfloat16:8x128")
    args = ap.parse_args()
    bench = os.path.join(args.build, "bin", "encoder_bench")
    model = os.path.join(args.work, "bert-base")
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([bench, "make-bert", model], check=True)
    rows = []
    for dtype in args.dtypes.split(","):
        for shape in args.shapes.split(","):
            batch, seq = shape.split("x")
            common = ["--dtype", dtype, "--batch", batch, "--seq", seq, "--threads", str(args.threads),
                      "--repeat", str(args.repeat)]
            skip = f"{dtype}:{shape}" in args.eager_skip.split(",")
            ours, eager = [], []
            for _ in range(args.rounds):
                ours.append(run_json([bench, "run", model] + common))
                if not skip:
                    eager.append(run_json(["/usr/bin/python3", os.path.join(HERE, "eager_bert.py"), model] + common))
                print(json.dumps({"ours": ours[-1], "eager": eager[-1] if eager else None}), file=sys.stderr)
            rows.append((dtype, shape, ours, eager))
    peak = max(r["sgemm_peak_gflops"] for row in rows for r in row[2])
    print(f"\nbert-base encoder (110M, random weights), {args.threads} threads, {args.rounds} rounds taking turns, "
          f"each the best of {args.repeat}; sgemm peak measured in the same run: {peak:.0f} GFLOP/s\n")
    print("| dtype | batch x seq | ours ms | eager ms | speed-up (median, range) | ours GFLOP/s | % of sgemm peak | eager GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, shape, ours, eager in rows:
        o = min(ours, key=lambda r: r["ms"])
        e = min(eager, key=lambda r: r["ms"]) if eager else None
        eager_ms = f"{e['ms']:.1f}" if e else "not run"
        ratios = sorted(er["ms"] / orr["ms"] for orr, er in zip(ours, eager))
        ratio = f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})" if e else ""
        eager_gf = f"{e['gflops']:.0f}" if e else ""
        print(f"| {dtype} | {shape} | {o['ms']:.1f} | {eager_ms} | {ratio} | {o['gflops']:.0f} | "
              f"{100 * o['gflops'] / peak:.0f}% | {eager_gf} |")


if __name__ == "__main__":
    main()
