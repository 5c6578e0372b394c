#!/usr/bin/env python3
"""Tensor-parallel decode speed and per-rank memory (issue 27).

Runs `plugformer generate` on the random small Llama of ../shared/bench/make_random_llama.py
(--model DIR is its hf/ folder) three ways, side by side in one run:
  1 process x 1 thread, 1 process x 2 threads, 2 ranks x 1 thread (torchrun-style variables).
Decode tokens/s = (new tokens of the long run - 1) / (wall time of the long run - wall time of a
1-token run), so loading and the prefill cancel out; the median of --repeats runs. Peak RSS per
process comes from GNU time (%M); the ranks' "collectives took" log line gives the time spent in
all-reduce / all-gather / broadcast and its share of the generation.

Needs only the standard library; prints a markdown table.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_ranks(cli, model, ids, new_tokens, world, threads):
    """Runs `world` ranks (1: a plain process); returns (wall s, [per-process peak RSS KiB], [log lines], ids)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PLUGFORMER_LOG_LEVEL="info", PLUGFORMER_PLUGIN_PATH="")
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = ["/usr/bin/time", "-f", "peak_rss_kib=%M", cli, "generate", model, "--ids", ids, "--json",
               "--max-new-tokens", str(new_tokens)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    start = time.monotonic()
    outs = [p.communicate(timeout=900) for p in procs]
    wall = time.monotonic() - start
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"rank failed ({p.returncode}):\n{err}")
    rss = [int(re.search(r"peak_rss_kib=(\d+)", err).group(1)) for _, err in outs]
    logs = [line for _, err in outs for line in err.splitlines() if "collectives took" in line]
    generated = json.loads(outs[0][0])["generated_ids"]
    return wall, rss, logs, generated


def measure(cli, model, ids, new_tokens, world, threads, repeats):
    rates, rss, shares, per_token = [], [], [], []
    run_ranks(cli, model, ids, 1, world, threads)  # warm-up: the weights in the page cache
    for _ in range(repeats):
        short, _, _, _ = run_ranks(cli, model, ids, 1, world, threads)
        long, peak, logs, generated = run_ranks(cli, model, ids, new_tokens, world, threads)
        if len(generated) != new_tokens:
            raise SystemExit(f"generation stopped early ({len(generated)} tokens): pick other --ids")
        rates.append((new_tokens - 1) / (long - short))
        rss.append(max(peak))
        for line in logs:
            m = re.search(r"generate took ([\d.]+) s, (\d+) collectives took ([\d.]+) s", line)
            took, seconds = float(m.group(1)), float(m.group(3))
            shares.append(seconds / took)
            per_token.append(seconds / new_tokens * 1e3)
    return {
        "tok_s": statistics.median(rates),
        "rss_mib": statistics.median(rss) / 1024,
        "share": statistics.median(shares) if shares else None,
        "ms_per_token": statistics.median(per_token) if per_token else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default="build/bin/plugformer")
    ap.add_argument("--model", default="/tmp/small/hf", help="make_random_llama.py --size small output's hf/ folder")
    ap.add_argument("--floor-model", default="models/stories260K", help="a tiny model: the runtime's own memory")
    ap.add_argument("--ids", default="1,450,4996,17354,1701,432,17204,975")
    ap.add_argument("--new-tokens", type=int, default=129)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags")
                    for f in l.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")})
    print(f"CPU: {cpu} ({' '.join(flags)}), {os.cpu_count()} logical CPUs; model {args.model}; "
          f"{args.new_tokens} new tokens, median of {args.repeats}\n")
    rows = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 ranks x 1 thread", 2, 1)]
    # What a process holds whatever the model: libtorch and the ~290 libraries Debian's build loads,
    # the op registry; measured on the 260K-parameter model shipped in models/.
    floor = run_ranks(args.cli, args.floor_model, "1,450", 8, 1, 1)[1][0] / 1024
    results = {name: measure(args.cli, args.model, args.ids, args.new_tokens, w, t, args.repeats) for name, w, t in rows}
    base2, base1 = results["1 process x 2 threads"], results["1 process x 1 thread"]
    print("| setup | decode tok/s | vs 1x2 threads | vs 1x1 thread | peak RSS per process (MiB) | RSS vs one process "
          "| RSS above the runtime floor vs one process | collectives per token (ms) | share of generate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in rows:
        r = results[name]
        coll = "-" if r["ms_per_token"] is None else f"{r['ms_per_token']:.2f}"
        share = "-" if r["share"] is None else f"{100 * r['share']:.1f}%"
        print(f"| {name} | {r['tok_s']:.1f} | {r['tok_s'] / base2['tok_s']:.2f}x | {r['tok_s'] / base1['tok_s']:.2f}x "
              f"| {r['rss_mib']:.0f} | {r['rss_mib'] / base2['rss_mib']:.2f}x "
              f"| {(r['rss_mib'] - floor) / (base2['rss_mib'] - floor):.2f}x | {coll} | {share} |")
    print(f"\nRuntime floor (peak RSS of one process on {args.floor_model}): {floor:.0f} MiB")


if __name__ == "__main__":
    main()
