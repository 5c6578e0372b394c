"""Python jinja2 side of the chat-template benchmark (see README.md): the environment transformers
builds in chat_template_utils.py, timed the same way as chat_template_bench.cpp.

Usage: /usr/bin/python3 jinja2_reference.py --template FILE --conversation FILE
           --templates-dir DIR [--iterations N] [--rounds R] [--print]
"""
import argparse
import json
import pathlib
import statistics
import sys
import time
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.sandbox
from jinja2 import nodes

APPLY_KEYS = {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"}


class AssistantTracker(jinja2.ext.Extension):
    # {% generation %}...{% endgeneration %}: transformers renders the body unchanged (it only
    # records spans when an assistant-token mask is asked for, which is not measured here).
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def make_env():
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    # The instant the fixtures (and the C++ bench) use, so both sides render the same text.
    env.globals["strftime_now"] = lambda fmt: datetime(2025, 1, 5, 7, 8, 9).strftime(fmt)
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--template", required=True)
    ap.add_argument("--conversation", required=True)
    ap.add_argument("--templates-dir", required=True)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--print", action="store_true", help="print the rendered text once and exit")
    args = ap.parse_args()

    conv = json.loads(pathlib.Path(args.conversation).read_text(encoding="utf-8"))
    variables = {k: v for k, v in conv.items() if k not in APPLY_KEYS}  # bos_token, eos_token, ...
    compiled = make_env().from_string(pathlib.Path(args.template).read_text(encoding="utf-8"))

    def render():
        return compiled.render(messages=conv["messages"], tools=conv.get("tools"), documents=conv.get("documents"),
                               add_generation_prompt=conv.get("add_generation_prompt", False), **variables)

    if args.print:
        sys.stdout.buffer.write(render().encode("utf-8"))  # UTF-8 whatever the locale
        return

    for _ in range(10):  # warm-up
        text = render()
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter_ns()
        render()
        times.append(time.perf_counter_ns() - t0)

    # Compile all templates; a fresh Environment per round so no cache hides the cost.
    sources = [p.read_text(encoding="utf-8") for p in sorted(pathlib.Path(args.templates_dir).glob("*/template.jinja"))]
    rounds = []
    for _ in range(args.rounds):
        env = make_env()
        t0 = time.perf_counter_ns()
        kept = [env.from_string(s) for s in sources]
        rounds.append(time.perf_counter_ns() - t0)
        del kept

    print(json.dumps({"render_us_median": round(statistics.median(times) / 1e3, 3),
                      "render_us_mean": round(statistics.fmean(times) / 1e3, 3),
                      "output_chars": len(text),
                      "parse_all_ms": round(statistics.median(rounds) / 1e6, 3),
                      "templates": len(sources)}))


if __name__ == "__main__":
    main()
