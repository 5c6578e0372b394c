#!/usr/bin/env python3
"""Side-by-side generation speed: plugformer, PyTorch eager (eager.py) and, for Llama,
llama.cpp's llama-bench, on the same weights, in one run. Prints a markdown table.

    run_bench.py gpt2  --build build --work /tmp/genbench
    run_bench.py t5    --build build --work /tmp/genbench --prompt 256 --new 64
    run_bench.py llama --build build --work /tmp/genbench --llama-bench /path/llama-bench \
                       --generator ../shared/bench/make_random_llama.py

gpt2: a random gpt2-small (124M) written by `generation_bench make-gpt2`.
t5: a random t5-small (60M) written by `generation_bench make-t5`; the prompt is encoded, then
the decoder generates (prefill = encoding + first decoder step).
llama: the "small" random Llama (hidden 768, 12 layers, vocab 32000) from the shared generator,
in HF format for plugformer / eager and GGUF (f32, bf16) for llama.cpp; int8 runs against
model-q8_0.gguf where `llama-quantize model-f32.gguf model-q8_0.gguf q8_0` wrote one.
decoder: a random causal LM shaped by --config (configs/*.json: Qwen2.5-0.5B's shape, the small
Llama, the small Llama with Gemma 2's features), written by `generation_bench make-from-config`.

    run_bench.py decoder --config configs/qwen2.5-0.5b-shape.json --build build --work /tmp/genbench
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def llama_cpp(bench, gguf, threads, prompt, new):
    """Best of flash attention on/off for prefill and for decode, as the shared README asks. Decode
    is measured both on an empty context (llama-bench's default, the shared README's figures) and
    after `prompt` cached tokens (-d), where ours is measured: attention then reads the cache too."""
    best = {}
    for fa in ("0", "1"):
        out = subprocess.run([bench, "-m", gguf, "-t", str(threads), "-p", str(prompt), "-n", str(new),
                              "-d", f"0,{prompt}", "-fa", fa, "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        for row in json.loads(out):
            if row["n_prompt"] > 0:
                if row.get("n_depth", 0) == 0:  # prefill from an empty context only
                    best["prefill"] = max(best.get("prefill", 0), row["avg_ts"])
                continue
            key = "decode" if row.get("n_depth", 0) == prompt else "decode_empty"
            best[key] = max(best.get(key, 0), row["avg_ts"])
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=["gpt2", "llama", "t5", "decoder"])
    ap.add_argument("--config", default="", help="decoder: the config file shaping the random model")
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default="/tmp/genbench")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="float32, bfloat16, float16, int8 (weight-only, ours only)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeat", type=int, default=1, help="each side reports the best of R runs per phase")
    ap.add_argument("--llama-bench", default="")
    ap.add_argument("--eager-skip", default="",
                    help="dtype:batch pairs not to run in eager (bf16 eager runs at ~0.6 GFLOP/s on CPUs without "
                         "native bf16, so batch 8 takes tens of minutes), e.g. bfloat16:8")
    ap.add_argument("--generator", default=os.path.join(HERE, "../../../shared/bench/make_random_llama.py"))
    args = ap.parse_args()

    bench = os.path.join(args.build, "bin", "generation_bench")
    model = os.path.join(args.work, args.family)
    if args.family == "decoder":
        model = os.path.join(args.work, os.path.splitext(os.path.basename(args.config))[0])
        if not os.path.exists(os.path.join(model, "config.json")):
            subprocess.run([bench, "make-from-config", args.config, model], check=True)
    elif args.family in ("gpt2", "t5"):
        if not os.path.exists(os.path.join(model, "config.json")):
            subprocess.run([bench, "make-" + args.family, model], check=True)
    else:
        if not os.path.exists(os.path.join(model, "hf", "config.json")):
            subprocess.run([sys.executable, args.generator, "--size", "small", "--out", model, "--hf-dtype",
                            "float32", "--gguf", "f32", "bf16"], check=True)
        model_hf = os.path.join(model, "hf")

    hf_dir = model_hf if args.family == "llama" else model
    rows = []
    for dtype in args.dtypes.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            # "int8": fp32 weights quantized at load (weight-only int8); eager has no such mode.
            weights = ["--dtype", "float32", "--quantize", "int8"] if dtype == "int8" else ["--dtype", dtype]
            common = ["--batch", str(batch), "--prompt", str(args.prompt), "--new", str(args.new),
                      "--threads", str(args.threads), "--repeat", str(args.repeat)]
            ours = run_json([bench, "run", hf_dir] + weights + common)
            skip = dtype == "int8" or f"{dtype}:{batch}" in args.eager_skip.split(",")
            eager = None if skip else run_json(["/usr/bin/python3", os.path.join(HERE, "eager.py"), hf_dir] + weights + common)
            row = {"dtype": dtype, "batch": batch, "ours": ours, "eager": eager}
            # int8 (weight-only, per-row scales) against llama.cpp's Q8_0 (per-32-value scales), when
            # model-q8_0.gguf was made with llama-quantize.
            gguf = os.path.join(model, {"float32": "model-f32.gguf", "bfloat16": "model-bf16.gguf",
                                        "int8": "model-q8_0.gguf"}.get(dtype, ""))
            if args.family == "llama" and args.llama_bench and batch == 1 and os.path.exists(gguf):
                row["llama.cpp"] = llama_cpp(args.llama_bench, gguf, args.threads, args.prompt, args.new)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    name = os.path.basename(model) if args.family == "decoder" else args.family
    print(f"\n{name}: prompt {args.prompt}, {args.new} new tokens, {args.threads} threads, best of {args.repeat}; "
          f"tokens/s (decode counts every row of the batch)\n")
    has_lcpp = any("llama.cpp" in r for r in rows)
    head = "| dtype | batch | prefill ours | prefill eager | ratio | decode ours | decode eager | ratio |"
    if has_lcpp:
        head += (" prefill llama.cpp | decode llama.cpp (same context, empty context) |"
                 " ours / llama.cpp (prefill, decode same context, decode empty context) |")
    head += " decode bound | % of bound | TTFT ms | peak RSS MB | end-to-end speed-up (eager time / ours) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        o, e = r["ours"], r["eager"]
        if e:
            line = (f"| {r['dtype']} | {r['batch']} | {o['prefill_tokens_per_s']:.0f} | {e['prefill_tokens_per_s']:.0f} | "
                    f"{o['prefill_tokens_per_s'] / e['prefill_tokens_per_s']:.2f}x | {o['decode_tokens_per_s']:.1f} | "
                    f"{e['decode_tokens_per_s']:.1f} | {o['decode_tokens_per_s'] / e['decode_tokens_per_s']:.2f}x |")
        else:
            line = (f"| {r['dtype']} | {r['batch']} | {o['prefill_tokens_per_s']:.0f} | not run | | "
                    f"{o['decode_tokens_per_s']:.1f} | not run | |")
        if has_lcpp:
            l = r.get("llama.cpp")
            line += (f" {l['prefill']:.0f} | {l['decode']:.1f}, {l['decode_empty']:.1f} | "
                     f"{o['prefill_tokens_per_s'] / l['prefill']:.2f}x, {o['decode_tokens_per_s'] / l['decode']:.2f}x, "
                     f"{o['decode_tokens_per_s'] / l['decode_empty']:.2f}x |" if l else " | | |")
        bound = o["decode_bound_tokens_per_s"]  # decode steps per second when reading weights is all it costs
        pct = 100 * o["decode_tokens_per_s"] / r["batch"] / bound
        line += f" {bound:.1f} | {pct:.0f}% | {o['ttft_ms']:.0f} | {o['peak_rss_mb']:.0f} |"
        # Wall time of the whole request (prefill, then the new tokens), eager over ours.
        total = lambda x: x["ttft_ms"] + 1e3 * r["batch"] * (args.new - 1) / x["decode_tokens_per_s"]
        line += f" {total(e) / total(o):.2f}x |" if e else " |"
        print(line)
    print(f"\nweights read per token: {rows[0]['ours']['weight_mb_per_token']:.0f} MB (fp32); "
          f"measured read bandwidth {rows[0]['ours']['bandwidth_gbps']:.1f} GB/s")


if __name__ == "__main__":
    main()
