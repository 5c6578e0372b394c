#!/usr/bin/env python3
"""Side-by-side encoder speed: plugformer's BertModel and PyTorch eager (eager_bert.py) on the
same random bert-base weights, in one run. Prints a markdown table with GFLOP/s against the
sgemm peak measured in the same run.

    run_bench.py --build build --work /tmp/encbench [--shapes 8x128,1x16] [--dtypes float32,bfloat16]
"""
import argparse
import json
import os
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
            ours = run_json([bench, "run", model] + common)
            skip = f"{dtype}:{shape}" in args.eager_skip.split(",")
            eager = None if skip else run_json(["/usr/bin/python3", os.path.join(HERE, "eager_bert.py"), model] + common)
            rows.append((dtype, shape, ours, eager))
            print(json.dumps({"ours": ours, "eager": eager}), file=sys.stderr)
    peak = max(r[2]["sgemm_peak_gflops"] for r in rows)
    print(f"\nbert-base encoder (110M, random weights), {args.threads} threads, best of {args.repeat}; "
          f"sgemm peak measured in the same run: {peak:.0f} GFLOP/s\n")
    print("| dtype | batch x seq | ours ms | eager ms | speed-up | ours GFLOP/s | % of sgemm peak | eager GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, shape, o, e in rows:
        eager_ms = f"{e['ms']:.1f}" if e else "not run"
        ratio = f"{e['ms'] / o['ms']:.2f}x" if e else ""
        eager_gf = f"{e['gflops']:.0f}" if e else ""
        print(f"| {dtype} | {shape} | {o['ms']:.1f} | {eager_ms} | {ratio} | {o['gflops']:.0f} | "
              f"{100 * o['gflops'] / peak:.0f}% | {eager_gf} |")


if __name__ == "__main__":
    main()
