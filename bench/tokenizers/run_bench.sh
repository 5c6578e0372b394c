#!/bin/sh
# Runs the tokenizer speed comparison: plugformer (tokenizers_bench) and the Rust `tokenizers`
# library (bench_rust.js over @anush008/tokenizers), side by side on the same ~1 MB English text,
# for gpt2 and bert-base-uncased, single thread and 2 threads, alternating runs.
# Usage: run_bench.sh PATH/TO/tokenizers_bench [rounds=2]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bench="$1"
rounds="${2:-2}"
fixtures="$here/../../tests/fixtures/tokenizers"
corpus="${TMPDIR:-/tmp}/plugformer_bench_corpus.txt"
[ -f "$corpus" ] || "$here/make_corpus.sh" "$corpus" > /dev/null
[ -d "$here/node_modules/@anush008/tokenizers" ] || (cd "$here" && npm install --no-audit --no-fund > /dev/null)
for name in gpt2 bert-base-uncased; do
  tj="$fixtures/$name/tokenizer.json"
  i=0
  while [ "$i" -lt "$rounds" ]; do
    "$bench" "$tj" "$corpus" 2 5
    (cd "$here" && RAYON_NUM_THREADS=1 node bench_rust.js "$tj" "$corpus" 5)
    (cd "$here" && RAYON_NUM_THREADS=2 node bench_rust.js "$tj" "$corpus" 5)
    i=$((i + 1))
  done
done
