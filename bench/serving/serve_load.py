#!/usr/bin/python3
# Copied from ../shared/bench/serve_load.py (the project's shared load generator) so that bench/serving
# works from a fresh clone where ../shared is absent. One addition: --seed-base, so that run_bench.py never
# sends a prompt twice (llama-server's prompt cache answers a repeated prompt's prefill from memory).
"""Load generator for an OpenAI-compatible /v1/completions endpoint (streamed), for side-by-side serving runs.

usage: serve_load.py BASE_URL CONCURRENCY [--requests-per-client N] [--prompt-tokens P] [--max-tokens M] [--model NAME]
                    [--seed-base B]
Each client sends N streamed requests one after another; prompts are distinct token-id lists (P ids, seeded),
temperature 0, ignore_eos where the server knows it. Prints one JSON line: aggregate generated tokens/s over the
wall time, TTFT and inter-token latency percentiles (ms). Counts generated tokens from the stream's chunks
(one token per chunk where the server streams per token) and, when given, from usage.completion_tokens.
"""
import argparse, http.client, json, random, statistics, sys, threading, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("base"); ap.add_argument("k", type=int)
ap.add_argument("--requests-per-client", type=int, default=3)
ap.add_argument("--prompt-tokens", type=int, default=32)
ap.add_argument("--max-tokens", type=int, default=64)
ap.add_argument("--model", default="m")
ap.add_argument("--seed-base", type=int, default=0, help="request j of client i uses prompt seed B + 1000 i + j")
a = ap.parse_args()
u = urllib.parse.urlparse(a.base)
ttft, itl, tokens, errors = [], [], [0], [0]
lock = threading.Lock()

def one(seed):
    rnd = random.Random(seed)
    prompt = [rnd.randrange(10, 30000) for _ in range(a.prompt_tokens)]
    body = {"model": a.model, "prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.perf_counter(); first = None; last = None; n = 0; usage = None; gaps = []
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        with lock: errors[0] += 1
        return
    buf = b""
    while True:
        line = r.readline()
        if not line: break
        line = line.strip()
        if not line.startswith(b"data:"): continue
        p = line[5:].strip()
        if p == b"[DONE]": break
        d = json.loads(p)
        if d.get("usage"): usage = d["usage"].get("completion_tokens")
        if d.get("choices") and d["choices"][0].get("text"):
            now = time.perf_counter(); n += 1
            if first is None: first = now
            else: gaps.append(now - last)
            last = now
    c.close()
    with lock:
        tokens[0] += usage if usage else n
        if first: ttft.append(first - t0)
        itl.extend(gaps)

def client(i):
    for j in range(a.requests_per_client): one(a.seed_base + 1000 * i + j)

t0 = time.perf_counter()
ts = [threading.Thread(target=client, args=(i,)) for i in range(a.k)]
[t.start() for t in ts]; [t.join() for t in ts]
wall = time.perf_counter() - t0
pct = lambda xs, q: round(1e3 * sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None
print(json.dumps({"concurrency": a.k, "requests": a.k * a.requests_per_client, "errors": errors[0], "generated_tokens": tokens[0],
                  "wall_s": round(wall, 2), "tok_per_s": round(tokens[0] / wall, 1), "ttft_p50_ms": pct(ttft, .5), "ttft_p99_ms": pct(ttft, .99),
                  "itl_p50_ms": pct(itl, .5), "itl_p99_ms": pct(itl, .99)}))
