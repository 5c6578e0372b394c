// The Rust `tokenizers` library (through the npm binding @anush008/tokenizers) on the same
// text as tokenizers_bench: one encodeBatch call over all non-empty lines; the rayon pool size
// (RAYON_NUM_THREADS, set by run_bench.sh) decides single thread vs batched.
// Usage: RAYON_NUM_THREADS=1 node bench_rust.js TOKENIZER_JSON CORPUS [repeats=5]
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

function mix(h, id) {
  // Same 64-bit mix as bench_tokenizers.cpp, with BigInt.
  const M = (1n << 64n) - 1n;
  return (h ^ ((BigInt(id) + 0x9e3779b97f4a7c15n + ((h << 6n) & M) + (h >> 2n)) & M)) & M;
}

async function main() {
  const [tokPath, corpus, repeatsArg] = process.argv.slice(2);
  const repeats = repeatsArg ? parseInt(repeatsArg, 10) : 5;
  const texts = fs.readFileSync(corpus, 'utf8').split('\n').filter((l) => l.length > 0);
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t, 'utf8'), 0);
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  await tok.encodeBatch(texts); // warm-up
  let best = Infinity;
  let bestCpu = 0;
  let encs = null;
  for (let i = 0; i < repeats; i++) {
    const c = process.cpuUsage();
    const s = process.hrtime.bigint();
    encs = await tok.encodeBatch(texts);
    const sec = Number(process.hrtime.bigint() - s) / 1e9;
    const cu = process.cpuUsage(c);
    if (sec < best) {
      best = sec;
      bestCpu = (cu.user + cu.system) / 1e6;
    }
  }
  let tokens = 0;
  let h = 1469598103934665603n;
  for (const e of encs) {
    const ids = e.getIds();
    tokens += ids.length;
    for (const id of ids) h = mix(h, id);
  }
  const threads = process.env.RAYON_NUM_THREADS || 'all';
  console.log(`engine=rust-tokenizers tokenizer=${tokPath} texts=${texts.length} bytes=${bytes} load_ms=${loadMs.toFixed(0)}`);
  console.log(`encode_batch_${threads}_threads: ${(bytes / 1e6 / best).toFixed(2)} MB/s (${(best * 1e3).toFixed(1)} ms wall, ${(bestCpu * 1e3).toFixed(1)} ms cpu) tokens=${tokens} hash=${h.toString(16).padStart(16, '0')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
