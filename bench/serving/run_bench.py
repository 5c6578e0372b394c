#!/usr/bin/env python3
"""Serving benchmark: `plugformer serve` against llama.cpp's `llama-server` on the same weights, side by side
in one run, driven by serve_load.py (K concurrent streamed /v1/completions clients, token-id prompts).

    run_bench.py --model /tmp/small --plugformer build/bin/plugformer --llama-server /tmp/lcpp/bin/llama-server

--model DIR is the output folder of make_random_llama.py: DIR/hf (config.json + model.safetensors, plus the
tokenizer written by gguf_tokenizer.py) for plugformer, DIR/model-f32.gguf and DIR/model-bf16.gguf for
llama-server; --hf / --hf-bf16 / --gguf-f32 / --gguf-bf16 override each. For each dtype both servers are
started (each idles while the other is measured; their CPU time during the other's runs is checked), then for
each K the engines are measured in turn, the order alternating from one K (and round) to the next. Per run:
aggregate generated tok/s, TTFT p50/p99, ITL p50/p99 (serve_load.py), and the server's peak RSS over that run
(VmHWM from /proc/PID/status, reset before the run through /proc/PID/clear_refs), the server's CPU time and
the share of the machine that other work took during the run (each run first waits, --wait-idle, for the
machine to be quiet: it is a shared 2-core machine). Prints markdown tables,
the ratio plugformer / llama-server of tok/s per dtype and K, and the CPU model and its SIMD flags; writes
every row as JSON to --json.

Only loopback traffic: both servers listen on 127.0.0.1 on free ports; every load run is bounded in count
(K x --requests-per-client requests) and time (--run-timeout).
"""
import argparse
import collections
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"fp32": ("float32", "f32"), "bf16": ("bfloat16", "bf16")}  # name -> (plugformer --dtype, GGUF suffix)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_model():
    """'model name' (+ family / model numbers: "AMD EPYC" alone does not tell Zen 3 from Zen 4), SIMD flags, CPUs."""
    info, flags = {}, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    name = info.get("model name", "unknown")
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return name, [f for f in SIMD_FLAGS if f in flags], os.cpu_count()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def http_post(url, body, timeout=300):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])  # kB (Threads: a count)
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def machine_busy_seconds():
    """CPU seconds all CPUs spent busy (user, nice, system, irq, softirq, steal) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def own_and_children_cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # children: reaped ones (the load generator)


def foreign_cores(servers, seconds):
    """Cores busy over `seconds` with work other than these servers and this script."""
    b0, o0, s0 = machine_busy_seconds(), own_and_children_cpu(), sum(cpu_seconds(s.proc.pid) for s in servers if s.alive())
    time.sleep(seconds)
    b1, o1, s1 = machine_busy_seconds(), own_and_children_cpu(), sum(cpu_seconds(s.proc.pid) for s in servers if s.alive())
    return max(0.0, (b1 - b0) - (o1 - o0) - (s1 - s0)) / seconds


def wait_idle(servers, max_wait, threshold):
    """Waits up to max_wait seconds for the machine to be quiet (other work under `threshold` cores)."""
    if max_wait <= 0:
        return 0.0
    t0 = time.monotonic()
    busy = foreign_cores(servers, 2)
    if busy < threshold:
        return busy
    print(f"#   machine busy ({busy:.2f} cores of other work): waiting up to {max_wait:.0f} s", flush=True)
    while time.monotonic() - t0 < max_wait:
        busy = foreign_cores(servers, 5)
        if busy < threshold:
            print(f"#   quiet after {time.monotonic() - t0:.0f} s", flush=True)
            return busy
    print(f"#   still busy ({busy:.2f} cores) after {max_wait:.0f} s: measuring anyway (see 'other CPU %')", flush=True)
    return busy


def reset_peak_rss(pid):
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Server:
    def __init__(self, engine, dtype, cmd, log_path, ready_timeout):
        self.engine, self.dtype, self.cmd, self.log_path = engine, dtype, cmd, log_path
        self.port = int(cmd[cmd.index("--port") + 1])
        self.base = f"http://127.0.0.1:{self.port}"
        print(f"# start {engine} {dtype}: {' '.join(cmd)}", flush=True)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{engine} exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                if http_get(self.base + "/health", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - t0 > ready_timeout:
                self.stop()
                raise RuntimeError(f"{engine} not ready after {ready_timeout} s:\n{self.tail()}")
            time.sleep(0.25)
        self.ready_s = time.monotonic() - t0
        self.model = "m"
        try:  # a server that checks the model name gets the one it lists
            data = json.loads(http_get(self.base + "/v1/models")[1])
            if data.get("data"):
                self.model = data["data"][0]["id"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        print(f"#   ready in {self.ready_s:.1f} s on port {self.port}, model id {self.model!r}, "
              f"RSS {proc_status(self.proc.pid).get('VmRSS', 0) / 1024:.0f} MB", flush=True)

    def tail(self, n=30):
        self.log.flush()
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self, when):
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            what = f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit code {rc}"
            raise RuntimeError(f"{self.engine} died {when}: {what}\n{self.tail(10)}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


LOAD_RUNS = collections.defaultdict(itertools.count)


def load(args, server, k, requests_per_client, max_tokens):
    # Fresh prompts for every run of a server (llama-server keeps earlier prompts' KV, per slot and in
    # its host prompt cache --cache-ram, and would skip the prefill of a repeated prompt); the engines
    # make the same sequence of runs, so the n-th run of each sends the same prompts.
    cmd = [sys.executable, os.path.join(HERE, "serve_load.py"), server.base, str(k),
           "--requests-per-client", str(requests_per_client), "--prompt-tokens", str(args.prompt_tokens),
           "--max-tokens", str(max_tokens), "--model", server.model, "--seed-base", str(100000 * next(LOAD_RUNS[server.engine]))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"serve_load.py failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args, server, others, k):
    pid = server.proc.pid
    wait_idle([server] + others, args.wait_idle, args.idle_threshold)
    reset = reset_peak_rss(pid)
    cpu0 = cpu_seconds(pid)
    others0 = {o.engine: cpu_seconds(o.proc.pid) for o in others if o.alive()}
    busy0, own0, t0 = machine_busy_seconds(), own_and_children_cpu(), time.monotonic()
    row = load(args, server, k, args.requests_per_client, args.max_tokens)
    busy, own, wall = machine_busy_seconds() - busy0, own_and_children_cpu() - own0, time.monotonic() - t0
    server.check_alive("during the run")
    if row["generated_tokens"] == 0:
        raise RuntimeError(f"no token generated ({row['errors']} HTTP errors):\n{server.tail(10)}")
    st = proc_status(pid)
    row.update(engine=server.engine, dtype=server.dtype, peak_rss_mb=round(st["VmHWM"] / 1024, 1),
               rss_anon_mb=round(st.get("RssAnon", 0) / 1024, 1), rss_file_mb=round(st.get("RssFile", 0) / 1024, 1),
               peak_rss_reset=reset, server_cpu_s=round(cpu_seconds(pid) - cpu0, 2),
               idle_others_cpu_s={e: round(cpu_seconds(o.proc.pid) - others0[e], 2)
                                  for e, o in ((o.engine, o) for o in others) if e in others0},
               loadgen_cpu_s=round(own, 2))
    # CPU time of everything else on the machine during the run (another build, another session's work)
    foreign = busy - row["server_cpu_s"] - sum(row["idle_others_cpu_s"].values()) - own
    row["other_cpu_pct"] = round(max(0.0, 100 * foreign / (wall * (os.cpu_count() or 1))), 1)
    expected = k * args.requests_per_client * args.max_tokens
    if row["generated_tokens"] != expected:
        row["note"] = f"generated {row['generated_tokens']} of {expected} tokens"
    return row


def first_tokens_check(servers, prompt_tokens, n=16):
    """Greedy text of one token-id prompt on each server (same weights: equal text is a sign of agreement)."""
    rnd = random.Random(12345)
    prompt = [rnd.randrange(10, 30000) for _ in range(prompt_tokens)]
    texts = {}
    for s in servers:
        try:
            r = http_post(s.base + "/v1/completions", {"model": s.model, "prompt": prompt, "max_tokens": n,
                                                       "temperature": 0, "ignore_eos": True})
            texts[s.engine] = r["choices"][0]["text"]
        except Exception as e:  # informative only
            texts[s.engine] = f"<error: {e}>"
    return texts


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.1f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/tmp/small", help="make_random_llama.py output folder")
    ap.add_argument("--hf", help="HF folder for plugformer (default MODEL/hf)")
    ap.add_argument("--hf-bf16", help="HF folder for plugformer in bf16 (default: --hf, converted at load)")
    ap.add_argument("--gguf-f32", help="default MODEL/model-f32.gguf")
    ap.add_argument("--gguf-bf16", help="default MODEL/model-bf16.gguf")
    ap.add_argument("--engines", default="plugformer,llama", help="comma list of plugformer, llama")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--concurrency", default="1,4,8,16", help="K values: concurrent clients")
    ap.add_argument("--rounds", type=int, default=1, help="runs per engine, dtype and K; the median tok/s row is kept")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--max-num-seqs", type=int, default=8, help="plugformer --max-num-seqs and llama-server -np")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ctx", type=int, default=16384, help="llama-server -c (total over its -np slots)")
    ap.add_argument("--plugformer", default="build/bin/plugformer")
    ap.add_argument("--plugformer-args", default="", help="extra arguments for plugformer serve (space-separated)")
    ap.add_argument("--llama-server", default="/tmp/lcpp/bin/llama-server")
    ap.add_argument("--llama-fa", default="off,on",
                    help="llama-server -fa setting(s), comma list of off/on/auto; each is measured as its own engine "
                         "and the ratio is taken against the faster one per dtype and K (llama-bench's single-sequence "
                         "F32 decode is faster with off, ../shared/bench/README.md; batched serving here was faster "
                         "with on)")
    ap.add_argument("--llama-args", default="", help="extra arguments for llama-server (space-separated)")
    ap.add_argument("--work", default="/tmp/servebench", help="server logs")
    ap.add_argument("--json", default="", help="write every row here (default WORK/results.json)")
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--run-timeout", type=float, default=1800, help="seconds for one load run")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--wait-idle", type=float, default=300,
                    help="before each run, wait up to this many seconds for other work on the machine to stop "
                         "(a shared 2-core machine: a compile beside llama-server's spinning threads cuts its tok/s "
                         "by up to 10x); 0: do not wait")
    ap.add_argument("--idle-threshold", type=float, default=0.15, help="cores of other work that count as idle")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    ks = [int(k) for k in args.concurrency.split(",")]
    for e in engines:
        if e not in ("plugformer", "llama"):
            ap.error(f"unknown engine {e!r}")
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}")
    hf = args.hf or os.path.join(args.model, "hf")
    paths = {"fp32": (hf, args.gguf_f32 or os.path.join(args.model, "model-f32.gguf")),
             "bf16": (args.hf_bf16 or hf, args.gguf_bf16 or os.path.join(args.model, "model-bf16.gguf"))}
    for d in dtypes:
        if "plugformer" in engines and not os.path.exists(os.path.join(paths[d][0], "config.json")):
            ap.error(f"no {paths[d][0]}/config.json")
        if "llama" in engines and not os.path.exists(paths[d][1]):
            ap.error(f"no {paths[d][1]}")
    if "plugformer" in engines and not os.access(args.plugformer, os.X_OK):
        ap.error(f"{args.plugformer} is not an executable (build plugformer, or --engines llama)")
    if "llama" in engines and not os.access(args.llama_server, os.X_OK):
        ap.error(f"{args.llama_server} is not an executable (see README.md, or --engines plugformer)")
    for d in dtypes:
        if "plugformer" in engines and not os.path.exists(os.path.join(paths[d][0], "tokenizer.json")):
            print(f"# warning: {paths[d][0]} has no tokenizer.json: a server that streams no text gives no TTFT/ITL "
                  f"(write one: gguf_tokenizer.py {paths[d][1]} {paths[d][0]})", flush=True)
    os.makedirs(args.work, exist_ok=True)
    json_path = args.json or os.path.join(args.work, "results.json")

    name, flags, ncpu = cpu_model()
    commit = ""
    if "llama" in engines:  # "version: 0.5.0-dev (build 1, commit de3ff81)" or "version: 1 (de3ff81)"
        try:
            v = subprocess.run([args.llama_server, "--version"], capture_output=True, text=True, timeout=60)
            for line in (v.stdout + v.stderr).splitlines():
                if line.startswith("version:"):
                    commit = line.split("(", 1)[-1].rstrip(")").split("commit")[-1].strip(" ,")
        except (OSError, subprocess.TimeoutExpired):
            pass
    print(f"# CPU: {name} ({ncpu} logical CPUs); flags: {' '.join(flags)}", flush=True)

    def commands(dtype, hf_dir, gguf):
        out = []
        if "plugformer" in engines:
            out.append(("plugformer", [args.plugformer, "serve", hf_dir, "--port", str(free_port()),
                                       "--max-num-seqs", str(args.max_num_seqs), "--dtype", DTYPES[dtype][0]]
                        + args.plugformer_args.split()))
        if "llama" in engines:
            for fa in args.llama_fa.split(","):
                out.append((f"llama-server (fa {fa})" if "," in args.llama_fa else "llama-server",
                            [args.llama_server, "-m", gguf, "-t", str(args.threads), "-np", str(args.max_num_seqs),
                             "-c", str(args.ctx), "-fa", fa, "--host", "127.0.0.1", "--port", str(free_port())]
                            + args.llama_args.split()))
        return out

    rows, checks, failures = [], {}, []
    for dtype in dtypes:
        hf_dir, gguf = paths[dtype]
        servers = []
        try:
            for engine, cmd in commands(dtype, hf_dir, gguf):
                log = os.path.join(args.work, f"{engine.split()[0]}-{dtype}{'-fa' + cmd[cmd.index('-fa') + 1] if '(fa' in engine else ''}.log")
                try:
                    servers.append(Server(engine, dtype, cmd, log, args.ready_timeout))
                except RuntimeError as e:
                    failures.append(f"{engine} {dtype}: {e}")
                    print(f"# FAILED {engine} {dtype}: {e}", flush=True)
            if not servers:
                continue
            if not args.no_warmup:
                for s in servers:  # first-request costs (page faults on the weights, lazy init) out of the runs
                    try:
                        warm = load(args, s, 1, 1, 8)
                        s.check_alive("on the warm-up request")
                        if warm["generated_tokens"] == 0:
                            raise RuntimeError(f"no token generated ({warm['errors']} HTTP errors)")
                    except Exception as e:
                        failures.append(f"{s.engine} {dtype} warm-up: {e}")
                        print(f"# warm-up FAILED {s.engine} {dtype}: {e}", flush=True)
            if sum(s.alive() for s in servers) > 1:
                checks[dtype] = first_tokens_check(servers, args.prompt_tokens)
            turn = 0
            for k in ks:
                for rnd in range(args.rounds):
                    order = servers if turn % 2 == 0 else servers[::-1]
                    turn += 1
                    for s in order:
                        if not s.alive():
                            if not any(f.startswith(f"{s.engine} {dtype}") and "died" in f for f in failures):
                                try:
                                    s.check_alive(f"before K={k}")
                                except RuntimeError as e:
                                    failures.append(f"{s.engine} {dtype}: {e}")
                                    print(f"# FAILED {s.engine} {dtype}: {e}", flush=True)
                            continue
                        try:
                            row = measure(args, s, [o for o in servers if o is not s], k)
                        except Exception as e:
                            failures.append(f"{s.engine} {dtype} K={k}: {e}")
                            print(f"# FAILED {s.engine} {dtype} K={k}: {e}", flush=True)
                            continue
                        row["round"] = rnd
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            for s in servers:
                s.stop()

    # median tok/s row per (engine, dtype, K)
    kept = {}
    for key in sorted({(r["engine"], r["dtype"], r["concurrency"]) for r in rows}):
        group = sorted((r for r in rows if (r["engine"], r["dtype"], r["concurrency"]) == key),
                       key=lambda r: r["tok_per_s"])
        kept[key] = group[(len(group) - 1) // 2]
    with open(json_path, "w") as f:
        json.dump({"cpu": name, "flags": flags, "cpus": ncpu, "llama_cpp_commit": commit, "args": vars(args),
                   "rows": rows, "first_tokens": checks, "failures": failures}, f, indent=1)

    print()
    print(f"CPU: {name}, {ncpu} logical CPUs, {' '.join(flags)}")
    print(f"Load: serve_load.py, {args.prompt_tokens}-token prompts (token ids), {args.max_tokens} new tokens, "
          f"streamed, temperature 0, ignore_eos, {args.requests_per_client} requests per client; "
          f"plugformer --max-num-seqs {args.max_num_seqs}; llama-server -t {args.threads} -np {args.max_num_seqs} "
          f"-c {args.ctx} -fa {args.llama_fa}{' (llama.cpp ' + commit + ')' if commit else ''}"
          f"{'; median of ' + str(args.rounds) + ' rounds' if args.rounds > 1 else ''}.")
    print()
    print("| dtype | K | engine | tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | peak RSS MB | server CPU s "
          "| other CPU % | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for k in ks:
            for (e, d, kk), r in kept.items():
                if d == dtype and kk == k:
                    print(f"| {d} | {k} | {e} | {fmt(r['tok_per_s'])} | {fmt(r['ttft_p50_ms'])} | {fmt(r['ttft_p99_ms'])} | "
                          f"{fmt(r['itl_p50_ms'])} | {fmt(r['itl_p99_ms'])} | {fmt(r['peak_rss_mb'])} | "
                          f"{fmt(r['server_cpu_s'])} | {fmt(r['other_cpu_pct'])} | {r['errors']}{' (' + r['note'] + ')' if r.get('note') else ''} |")
    pf = {(d, k): r["tok_per_s"] for (e, d, k), r in kept.items() if e == "plugformer"}
    lc = {}
    for (e, d, k), r in kept.items():
        if e.startswith("llama-server"):
            lc[(d, k)] = max(lc.get((d, k), 0), r["tok_per_s"])
    if pf and lc:
        print()
        print("| dtype | K | plugformer tok/s | llama-server tok/s (best -fa) | plugformer / llama-server |")
        print("|---|---|---|---|---|")
        for dtype in dtypes:
            for k in ks:
                if (dtype, k) in pf and (dtype, k) in lc:
                    ratio = pf[(dtype, k)] / lc[(dtype, k)] if lc[(dtype, k)] else float("nan")
                    print(f"| {dtype} | {k} | {fmt(pf[(dtype, k)])} | {fmt(lc[(dtype, k)])} | {ratio:.2f} |")
    idle = [f"{r['engine']} {r['dtype']} K={r['concurrency']}: {o} used {c} CPU s while idle"
            for r in rows for o, c in r.get("idle_others_cpu_s", {}).items() if c > 0.05 * max(r["wall_s"], 1)]
    if idle:
        print("\nIdle servers that were not idle (their CPU time competed with the measured one):")
        for line in idle:
            print("  " + line)
    noisy = [r for r in kept.values() if r["other_cpu_pct"] > 10]
    if noisy:
        print("\nOther work used > 10% of the machine during: " + ", ".join(
            f"{r['engine']} {r['dtype']} K={r['concurrency']} ({r['other_cpu_pct']}%)" for r in noisy)
              + " -- re-run those on a quiet machine.")
    for dtype, texts in checks.items():
        print(f"\nGreedy 16 tokens of one prompt, {dtype}: " + "; ".join(f"{e}: {t!r}" for e, t in texts.items()))
    if failures:
        print("\nFailures:")
        for f in failures:
            print("  " + f.splitlines()[0])
    print(f"\nrows: {json_path}; server logs: {args.work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
