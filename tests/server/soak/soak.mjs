// Soak test of `plugformer serve` (issue 30): K concurrent clients for N seconds, mixing valid
// greedy / seeded requests (streamed or not; each answer must equal the one the same request got
// alone), streams and requests dropped mid-way, malformed bodies, oversized bodies and headers,
// prompts longer than the context, and raw sockets that send half a request. At the end the server
// must be idle (/metrics: no running or queued sequence, no KV cache), hold no more sockets than
// after warm-up, its RSS within --rss-tolerance of its RSS after warm-up, answer /health and greedy
// requests correctly, have answered no 5xx, and exit 0 on SIGTERM. Node >= 20, built-ins only.
//
//   node soak.mjs [--seconds 30] [--clients 16] [--seed 1] [--plugformer BIN] [--model DIR]
//                 [--chat-template FILE|none] [--max-num-seqs 8] [--max-body-bytes 1048576]
//                 [--warmup-seconds S] [--rss-tolerance 0.05] [--server-threads 1] [--hold-seconds 0]
//                 [--log-dir DIR] [--json FILE]
//
// BIN defaults to $PLUGFORMER_BIN, then <source>/build/bin/plugformer; DIR to models/stories260K.
// stories260K has no chat template: chat requests use ../openai/chat_template.jinja unless
// --chat-template none. ctest runs 30 s (server_soak); bench/serving/soak.md has the 10-minute run.
// The server gets OMP_NUM_THREADS=--server-threads (0: inherit): this tests robustness, not speed,
// and libtorch's OpenMP threads spin at barriers, so beside other work on a small machine two of
// them made a 40-token stories260K request take 0.25-4 s instead of 10 ms.
// Exit status 0 when every check passed, 1 otherwise (the failures are listed).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startServe } from '../serve_process.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const sourceDir = path.resolve(here, '../../..');

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    clients: { type: 'string', default: '16' },
    seed: { type: 'string', default: '1' },
    plugformer: { type: 'string' },
    model: { type: 'string' },
    'chat-template': { type: 'string' },
    'max-num-seqs': { type: 'string', default: '8' },
    'max-body-bytes': { type: 'string', default: String(1 << 20) },
    'warmup-seconds': { type: 'string' },
    'rss-tolerance': { type: 'string', default: '0.05' },
    'server-threads': { type: 'string', default: '1' },
    'hold-seconds': { type: 'string', default: '0' },
    'log-dir': { type: 'string' },
    json: { type: 'string' },
  },
  allowPositionals: false,
});

const SECONDS = Number(opts.seconds);
const CLIENTS = Number(opts.clients);
const SEED = Number(opts.seed);
const WARMUP_SECONDS = opts['warmup-seconds'] !== undefined ? Number(opts['warmup-seconds'])
  : Math.min(60, Math.max(10, SECONDS / 10));
const RSS_TOLERANCE = Number(opts['rss-tolerance']);
const MAX_BODY = Number(opts['max-body-bytes']);
const BIN = opts.plugformer ?? process.env.PLUGFORMER_BIN ?? path.join(sourceDir, 'build/bin/plugformer');
const MODEL = opts.model ?? path.join(sourceDir, 'models/stories260K');
const MODEL_NAME = path.basename(path.resolve(MODEL));
const CHAT_TEMPLATE = opts['chat-template'] === 'none' ? null
  : (opts['chat-template'] ?? path.join(sourceDir, 'tests/server/openai/chat_template.jinja'));
const LOG_DIR = opts['log-dir'] ?? mkdtempSync(path.join(os.tmpdir(), 'plugformer-soak-'));
mkdirSync(LOG_DIR, { recursive: true });
for (const [name, v] of Object.entries({ SECONDS, CLIENTS, SEED, WARMUP_SECONDS, RSS_TOLERANCE, MAX_BODY }))
  if (!Number.isFinite(v) || v < 0) { console.error(`soak: bad option value for ${name}: ${v}`); process.exit(2); }

const HOST = '127.0.0.1';
let PORT = 0;
const START_TIMEOUT = 180_000;
const T = { valid: 60_000, abort: 30_000, error: 15_000, oversized: 30_000, raw: 10_000, stall: 30_000 };

// ---------------------------------------------------------------------------------------------
// Bookkeeping

const failures = [];
const stats = new Map();  // kind -> { ops, ok, failed, statuses: Map, variants: Map, ms: [] }
let phase = 'setup';
let stopAll = false;

class Failure extends Error {}
function check(cond, message) { if (!cond) throw new Failure(message); }

function fail(kind, variant, message, client = null) {
  failures.push({ phase, kind, variant, client, t: Math.round(elapsed()), message: String(message).slice(0, 1500) });
  if (failures.length <= 30) console.error(`FAIL [${phase}] ${kind}/${variant}${client !== null ? ` client ${client}` : ''}: ${String(message).slice(0, 600)}`);
}

function stat(kind) {
  if (!stats.has(kind)) stats.set(kind, { ops: 0, ok: 0, failed: 0, statuses: new Map(), variants: new Map(), ms: [] });
  return stats.get(kind);
}

const t0 = Date.now();
const elapsed = () => (Date.now() - t0) / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.log(`[${elapsed().toFixed(1).padStart(6)} s] ${msg}`);

function rng(seed) {  // mulberry32
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));  // inclusive
  next.pick = (list) => list[Math.floor(next() * list.length)];
  return next;
}

// ---------------------------------------------------------------------------------------------
// The server

let server = null;

async function startServer() {
  const extra = ['--max-num-seqs', opts['max-num-seqs'], '--max-body-bytes', String(MAX_BODY)];
  if (CHAT_TEMPLATE) extra.push('--chat-template', CHAT_TEMPLATE);
  const env = Number(opts['server-threads']) > 0 ? { OMP_NUM_THREADS: opts['server-threads'] } : {};
  const logFile = path.join(LOG_DIR, 'server.log');
  log(`starting ${BIN} serve ${MODEL} (log: ${logFile})`);
  server = await startServe({ bin: BIN, model: path.resolve(MODEL), extra, logFile, env, startTimeoutMs: START_TIMEOUT,
    outputLimit: 2_000_000,
    onExit: (code, signal) => {
      if (phase === 'shutdown') return;
      stopAll = true;
      fail('server', 'exit', `the server exited during ${phase} (code ${code}, signal ${signal}); output tail:\n` +
        server.output.slice(-3000));
    } });
  PORT = server.port;
}

process.on('exit', () => { if (server && server.exitStatus === null) server.proc.kill('SIGKILL'); });

function procStatus() {
  const pid = server.proc.pid;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number((new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status) ?? [])[1]);
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), threads: kb('Threads'), fds: readdirSync(`/proc/${pid}/fd`).length };
}

// The server's resident memory by kind of mapping (kB), to tell a leak from allocator or stack
// growth: glibc's main heap, its other arenas (64 MiB-aligned anonymous mappings), thread stacks
// (8 MiB anonymous mappings), other anonymous memory (large allocations), and mapped files.
function memoryBreakdown() {
  const out = { heap: 0, arenas: 0, stacks: 0, anon_other: 0, files: 0 };
  let kind = null;
  for (const line of readFileSync(`/proc/${server.proc.pid}/smaps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (m) {
      const [start, end] = [BigInt(`0x${m[1]}`), BigInt(`0x${m[2]}`)];
      const name = m[5].trim();
      if (name === '[heap]') kind = 'heap';
      else if (name && !name.startsWith('[anon')) kind = name.startsWith('[') ? 'anon_other' : 'files';
      else if (end - start === 8n << 20n) kind = 'stacks';
      else if (start % (64n << 20n) === 0n && end - start <= 64n << 20n) kind = 'arenas';
      else kind = 'anon_other';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && kind) out[kind] += Number(rss[1]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// HTTP

// One request on its own connection (or `agent`'s). Resolves { status, headers, body, reused,
// aborted } once the response ended, or when `onData(text, abort)` called abort(); rejects on a
// socket error or after `timeoutMs` (a timeout is always a failure).
function call({ method = 'POST', route, body, headers = {}, timeoutMs, agent = false, onData, abortAfterMs, chunked }) {
  return new Promise((resolve, reject) => {
    let settled = false;
    let status = 0;
    let resHeaders = {};
    let text = '';
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (payload !== undefined && !('Content-Type' in h)) h['Content-Type'] = 'application/json';
    if (payload !== undefined && !chunked) h['Content-Length'] = String(payload.length);
    const req = http.request({ host: HOST, port: PORT, method, path: route, headers: h, agent });
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(abortTimer);
      if (err) {
        err.status = status;
        err.partial = text;
        reject(err);
      } else resolve(value);
    };
    const abort = () => {
      finish(null, { status, headers: resHeaders, body: text, aborted: true });
      req.destroy();
    };
    const untilDrained = () => new Promise((r) => {
      const done = () => { req.off('drain', done); req.off('close', done); r(); };
      req.on('drain', done);
      req.on('close', done);
    });
    const timer = setTimeout(() => {
      finish(new Failure(`timeout: ${method} ${route.slice(0, 80)} not answered within ${timeoutMs} ms (status ${status || 'none'}, ` +
        `${text.length} bytes received)`));
      req.destroy();
    }, timeoutMs);
    const abortTimer = abortAfterMs !== undefined ? setTimeout(abort, abortAfterMs) : null;
    req.on('response', (res) => {
      status = res.statusCode;
      resHeaders = res.headers;
      res.setEncoding('utf8');
      res.on('data', (c) => {
        text += c;
        if (onData && !settled) onData(text, abort);
      });
      res.on('end', () => {
        finish(null, { status, headers: resHeaders, body: text, reused: req.reusedSocket });
        if (chunked) req.destroy();  // answered before the whole body went: stop sending it
      });
      res.on('error', (err) => finish(err));
      res.on('aborted', () => finish(new Error('the response was cut off')));
    });
    req.on('error', (err) => finish(err));
    if (chunked) chunked(req, () => settled, untilDrained).catch((err) => finish(err));
    else req.end(payload);
  });
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new Failure(`${what}: not JSON: ${JSON.stringify(text.slice(0, 300))}`);
  }
}

// A 4xx with OpenAI's error object; `expect` = { status (number or list), param, code }.
function checkError(r, expect, what) {
  const statuses = [expect.status].flat();
  check(statuses.includes(r.status), `${what}: status ${r.status}, expected ${statuses.join(' or ')}: ${r.body.slice(0, 300)}`);
  const body = parseJson(r.body, what);
  check(body && typeof body.error === 'object' && body.error !== null, `${what}: no error object: ${r.body.slice(0, 300)}`);
  for (const key of ['message', 'type', 'param', 'code'])
    check(key in body.error, `${what}: error.${key} missing: ${r.body.slice(0, 300)}`);
  check(typeof body.error.message === 'string' && body.error.message.length > 0, `${what}: empty error.message`);
  check(typeof body.error.type === 'string', `${what}: error.type is not a string`);
  if (expect.param !== undefined) check(body.error.param === expect.param, `${what}: error.param ${JSON.stringify(body.error.param)}, expected ${JSON.stringify(expect.param)}`);
  if (expect.code !== undefined) check(body.error.code === expect.code, `${what}: error.code ${JSON.stringify(body.error.code)}, expected ${JSON.stringify(expect.code)}`);
  return body;
}

// Strict SSE framing: `data: <JSON>\n\n` events, then one `data: [DONE]\n\n`.
function parseSSE(text, what) {
  check(text.endsWith('\n\n'), `${what}: the stream does not end with an empty line: ${JSON.stringify(text.slice(-120))}`);
  const events = text.slice(0, -2).split('\n\n');
  check(events.at(-1) === 'data: [DONE]', `${what}: the last event is not data: [DONE]: ${JSON.stringify(events.at(-1)).slice(0, 200)}`);
  return events.slice(0, -1).map((ev, i) => {
    check(ev.startsWith('data: ') && !ev.includes('\n') && ev !== 'data: [DONE]', `${what}: bad event ${i}: ${JSON.stringify(ev).slice(0, 200)}`);
    return parseJson(ev.slice(6), `${what} event ${i}`);
  });
}

// The events received so far (possibly cut mid-event).
function completeEvents(text) { return text.split('\n\n').slice(0, -1); }

async function getMetrics() {
  const r = await call({ method: 'GET', route: '/metrics', timeoutMs: T.error });
  check(r.status === 200, `/metrics answered ${r.status}`);
  const values = {};
  const requests = {};
  for (const line of r.body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'plugformer_requests_total') requests[m[2]] = Number(m[3]);
    else if (!m[2]) values[m[1]] = Number(m[3]);
  }
  return { values, requests, text: r.body };
}

// ---------------------------------------------------------------------------------------------
// Reference answers (each request alone, before any load)

const PROMPTS = [
  'Once upon a time',
  'Once upon a time, there was a big cat named Max.',
  'Mom said, "Let\'s bake a cake!"',
  'The little dog',
  'Tom and Lily went to the park. They saw',
  'One day, a bird',
];
// Sentences enough to leave 16 to 64 tokens of the context (chosen once the context is known).
const longPrompt = (n) => Array.from({ length: n }, (_, i) => `Lily had ${i + 1} red balls and one big dog.`).join(' ');
let LONG_PROMPT = '';
const MAX_TOKENS = [8, 40];
const refs = [];  // { endpoint, prompt, max_tokens, sampling, text, finish_reason, completion_tokens, prompt_tokens }
let MAX_MODEL_LEN = 0;
let LONG_TOKENS = 0;

function requestBody(ref, extra = {}) {
  const body = ref.endpoint === 'chat'
    ? { model: MODEL_NAME, messages: [{ role: 'user', content: ref.prompt }], max_tokens: ref.max_tokens }
    : { model: MODEL_NAME, prompt: ref.prompt, max_tokens: ref.max_tokens };
  Object.assign(body, ref.sampling ?? { temperature: 0 }, extra);
  return body;
}
const routeOf = (endpoint) => (endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions');

// Sends `body` to `endpoint` (streamed or not) and returns per choice index { text, finish_reason }
// plus usage, checking the response's shape and framing on the way.
async function generate(endpoint, body, what, agent = false) {
  const r = await call({ route: routeOf(endpoint), body, timeoutMs: T.valid, agent });
  check(r.status === 200, `${what}: status ${r.status}: ${r.body.slice(0, 300)}`);
  const choices = new Map();
  let usage = null;
  if (!body.stream) {
    const res = parseJson(r.body, what);
    check(res.object === (endpoint === 'chat' ? 'chat.completion' : 'text_completion'), `${what}: object ${res.object}`);
    check(res.model === MODEL_NAME, `${what}: model ${res.model}`);
    for (const c of res.choices) {
      const text = endpoint === 'chat' ? c.message?.content : c.text;
      if (endpoint === 'chat') check(c.message?.role === 'assistant', `${what}: message.role ${c.message?.role}`);
      check(typeof text === 'string', `${what}: choice ${c.index} has no text`);
      choices.set(c.index, { text, finish_reason: c.finish_reason });
    }
    usage = res.usage;
  } else {
    check(String(r.headers['content-type']).startsWith('text/event-stream'), `${what}: content-type ${r.headers['content-type']}`);
    for (const chunk of parseSSE(r.body, what)) {
      check(chunk.object === (endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion'), `${what}: chunk object ${chunk.object}`);
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices ?? []) {
        const first = !choices.has(c.index);
        if (first) choices.set(c.index, { text: '', finish_reason: null });
        const acc = choices.get(c.index);
        check(acc.finish_reason === null, `${what}: choice ${c.index} has a chunk after its finish_reason`);
        if (endpoint === 'chat') {
          if (first) check(c.delta?.role === 'assistant', `${what}: the first delta of choice ${c.index} has no role`);
          acc.text += c.delta?.content ?? '';
        } else acc.text += c.text ?? '';
        if (c.finish_reason) acc.finish_reason = c.finish_reason;
      }
    }
    if (body.stream_options?.include_usage) check(usage, `${what}: include_usage but no usage chunk`);
  }
  if (usage) check(usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, `${what}: usage does not add up: ${JSON.stringify(usage)}`);
  return { choices, usage, reused: r.reused };
}

function expectChoices(got, expected, what) {
  check(got.choices.size === expected.length, `${what}: ${got.choices.size} choices, expected ${expected.length}`);
  expected.forEach((ref, i) => {
    const c = got.choices.get(i);
    check(c, `${what}: no choice ${i}`);
    check(c.text === ref.text && c.finish_reason === ref.finish_reason,
      `${what}: choice ${i} differs from the request alone (${ref.endpoint}, ${JSON.stringify(ref.prompt.slice(0, 40))}, ` +
      `max_tokens ${ref.max_tokens}${ref.sampling ? `, seed ${ref.sampling.seed}` : ''}):\n  alone: ${JSON.stringify(ref.text)} (${ref.finish_reason})\n` +
      `  now:   ${JSON.stringify(c.text)} (${c.finish_reason})`);
  });
  if (got.usage) {
    const want = expected.reduce((s, r) => s + r.completion_tokens, 0);
    check(got.usage.completion_tokens === want, `${what}: usage.completion_tokens ${got.usage.completion_tokens}, expected ${want}`);
  }
}

async function buildReferences() {
  const models = parseJson((await call({ method: 'GET', route: '/v1/models', timeoutMs: T.error })).body, '/v1/models');
  MAX_MODEL_LEN = models.data[0].max_model_len;
  check(Number.isInteger(MAX_MODEL_LEN) && MAX_MODEL_LEN > 0, `/v1/models has no max_model_len: ${JSON.stringify(models)}`);
  const count = async (text) => {
    const r = await call({ route: '/tokenize', body: { content: text, add_special: true }, timeoutMs: T.error });
    check(r.status === 200, `/tokenize: ${r.status} ${r.body.slice(0, 200)}`);
    return parseJson(r.body, '/tokenize').tokens.length;
  };
  const perSentence = (await count(longPrompt(10))) / 10;
  let n = Math.max(1, Math.floor((MAX_MODEL_LEN - 40) / perSentence));
  while (n > 1 && (await count(longPrompt(n))) > MAX_MODEL_LEN - 16) --n;
  LONG_PROMPT = longPrompt(n);
  const probe = await generate('completions', { model: MODEL_NAME, prompt: LONG_PROMPT, max_tokens: 1, temperature: 0 }, 'long prompt length');
  LONG_TOKENS = probe.usage.prompt_tokens;
  check(LONG_TOKENS <= MAX_MODEL_LEN - 16, `the long prompt (${LONG_TOKENS} tokens) leaves no room in ${MAX_MODEL_LEN}`);

  const specs = [];
  const endpoints = CHAT_TEMPLATE ? ['completions', 'chat'] : ['completions'];
  for (const endpoint of endpoints)
    for (const prompt of PROMPTS)
      for (const max_tokens of MAX_TOKENS) specs.push({ endpoint, prompt, max_tokens });
  // A prompt that, with its max_tokens, fills the context exactly.
  specs.push({ endpoint: 'completions', prompt: LONG_PROMPT, max_tokens: MAX_MODEL_LEN - LONG_TOKENS });
  // Seeded sampling: the same seed gives the same tokens whatever else runs.
  for (const prompt of PROMPTS.slice(0, 3))
    for (const seed of [7, 1234])
      specs.push({ endpoint: 'completions', prompt, max_tokens: 24, sampling: { temperature: 0.9, top_p: 0.95, seed } });

  for (const spec of specs) {
    const what = `reference ${spec.endpoint} ${JSON.stringify(spec.prompt.slice(0, 30))} max_tokens ${spec.max_tokens}`;
    const alone = await generate(spec.endpoint, requestBody(spec), what);
    const c = alone.choices.get(0);
    const ref = { ...spec, text: c.text, finish_reason: c.finish_reason, completion_tokens: alone.usage.completion_tokens,
      prompt_tokens: alone.usage.prompt_tokens };
    check(ref.completion_tokens > 0 && ref.completion_tokens <= spec.max_tokens, `${what}: completion_tokens ${ref.completion_tokens}`);
    // Alone again, and streamed: the same answer.
    expectChoices(await generate(spec.endpoint, requestBody(spec), `${what} (again)`), [ref], `${what} (again)`);
    expectChoices(await generate(spec.endpoint, requestBody(spec, { stream: true, stream_options: { include_usage: true } }),
      `${what} (streamed)`), [ref], `${what} (streamed)`);
    refs.push(ref);
  }
  // stories260K: the greedy answers continue the prompts as llama2.c does (tests/fixtures).
  const fixture = path.join(sourceDir, 'tests/fixtures/llama_stories260K.json');
  let compared = 0;
  if (MODEL_NAME === 'stories260K' && existsSync(fixture)) {
    for (const p of JSON.parse(readFileSync(fixture, 'utf8')).prompts)
      for (const ref of refs.filter((r) => r.endpoint === 'completions' && !r.sampling && r.prompt === p.text)) {
        check(p.greedy.full_text.startsWith(p.text + ref.text.replace(/\s+$/, '')),
          `reference ${JSON.stringify(p.text)}: ${JSON.stringify(ref.text)} is not how llama2.c continues it (${JSON.stringify(p.greedy.full_text)})`);
        ++compared;
      }
  }
  log(`${refs.length} reference answers (each alone, twice and streamed, all equal); ${compared} of them match llama2.c's greedy text; ` +
    `context ${MAX_MODEL_LEN}, long prompt ${LONG_TOKENS} tokens`);
}

// ---------------------------------------------------------------------------------------------
// The operations. Each returns { variant, status } or throws (a Failure, a timeout, a socket error).

async function opValid(rand, agent = false) {
  const greedy = refs.filter((r) => !r.sampling);
  const useSampled = rand() < 0.15;
  const ref = rand.pick(useSampled ? refs.filter((r) => r.sampling) : greedy);
  const stream = rand() < 0.5;
  const extra = stream ? { stream: true } : {};
  if (stream && rand() < 0.5) extra.stream_options = { include_usage: true };
  let expected = [ref];
  let body;
  let variant = `${ref.endpoint}${ref.sampling ? '_seeded' : ''}${stream ? '_stream' : ''}`;
  const shape = rand();
  if (ref.endpoint === 'completions' && !ref.sampling && shape < 0.15) {
    // Several prompts in one request, each its own choice.
    const same = greedy.filter((r) => r.endpoint === 'completions' && r.max_tokens === ref.max_tokens);
    expected = Array.from({ length: rand.int(2, 3) }, () => rand.pick(same));
    body = requestBody(ref, { ...extra, prompt: expected.map((r) => r.prompt) });
    variant += '_batch';
  } else if (!ref.sampling && shape < 0.25) {
    expected = [ref, ref];  // n = 2, greedy: twice the same answer
    body = requestBody(ref, { ...extra, n: 2 });
    variant += '_n2';
  } else {
    body = requestBody(ref, extra);
  }
  const got = await generate(ref.endpoint, body, variant, agent);
  expectChoices(got, expected, variant);
  return { variant, status: 200, reused: got.reused };
}

async function opKeepalive(rand) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 3; ++i) {
      const r = await opValid(rand, agent);
      if (i > 0) check(r.reused, `keep-alive request ${i + 1} did not reuse the connection`);
    }
  } finally {
    agent.destroy();
  }
  return { variant: 'three_requests', status: 200 };
}

// A stream dropped after a few events (0: before any); what came must begin the greedy answer.
async function opAbortStream(rand) {
  const ref = rand.pick(refs.filter((r) => !r.sampling && r.max_tokens === MAX_TOKENS.at(-1) && r.prompt !== LONG_PROMPT));
  const after = rand.int(0, 4);
  // As long as the context allows: the stream is still running when the client leaves.
  const body = requestBody(ref, { stream: true, max_tokens: MAX_MODEL_LEN - ref.prompt_tokens, ignore_eos: true });
  const variant = `${ref.endpoint}_after_${after}_events`;
  const r = await call({
    route: routeOf(ref.endpoint), body, timeoutMs: T.abort,
    abortAfterMs: after === 0 ? rand.int(0, 30) : undefined,
    onData: after === 0 ? undefined : (text, abort) => { if (completeEvents(text).length >= after) abort(); },
  });
  if (r.status !== 0) check(r.status === 200, `${variant}: status ${r.status}: ${r.body.slice(0, 300)}`);
  if (!r.aborted) throw new Failure(`${variant}: the stream ended before the client dropped it`);
  let text = '';
  for (const ev of completeEvents(r.body)) {
    check(ev.startsWith('data: {'), `${variant}: bad event ${JSON.stringify(ev).slice(0, 200)}`);
    const c = parseJson(ev.slice(6), variant).choices[0];
    text += (ref.endpoint === 'chat' ? c.delta?.content : c.text) ?? '';
  }
  const a = text.replace(/\uFFFD$/, '');
  const b = ref.text.replace(/\uFFFD$/, '');
  check(a.startsWith(b) || b.startsWith(a), `${variant}: the dropped stream's text ${JSON.stringify(text)} does not begin like ${JSON.stringify(ref.text)}`);
  return { variant, status: r.status };
}

// A non-streamed request whose client goes away before the answer.
async function opAbortRequest(rand) {
  const ref = rand.pick(refs.filter((r) => !r.sampling && r.prompt !== LONG_PROMPT));
  const body = requestBody(ref, { max_tokens: 200, ignore_eos: true });
  const r = await call({ route: routeOf(ref.endpoint), body, timeoutMs: T.abort, abortAfterMs: rand.int(0, 40) });
  if (!r.aborted) {  // answered before the client left: it must be right
    check(r.status === 200, `abort_request: status ${r.status}`);
  }
  return { variant: r.aborted ? `${ref.endpoint}_dropped` : `${ref.endpoint}_answered_first`, status: r.status };
}

const C = '/v1/completions';
const CHAT = '/v1/chat/completions';
const j = (o) => JSON.stringify(o);
const MALFORMED = [
  { name: 'bad_json', body: '{"prompt": "x",', status: 400 },
  { name: 'empty_body', body: '', status: 400 },
  { name: 'not_an_object', body: '[1, 2]', status: 400 },
  { name: 'json_number_overflow', body: '{"prompt": "x", "temperature": 2e7777777}', status: 400 },
  { name: 'deep_nesting', body: '['.repeat(200_000), status: 400 },
  { name: 'invalid_utf8_body', body: Buffer.concat([Buffer.from('{"prompt": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('", "max_tokens": 2}')]), status: 400 },
  { name: 'prompt_number', body: j({ prompt: 5 }), status: 400, param: 'prompt' },
  { name: 'prompt_missing', body: j({ max_tokens: 3 }), status: 400, param: 'prompt' },
  { name: 'prompt_empty_list', body: j({ prompt: [] }), status: 400, param: 'prompt' },
  { name: 'token_out_of_vocab', body: j({ prompt: [1, 2, 999999] }), status: 400, param: 'prompt' },
  { name: 'token_negative', body: j({ prompt: [-1] }), status: 400, param: 'prompt' },
  { name: 'max_tokens_string', body: j({ prompt: 'x', max_tokens: 'ten' }), status: 400, param: 'max_tokens' },
  { name: 'max_tokens_negative', body: j({ prompt: 'x', max_tokens: -5 }), status: 400, param: 'max_tokens' },
  { name: 'max_tokens_zero', body: j({ prompt: 'x', max_tokens: 0 }), status: 400, param: 'max_tokens' },
  { name: 'max_tokens_fraction', body: j({ prompt: 'x', max_tokens: 3.5 }), status: 400, param: 'max_tokens' },
  { name: 'temperature_string', body: j({ prompt: 'x', temperature: 'hot' }), status: 400, param: 'temperature' },
  { name: 'temperature_negative', body: j({ prompt: 'x', temperature: -1 }), status: 400, param: 'temperature' },
  { name: 'top_p_out_of_range', body: j({ prompt: 'x', top_p: 7 }), status: 400, param: 'top_p' },
  { name: 'stream_string', body: j({ prompt: 'x', stream: 'yes' }), status: 400, param: 'stream' },
  { name: 'include_usage_string', body: j({ prompt: 'x', stream: true, stream_options: { include_usage: 'yes' } }), status: 400, param: 'include_usage' },
  { name: 'n_zero', body: j({ prompt: 'x', n: 0 }), status: 400, param: 'n' },
  { name: 'stop_number', body: j({ prompt: 'x', stop: 5 }), status: 400, param: 'stop' },
  { name: 'logprobs_too_many', body: j({ prompt: 'x', logprobs: 100 }), status: 400, param: 'logprobs' },
  { name: 'seed_string', body: j({ prompt: 'x', seed: 'a' }), status: 400, param: 'seed' },
  { name: 'unknown_model', body: j({ model: 'gpt-4', prompt: 'x' }), status: 404, param: 'model', code: 'model_not_found' },
  { name: 'embeddings_on_a_generator', route: '/v1/embeddings', body: j({ input: 'x' }), status: 400, param: 'model' },
  { name: 'unknown_route', route: '/v1/nothing', body: '{}', status: 404 },
  { name: 'get_a_post_route', method: 'GET', route: C, status: 404 },
  { name: 'invalid_utf8_path', method: 'GET', route: '/%FF%FE', status: 404 },
  { name: 'invalid_utf8_model_path', method: 'GET', route: '/v1/models/%FF', status: 404, param: 'model', code: 'model_not_found' },
  { name: 'chat_messages_string', route: CHAT, body: j({ messages: 'hi' }), status: 400, param: 'messages', chat: true },
  { name: 'chat_messages_empty', route: CHAT, body: j({ messages: [] }), status: 400, param: 'messages', chat: true },
  { name: 'chat_role_number', route: CHAT, body: j({ messages: [{ role: 5, content: 'x' }] }), status: 400, param: 'messages[0]', chat: true },
  { name: 'chat_image_part', route: CHAT, body: j({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }), status: 400, param: 'messages[0].content[0]', chat: true },
  { name: 'chat_unknown_model', route: CHAT, body: j({ model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] }), status: 404, param: 'model', chat: true },
].filter((m) => !m.chat || CHAT_TEMPLATE);

async function runMalformed(m) {
  const r = await call({ method: m.method ?? 'POST', route: m.route ?? C, body: m.method === 'GET' ? undefined : m.body, timeoutMs: T.error });
  checkError(r, m, `malformed ${m.name}`);
  return { variant: m.name, status: r.status };
}
const opMalformed = (rand) => runMalformed(rand.pick(MALFORMED));

// Bodies over --max-body-bytes (announced or chunked), an oversized header and URL.
const OVERSIZED = ['content_length', 'chunked', 'huge_header', 'long_url'];
async function runOversized(variant, rand) {
  const bigBody = (size) => Buffer.from(JSON.stringify({ model: MODEL_NAME, prompt: 'a'.repeat(size), max_tokens: 1 }));
  if (variant === 'content_length') {
    const body = bigBody(rand.int(Math.floor(1.5 * MAX_BODY), 4 * MAX_BODY));
    const r = await call({ route: C, body, timeoutMs: T.oversized });
    const e = checkError(r, { status: [400, 413] }, 'oversized content_length');
    check(e.error.message.includes('larger than'), `oversized content_length: message ${e.error.message}`);
    return { variant, status: r.status };
  }
  if (variant === 'chunked') {
    let sent = 0;
    const total = rand.int(Math.floor(1.5 * MAX_BODY), 4 * MAX_BODY);
    const piece = Buffer.alloc(64 * 1024, 'a');
    try {
      const r = await call({
        route: C, body: '', headers: { 'Transfer-Encoding': 'chunked' }, timeoutMs: T.oversized,
        chunked: async (req, settled, untilDrained) => {
          req.write('{"prompt": "');
          while (sent < total && !settled() && !req.destroyed) {
            sent += piece.length;
            if (!req.write(piece)) await untilDrained();
          }
          if (!req.destroyed) req.end('"}');
        },
      });
      checkError(r, { status: [400, 413] }, 'oversized chunked');
      return { variant, status: r.status };
    } catch (err) {
      // The server may stop reading and close once the limit is passed: a reset then, never a hang.
      if (!(err instanceof Failure) && ['ECONNRESET', 'EPIPE'].includes(err.code) && sent >= MAX_BODY)
        return { variant: 'chunked_reset', status: 0 };
      throw err;
    }
  }
  if (variant === 'huge_header') {
    const r = await call({ method: 'GET', route: '/health', headers: { 'X-Padding': 'a'.repeat(rand.int(16, 64) * 1024) }, timeoutMs: T.error });
    check(r.status >= 400 && r.status < 500, `oversized huge_header: status ${r.status}`);
    return { variant, status: r.status };
  }
  if (variant === 'long_url') {
    const r = await call({ method: 'GET', route: `/v1/models/${'m'.repeat(rand.int(9, 40) * 1024)}`, timeoutMs: T.error });
    checkError(r, { status: [414, 400, 404] }, 'oversized long_url');
    return { variant, status: r.status };
  }
  throw new Error(`unknown oversized variant ${variant}`);
}
const opOversized = (rand) => runOversized(rand.pick(OVERSIZED), rand);

// Prompts that do not fit the context: 400 context_length_exceeded, streamed or not.
const LONG = ['text_prompt', 'token_ids', 'one_of_a_batch', 'max_tokens_over', 'streamed', 'chat'].filter((v) => v !== 'chat' || CHAT_TEMPLATE);
async function runLong(variant, rand) {
  const tooLong = 'Once upon a time '.repeat(Math.ceil(MAX_MODEL_LEN / 3) + rand.int(0, 200));
  let route = C;
  let body;
  let param = 'prompt';
  if (variant === 'text_prompt') body = { prompt: tooLong, max_tokens: 4 };
  else if (variant === 'token_ids') body = { prompt: Array.from({ length: MAX_MODEL_LEN + rand.int(1, 300) }, () => rand.int(3, 300)), max_tokens: 4 };
  else if (variant === 'one_of_a_batch') body = { prompt: ['Once upon a time', tooLong], max_tokens: 4 };
  else if (variant === 'max_tokens_over') {
    body = { prompt: LONG_PROMPT, max_tokens: MAX_MODEL_LEN - LONG_TOKENS + rand.int(1, 50) };
    param = 'max_tokens';
  } else if (variant === 'streamed') body = { prompt: tooLong, max_tokens: 4, stream: true };
  else if (variant === 'chat') {
    route = CHAT;
    body = { messages: [{ role: 'user', content: tooLong }], max_tokens: 4 };
    param = 'messages';
  }
  const r = await call({ route, body: { model: MODEL_NAME, temperature: 0, ...body }, timeoutMs: T.error });
  checkError(r, { status: 400, param, code: 'context_length_exceeded' }, `long_prompt ${variant}`);
  return { variant, status: r.status };
}
const opLongPrompt = (rand) => runLong(rand.pick(LONG), rand);

// A raw socket that sends part of a request, then closes (FIN or reset) or just connects.
const HALF = ['request_line', 'headers_cut', 'body_cut', 'chunk_cut', 'garbage', 'connect_only'];
function rawSocket(send, { closeAfterMs, waitForClose = false, timeoutMs, reset = false }) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: HOST, port: PORT });
    let received = '';
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!sock.destroyed) reset ? sock.resetAndDestroy() : sock.destroy();
      err ? reject(err) : resolve(value);
    };
    const timer = setTimeout(() => finish(new Failure(`timeout: the server kept a half request open for ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d) => { received += d; });
    sock.on('error', (err) => {
      if (['ECONNRESET', 'EPIPE'].includes(err.code)) finish(null, { received, reset: true });
      else finish(err);
    });
    sock.on('close', () => finish(null, { received, closedByServer: true }));
    sock.on('connect', () => {
      if (send.length) sock.write(send);
      if (!waitForClose) setTimeout(() => finish(null, { received }), closeAfterMs);
    });
  });
}
async function runHalf(variant, rand) {
  const head = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
  const body = JSON.stringify({ model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 8 });
  const data = {
    request_line: 'POST /v1/compl',
    headers_cut: head.slice(0, rand.int(20, head.length - 1)),
    body_cut: `${head}Content-Length: ${body.length}\r\n\r\n${body.slice(0, rand.int(0, body.length - 1))}`,
    chunk_cut: `${head}Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body.slice(0, 10)}`,
    garbage: Buffer.from(Array.from({ length: rand.int(1, 2000) }, () => rand.int(0, 255))),
    connect_only: '',
  }[variant];
  const reset = rand() < 0.5;  // close with FIN, or reset the connection
  const r = await rawSocket(data, { closeAfterMs: rand.int(0, 100), timeoutMs: T.raw, reset });
  if (r.received) check(/^HTTP\/1\.1 4\d\d /.test(r.received), `half_request ${variant}: answered ${JSON.stringify(r.received.slice(0, 100))}`);
  return { variant: `${variant}_${reset ? 'rst' : 'fin'}`, status: r.received ? Number(r.received.slice(9, 12)) : 0 };
}
const opHalfRequest = (rand) => runHalf(rand.pick(HALF), rand);

// Half a request, then silence: the server must give up on it (its read timeout), not hold it forever.
const STALLS = ['body_cut', 'declared_huge_body'];
async function runStall(variant) {
  const head = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
  const data = variant === 'body_cut' ? `${head}Content-Length: 1000\r\n\r\n{"prompt":` : `${head}Content-Length: 10000000000\r\n\r\n{"prompt":`;
  const started = Date.now();
  const r = await rawSocket(data, { waitForClose: true, timeoutMs: T.stall });
  if (r.received) check(/^HTTP\/1\.1 4\d\d /.test(r.received), `stalled_request ${variant}: answered ${JSON.stringify(r.received.slice(0, 100))}`);
  return { variant, status: r.received ? Number(r.received.slice(9, 12)) : 0, ms: Date.now() - started };
}
const opStall = (rand) => runStall(rand.pick(STALLS));

const KINDS = [
  ['valid', 40, (rand) => opValid(rand), T.valid],
  ['keepalive', 4, opKeepalive, 3 * T.valid],
  ['abort_stream', 14, opAbortStream, T.abort],
  ['abort_request', 4, opAbortRequest, T.abort],
  ['malformed', 14, opMalformed, T.error],
  ['oversized', 6, opOversized, T.oversized],
  ['long_prompt', 8, opLongPrompt, T.error],
  ['half_request', 9, opHalfRequest, T.raw],
  // Each lasts the server's read timeout (~15 s): rare, or most clients would sit in one.
  ['stalled_request', 0.03, opStall, T.stall],
];
const WEIGHT_SUM = KINDS.reduce((s, k) => s + k[1], 0);

// Runs one operation, counting it; a hang past `limit` (+10 s) is a failure too.
async function runOp(kind, limit, fn, client, label = '-') {
  const s = stat(kind);
  ++s.ops;
  const start = Date.now();
  let timer;
  try {
    const r = await Promise.race([fn(), new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`timeout: the ${kind} operation took over ${limit + 10_000} ms`)), limit + 10_000);
    })]);
    ++s.ok;
    s.statuses.set(r.status, (s.statuses.get(r.status) ?? 0) + 1);
    s.variants.set(r.variant, (s.variants.get(r.variant) ?? 0) + 1);
  } catch (err) {
    ++s.failed;
    if (!stopAll || !(err && /ECONNREFUSED|ECONNRESET/.test(err.code ?? ''))) fail(kind, label, err?.stack && !(err instanceof Failure) ? err.stack : err?.message ?? err, client);
  } finally {
    clearTimeout(timer);
    s.ms.push(Date.now() - start);
  }
}

async function clientLoop(client, until, seed, firstAll) {
  const rand = rng(seed);
  // In warm-up, every client first runs each kind once (in its own order), so warm-up touches every
  // path; stalls run beside the clients instead (runClients).
  const queue = firstAll ? KINDS.filter((k) => k[0] !== 'stalled_request').sort(() => rand() - 0.5) : [];
  while (Date.now() < until && !stopAll) {
    let k = queue.shift();
    if (!k) {
      let x = rand() * WEIGHT_SUM;
      k = KINDS.find((kk) => (x -= kk[1]) < 0) ?? KINDS[0];
    }
    await runOp(k[0], k[3], () => k[2](rand), client);
  }
}

async function runClients(seconds, seedBase, firstAll) {
  const until = Date.now() + seconds * 1000;
  const stalls = firstAll ? STALLS.map((v) => runOp('stalled_request', T.stall, () => runStall(v), null, v)) : [];
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => clientLoop(i, until, (seedBase * 1000003 + i * 7919) >>> 0, firstAll)));
  await Promise.all(stalls);
}

// ---------------------------------------------------------------------------------------------
// Idle and resources

async function waitIdle(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let m;
  while (Date.now() < deadline) {
    m = await getMetrics();
    if (m.values.plugformer_running_sequences === 0 && m.values.plugformer_queue_length === 0) return m;
    await sleep(250);
  }
  throw new Failure(`not idle after ${timeoutMs / 1000} s: running ${m?.values.plugformer_running_sequences}, queued ${m?.values.plugformer_queue_length}`);
}

// The server's resources once quiet: idle engine, then `settleMs` for sockets to close.
async function quietResources(settleMs, fdsAtMost) {
  const m = await waitIdle(60_000);
  await sleep(settleMs);
  let r = procStatus();
  const deadline = Date.now() + 20_000;
  while (fdsAtMost !== undefined && r.fds > fdsAtMost && Date.now() < deadline) {
    await sleep(500);
    r = procStatus();
  }
  return { ...r, memory: memoryBreakdown(), metrics: m };
}

function percentile(list, p) {
  if (!list.length) return 0;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

// ---------------------------------------------------------------------------------------------
// Main

const result = { seconds: SECONDS, clients: CLIENTS, seed: SEED, model: MODEL, warmup_seconds: WARMUP_SECONDS };
let exitCode = 0;
try {
  await startServer();
  log(`listening on port ${PORT}, pid ${server.proc.pid}; ${CLIENTS} clients, ${SECONDS} s after ${WARMUP_SECONDS} s of warm-up, seed ${SEED}`);

  phase = 'reference';
  await buildReferences();

  // Every variant once, alone: a broken path shows up even if the random mix missed it.
  phase = 'coverage';
  const once = rng(SEED);
  for (const m of MALFORMED) await runOp('malformed', T.error, () => runMalformed(m), null, m.name);
  for (const v of OVERSIZED) await runOp('oversized', T.oversized, () => runOversized(v, once), null, v);
  for (const v of LONG) await runOp('long_prompt', T.error, () => runLong(v, once), null, v);
  for (const v of HALF) await runOp('half_request', T.raw, () => runHalf(v, once), null, v);
  check((await call({ method: 'GET', route: '/health', timeoutMs: T.error })).status === 200, '/health after the coverage pass');
  log(`coverage pass: ${MALFORMED.length} malformed, ${OVERSIZED.length} oversized, ${LONG.length} long-prompt, ${HALF.length} half-request variants`);

  if (!stopAll) {
    phase = 'warmup';
    await runClients(WARMUP_SECONDS, SEED, true);
    const warm = await quietResources(3000);
    result.warm = warm;
    delete result.warm.metrics;
    log(`after warm-up: RSS ${(warm.rssKb / 1024).toFixed(1)} MB, ${warm.fds} fds, ${warm.threads} threads`);

    phase = 'soak';
    const samples = [];
    const sampler = setInterval(() => {
      try {
        const s = procStatus();
        samples.push({ t: Math.round(elapsed()), rss_mb: +(s.rssKb / 1024).toFixed(1), fds: s.fds });
      } catch { /* exited: reported by the exit handler */ }
    }, 5000);
    const soakStart = Date.now();
    const before = new Map([...stats].map(([k, s]) => [k, s.ops]));
    await runClients(SECONDS, SEED + 1, false);
    clearInterval(sampler);
    result.soak_wall_seconds = (Date.now() - soakStart) / 1000;
    result.rss_samples = samples;
    result.soak_ops = Object.fromEntries([...stats].map(([k, s]) => [k, s.ops - (before.get(k) ?? 0)]));
    log(`soak done: ${Object.values(result.soak_ops).reduce((a, b) => a + b, 0)} operations in ${result.soak_wall_seconds.toFixed(0)} s ` +
      `(${Object.entries(result.soak_ops).map(([k, n]) => `${k} ${n}`).join(', ')})`);

    phase = 'final';
    if (!stopAll) {
      const end = await quietResources(3000, warm.fds);
      const m = end.metrics;
      result.end = { rssKb: end.rssKb, hwmKb: end.hwmKb, fds: end.fds, threads: end.threads };
      log(`at the end: RSS ${(end.rssKb / 1024).toFixed(1)} MB (peak ${(end.hwmKb / 1024).toFixed(1)}), ${end.fds} fds, ${end.threads} threads`);
      const ratio = end.rssKb / warm.rssKb;
      result.rss_ratio = ratio;
      result.end.memory = end.memory;
      const growth = Object.entries(end.memory).map(([k, v]) => `${k} ${((v - warm.memory[k]) / 1024).toFixed(1)}`).join(', ');
      log(`resident memory growth since warm-up by mapping (MB): ${growth}`);
      if (ratio > 1 + RSS_TOLERANCE)
        fail('final', 'rss', `RSS grew from ${(warm.rssKb / 1024).toFixed(1)} MB after warm-up to ${(end.rssKb / 1024).toFixed(1)} MB ` +
          `(${((ratio - 1) * 100).toFixed(1)}% > ${RSS_TOLERANCE * 100}%; by mapping, MB: ${growth})`);
      if (end.fds > warm.fds) fail('final', 'fds', `${end.fds} open file descriptors at the end, ${warm.fds} after warm-up`);
      if (end.threads > warm.threads) fail('final', 'threads', `${end.threads} threads at the end, ${warm.threads} after warm-up`);
      if (m.values.plugformer_kv_cache_bytes !== 0) fail('final', 'kv_cache', `plugformer_kv_cache_bytes ${m.values.plugformer_kv_cache_bytes} while idle`);
      result.requests_by_status = {};
      for (const [labels, n] of Object.entries(m.requests)) {
        const st = /status="(\d+)"/.exec(labels)?.[1];
        result.requests_by_status[st] = (result.requests_by_status[st] ?? 0) + n;
        if (Number(st) >= 500) fail('final', 'metrics', `/metrics counts ${n} answers ${labels}`);
      }
      result.generated_tokens = m.values.plugformer_generation_tokens_total;
      const health = await call({ method: 'GET', route: '/health', timeoutMs: T.error });
      if (health.status !== 200 || parseJson(health.body, '/health').status !== 'ok') fail('final', 'health', `/health: ${health.status} ${health.body}`);
      for (const ref of refs.filter((r) => !r.sampling)) {
        try {
          expectChoices(await generate(ref.endpoint, requestBody(ref), 'final greedy'), [ref], 'final greedy');
        } catch (err) {
          fail('final', 'greedy', err.message);
        }
      }
      log(`final checks done (${refs.filter((r) => !r.sampling).length} greedy requests)`);
    }
  }
} catch (err) {
  fail(phase, 'driver', err?.stack ?? err);
}

// --hold-seconds: time to look at the idle server (gdb, heaptrack) before it is stopped.
if (Number(opts['hold-seconds']) > 0 && server.exitStatus === null) {
  log(`holding the server (pid ${server.proc.pid}, port ${PORT}) for ${opts['hold-seconds']} s`);
  await sleep(Number(opts['hold-seconds']) * 1000);
}

// SIGTERM: exits 0, promptly (nothing runs).
if (server && server.exitStatus === null) {
  phase = 'shutdown';
  const started = Date.now();
  server.proc.kill('SIGTERM');
  let timer;
  const status = await Promise.race([server.exited, new Promise((r) => { timer = setTimeout(() => r(null), 20_000); })]);
  clearTimeout(timer);
  result.shutdown_seconds = (Date.now() - started) / 1000;
  if (!status) {
    fail('shutdown', 'sigterm', 'still running 20 s after SIGTERM; killed');
    server.proc.kill('SIGKILL');
    await server.exited;
  } else if (status.code !== 0 || status.signal !== null) {
    fail('shutdown', 'sigterm', `exited with code ${status.code}, signal ${status.signal} after SIGTERM`);
  } else if (result.shutdown_seconds > 10) {
    fail('shutdown', 'sigterm', `took ${result.shutdown_seconds.toFixed(1)} s to exit after SIGTERM while idle`);
  }
}
await sleep(100);
const badLines = server.output.split('\n').filter((l) => /terminate called|Sanitizer|Segmentation|Aborted|\berror\b/i.test(l));
if (badLines.length) fail('log', 'server', `${badLines.length} error lines in the server's output, first: ${badLines.slice(0, 5).join(' | ')}`);

// ---------------------------------------------------------------------------------------------
// Summary

const rows = [['kind', 'ops', 'ok', 'failed', 'answers (status: count)', 'p50 ms', 'p99 ms', 'max ms']];
let totalOps = 0;
for (const [kind, s] of stats) {
  totalOps += s.ops;
  const statuses = [...s.statuses].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k || 'none'}: ${v}`).join(', ');
  rows.push([kind, s.ops, s.ok, s.failed, statuses, percentile(s.ms, 50), percentile(s.ms, 99), s.ms.reduce((a, b) => Math.max(a, b), 0)].map(String));
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
const line = (r) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
console.log(`\nplugformer serve soak: ${CLIENTS} clients, ${SECONDS} s (+ ${WARMUP_SECONDS} s warm-up, reference and coverage passes), seed ${SEED}, ${os.cpus()[0]?.model ?? '?'}`);
console.log(line(rows[0]));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of rows.slice(1)) console.log(line(r));
const mb = (kb) => (kb ? `${(kb / 1024).toFixed(1)} MB` : '?');
console.log(`\noperations (all phases): ${totalOps}; failures: ${failures.length}`);
if (result.warm) {
  console.log(`RSS after warm-up ${mb(result.warm.rssKb)}, at the end ${mb(result.end?.rssKb)} ` +
    `(${result.rss_ratio ? `${((result.rss_ratio - 1) * 100).toFixed(2)}%` : '?'}, limit +${RSS_TOLERANCE * 100}%), peak ${mb(result.end?.hwmKb)}`);
  console.log(`fds after warm-up ${result.warm.fds}, at the end ${result.end?.fds}; threads ${result.warm.threads} / ${result.end?.threads}`);
  if (result.rss_samples?.length) console.log(`RSS during the soak (MB, every 5 s): min ${Math.min(...result.rss_samples.map((s) => s.rss_mb))}, max ${Math.max(...result.rss_samples.map((s) => s.rss_mb))}`);
}
if (result.requests_by_status) console.log(`/metrics requests by status: ${JSON.stringify(result.requests_by_status)}; generated tokens ${result.generated_tokens}`);
if (result.shutdown_seconds !== undefined) console.log(`SIGTERM -> exit ${server.exitStatus?.code} in ${result.shutdown_seconds.toFixed(2)} s`);
if (failures.length) {
  console.log(`\nFAILED (${failures.length}):`);
  for (const f of failures.slice(0, 40)) console.log(`- [${f.phase} ${f.t} s] ${f.kind}/${f.variant}${f.client !== null ? ` (client ${f.client})` : ''}: ${f.message.split('\n').slice(0, 6).join('\n    ')}`);
  exitCode = 1;
} else console.log('\nPASSED');
console.log(`server log: ${server.logFile}`);

result.kinds = Object.fromEntries([...stats].map(([k, s]) => [k, { ops: s.ops, ok: s.ok, failed: s.failed,
  statuses: Object.fromEntries(s.statuses), variants: Object.fromEntries(s.variants), p50_ms: percentile(s.ms, 50), max_ms: s.ms.reduce((a, b) => Math.max(a, b), 0) }]));
result.failures = failures;
result.cpu = os.cpus()[0]?.model;
if (opts.json) writeFileSync(opts.json, JSON.stringify(result, null, 2));
process.exit(exitCode);
