// ONNX Runtime peer for `encoder_bench embed` and `encoder_bench rerank`: what fastembed /
// transformers.js users run (onnxruntime-node on a model exported by export_onnx.py, Hugging Face's
// Rust tokenizers through their Node binding), on the same lines, batches and order as
// sentence-transformers makes them. Tokenization included. Bench tool only.
//
//   npm install --ignore-scripts --prefix bench/encoder     (onnxruntime-node, tokenizers)
//   node bench/encoder/ort_peer.mjs embed  MODEL.onnx DIR/tokenizer.json --input lines.txt [--batch 32] [--max-length 256]
//   node bench/encoder/ort_peer.mjs rerank MODEL.onnx DIR/tokenizer.json --input lines.txt [--batch 32] [--passages 100]
//   common: [--threads 2] [--repeat 1]
//
// --ignore-scripts: the package's install script fetches GPU extras from a host this machine cannot
// reach; the CPU binaries ship in the package. The session is created with enableMemPattern off:
// with it, every new batch shape costs ~3x. Prints one JSON line: items, seconds (best of --repeat),
// items per second, and the part of that time spent in session.run.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const { Tokenizer } = require('tokenizers');

const [mode, modelPath, tokenizerPath, ...rest] = process.argv.slice(2);
const opt = { '--input': '', '--batch': '32', '--max-length': '', '--passages': '100', '--threads': '2', '--repeat': '1' };
for (let i = 0; i < rest.length; i += 2) {
  if (!(rest[i] in opt) || rest[i + 1] === undefined) throw new Error(`unknown or incomplete option ${rest[i]}`);
  opt[rest[i]] = rest[i + 1];
}
if (!['embed', 'rerank'].includes(mode) || !opt['--input']) throw new Error('usage: ort_peer.mjs embed|rerank MODEL.onnx tokenizer.json --input FILE');
const batchSize = Number(opt['--batch']);
const lines = readFileSync(opt['--input'], 'utf8').split('\n');
if (lines.at(-1) === '') lines.pop();

const tokenizer = Tokenizer.fromFile(tokenizerPath);
tokenizer.disablePadding();  // each batch is padded below to its own longest, as transformers does
if (opt['--max-length']) tokenizer.setTruncation(Number(opt['--max-length']));
const session = await ort.InferenceSession.create(modelPath, {
  intraOpNumThreads: Number(opt['--threads']), interOpNumThreads: 1, executionMode: 'sequential',
  graphOptimizationLevel: 'all', enableMemPattern: false,
});

// The model's inputs for a batch of encodings, right-padded with zeros to the longest.
function feeds(encodings) {
  const longest = Math.max(...encodings.map((e) => e.getLength()));
  const shape = [encodings.length, longest];
  const ids = new BigInt64Array(encodings.length * longest);
  const types = new BigInt64Array(ids.length);
  const mask = new BigInt64Array(ids.length);
  encodings.forEach((e, r) => {
    const row = e.getIds(), rowTypes = e.getTypeIds();
    for (let j = 0; j < row.length; ++j) {
      ids[r * longest + j] = BigInt(row[j]);
      types[r * longest + j] = BigInt(rowTypes[j]);
      mask[r * longest + j] = 1n;
    }
  });
  const all = { input_ids: ids, token_type_ids: types, attention_mask: mask };
  return Object.fromEntries(session.inputNames.map((n) => [n, new ort.Tensor('int64', all[n], shape)]));
}

// Runs batches of items (longest first, as sentence-transformers sorts) through tokenize + model;
// returns the seconds spent in session.run.
async function runSorted(items, length, encode) {
  const order = items.map((_, i) => i).sort((a, b) => length(items[b]) - length(items[a]) || a - b);
  let modelSeconds = 0;
  for (let i = 0; i < order.length; i += batchSize) {
    const encodings = await encode(order.slice(i, i + batchSize).map((k) => items[k]));
    const start = performance.now();
    await session.run(feeds(encodings));
    modelSeconds += (performance.now() - start) / 1e3;
  }
  return modelSeconds;
}

let calls, count;
if (mode === 'embed') {
  calls = [lines];
  count = lines.length;
} else {
  const passages = Number(opt['--passages']);
  calls = [];
  for (let q = 0; q + passages < lines.length; q += passages + 1)
    calls.push(lines.slice(q + 1, q + 1 + passages).map((p) => [lines[q], p]));
  count = calls.length * passages;
}
const length = mode === 'embed' ? (s) => s.length : ([q, p]) => q.length + p.length;
const encode = mode === 'embed' ? (texts) => tokenizer.encodeBatch(texts)
  : (pairs) => Promise.all(pairs.map(([q, p]) => tokenizer.encode(q, p)));

await runSorted(calls[0].slice(0, batchSize), length, encode);  // warm-up
let best = Infinity, bestModel = 0;
for (let r = 0; r < Number(opt['--repeat']); ++r) {
  const start = performance.now();
  let model = 0;
  for (const items of calls) model += await runSorted(items, length, encode);
  const seconds = (performance.now() - start) / 1e3;
  if (seconds < best) [best, bestModel] = [seconds, model];
}
const unit = mode === 'embed' ? 'sentences' : 'pairs';
console.log(JSON.stringify({ engine: `onnxruntime-node ${require('onnxruntime-node/package.json').version}`,
  [unit]: count, seconds: best, [`${unit}_per_s`]: count / best, model_seconds: bestModel }));
