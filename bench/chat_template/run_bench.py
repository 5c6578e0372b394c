"""Chat-template benchmark: plugformer's C++ engine (chat_template_bench) against Python jinja2 in
transformers' environment (jinja2_reference.py), on the same template, conversation and template folder.
Checks that both render the same text, then prints a markdown table. See README.md.

Usage (from the repository root): /usr/bin/python3 bench/chat_template/run_bench.py [--binary build/bin/chat_template_bench]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = "tests/fixtures/chat_templates"


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout


def main():
    ap = argparse.ArgumentParser()
    # CMAKE_RUNTIME_OUTPUT_DIRECTORY is <build>/bin for every target, benches included.
    ap.add_argument("--binary", default="build/bin/chat_template_bench")
    ap.add_argument("--python", default="/usr/bin/python3", help="the interpreter with jinja2")
    ap.add_argument("--template", default=f"{FIXTURES}/meta-llama-Llama-3.1-8B-Instruct/template.jinja")
    ap.add_argument("--conversation", default=str(HERE / "conversation.json"))
    ap.add_argument("--templates-dir", default=FIXTURES)
    ap.add_argument("--iterations", type=int, default=10000, help="renders timed on the C++ side")
    ap.add_argument("--py-iterations", type=int, default=1000, help="renders timed on the Python side")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of both sides in turn; each ratio is of one round (a VM's speed drifts between "
                         "rounds), the table shows the round of the median render ratio")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                    help="the core both sides run on (a VM's cores can differ in speed for minutes: "
                         "side by side means on the same one); -1 leaves placement to the scheduler")
    args = ap.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})  # the two sides are child processes: they inherit it

    common = ["--template", args.template, "--conversation", args.conversation, "--templates-dir", args.templates_dir]
    ours = [args.binary] + common
    theirs = [args.python, str(HERE / "jinja2_reference.py")] + common

    # Same text first: a faster render of a different output would prove nothing.
    a, b = run(ours + ["--print"]), run(theirs + ["--print"])
    if a != b:
        pos = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        sys.exit(f"rendered texts differ at byte {pos} (ours {len(a)} bytes, jinja2 {len(b)} bytes):\n"
                 f"  ours:   {a[max(0, pos - 40):pos + 40]!r}\n  jinja2: {b[max(0, pos - 40):pos + 40]!r}")

    rounds = []
    for _ in range(args.rounds):
        r_ours = json.loads(run(ours + ["--iterations", str(args.iterations)]).splitlines()[-1])
        r_py = json.loads(run(theirs + ["--iterations", str(args.py_iterations)]).splitlines()[-1])
        rounds.append((r_py["render_us_median"] / r_ours["render_us_median"], r_ours, r_py))
    rounds.sort(key=lambda r: r[0])
    _, r_ours, r_py = rounds[len(rounds) // 2]

    version = run([args.python, "-c", "import jinja2; print(jinja2.__version__)"]).decode().strip()
    n = r_ours["templates"]
    pinned = f"both sides on core {args.cpu}" if args.cpu >= 0 else "cores left to the scheduler"
    print(f"CPU: {cpu_model()} ({pinned}); conversation: {r_ours['output_chars']} characters rendered "
          f"(identical on both sides); {n} templates parsed.\n")
    print(f"| engine | µs per render (median) | µs per render (mean) | parse all {n} templates (ms) |")
    print("|---|---|---|---|")
    for name, r in (("plugformer (C++)", r_ours), (f"Python jinja2 {version}", r_py)):
        print(f"| {name} | {r['render_us_median']:.1f} | {r['render_us_mean']:.1f} | {r['parse_all_ms']:.2f} |")
    ratio = {k: r_py[k] / r_ours[k] for k in ("render_us_median", "render_us_mean", "parse_all_ms")}
    print(f"| python / ours | {ratio['render_us_median']:.1f}x | {ratio['render_us_mean']:.1f}x "
          f"| {ratio['parse_all_ms']:.1f}x |")
    print(f"\nRender ratio (median) of each round: {', '.join(f'{r[0]:.1f}x' for r in rounds)}.")
    print(f"\nGoals: render >= 10x faster: {'met' if ratio['render_us_median'] >= 10 else 'NOT met'}; "
          f"parse all < 50 ms: {'met' if r_ours['parse_all_ms'] < 50 else 'NOT met'}.")


if __name__ == "__main__":
    main()
