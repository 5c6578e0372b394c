// `plugformer serve` driven by a real client: the official `openai` npm package (pinned in
// package.json), plus curl for the raw Server-Sent Events framing.
//
//   node openai_client_test.mjs [--plugformer BIN] [--npm-prefix DIR] [--model DIR]
//                               [--embedding-model DIR] [--log-dir DIR]
//
// BIN defaults to $PLUGFORMER_BIN, then <source>/build/bin/plugformer. The `openai` package is
// loaded from DIR/node_modules (DIR defaults to $PLUGFORMER_NPM_PREFIX, then this folder: run
// `npm ci` here). ctest runs it with the npm install done into the build tree (CMakeLists.txt).
//
// Servers (all on 127.0.0.1, port 0): stories260K with a ChatML-like --chat-template (this
// folder's chat_template.jinja); a sentence-transformers fixture for /v1/embeddings; stories260K
// with --api-key sk-test and no chat template; one more stories260K for SIGTERM. Each is stopped
// in an `after` hook; their stdout+stderr go to files in the log dir (named in failures).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startServe } from '../serve_process.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const sourceDir = path.resolve(here, '../../..');

const { values: opts } = parseArgs({
  options: {
    plugformer: { type: 'string' },
    'npm-prefix': { type: 'string' },
    model: { type: 'string' },
    'embedding-model': { type: 'string' },
    'log-dir': { type: 'string' },
  },
  allowPositionals: false,
});

const BIN = opts.plugformer ?? process.env.PLUGFORMER_BIN ?? path.join(sourceDir, 'build/bin/plugformer');
const MODEL = opts.model ?? path.join(sourceDir, 'models/stories260K');
const EMBED_MODEL = opts['embedding-model'] ??
  path.join(sourceDir, 'tests/fixtures/sentence_transformers/minilm-mean-normalize');
const CHAT_TEMPLATE = path.join(here, 'chat_template.jinja');
const MODEL_NAME = path.basename(MODEL);
const EMBED_NAME = path.basename(EMBED_MODEL);
const LOG_DIR = opts['log-dir'] ?? mkdtempSync(path.join(os.tmpdir(), 'plugformer-openai-test-'));
mkdirSync(LOG_DIR, { recursive: true });

// Reference greedy continuations of stories260K (llama2.c run.c, float32): the fixture's prompts.
const STORIES = JSON.parse(readFileSync(path.join(sourceDir, 'tests/fixtures/llama_stories260K.json'), 'utf8'));
const ONCE = STORIES.prompts.find((p) => p.text === 'Once upon a time');
// Expected sentence-transformers v5.3.0 embeddings of the embedding fixture.
const EXPECTED_EMBEDDINGS = readSafetensors(path.join(EMBED_MODEL, 'expected.safetensors'));

const { OpenAI, NotFoundError, BadRequestError, AuthenticationError } = loadOpenAI();

const TEST_TIMEOUT = 60_000;
const START_TIMEOUT = 180_000;

// ---------------------------------------------------------------------------------------------
// Helpers

function loadOpenAI() {
  const prefixes = [opts['npm-prefix'], process.env.PLUGFORMER_NPM_PREFIX, here].filter(Boolean);
  for (const prefix of prefixes) {
    try {
      const mod = createRequire(path.join(prefix, 'noop.cjs'))('openai');
      return { ...mod, OpenAI: mod.OpenAI ?? mod.default ?? mod };
    } catch (err) {
      if (err.code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new Error(`the openai package is not installed under any of: ${prefixes.join(', ')} ` +
    `(run \`npm ci\` in ${here}, or pass --npm-prefix)`);
}

function readSafetensors(file) {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue;
    const [begin, end] = t.data_offsets;
    const bytes = buf.subarray(8 + headerLen + begin, 8 + headerLen + end);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    tensors[name] = { shape: t.shape, data };
  }
  return tensors;
}

const servers = new Set();
process.on('exit', () => {
  for (const s of servers) if (s.exitStatus === null) s.proc.kill('SIGKILL');
});

// A server named `name` (its log: LOG_DIR/name.log), killed at the latest when the test exits.
async function startServer(name, modelDir, extra = []) {
  const server = await startServe({ bin: BIN, model: modelDir, extra, logFile: path.join(LOG_DIR, `${name}.log`),
    startTimeoutMs: START_TIMEOUT });
  servers.add(server);
  return server;
}

// SIGTERM (then SIGKILL after `graceMs`); resolves to the exit status.
async function stopServer(server, graceMs = 15_000) {
  if (!server) return null;
  if (server.exitStatus === null) {
    server.proc.kill('SIGTERM');
    let timer;
    const timedOut = await Promise.race([
      server.exited.then(() => false),
      new Promise((r) => { timer = setTimeout(() => r(true), graceMs); }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      server.proc.kill('SIGKILL');
      await server.exited;
      server.exitStatus.killedAfterTimeout = true;
    }
  }
  servers.delete(server);
  return server.exitStatus;
}

function client(server, apiKey = 'sk-unused') {
  return new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0, timeout: 30_000 });
}

// curl -sSN: resolves to { status, contentType, body } (never rejects on HTTP errors).
function curl(args, timeoutS = 30) {
  return new Promise((resolve, reject) => {
    const proc = spawn('curl', ['-sSN', '--noproxy', '*', '--max-time', String(timeoutS),
      '--write-out', '%{stderr}\n%{http_code} %{content_type}', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let body = '';
    let err = '';
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stdout.on('data', (c) => { body += c; });
    proc.stderr.on('data', (c) => { err += c; });
    proc.on('error', reject);
    proc.on('close', (code) => {
      if (code !== 0) return reject(new Error(`curl ${args.join(' ')} exited ${code}: ${err}`));
      const last = err.trimEnd().split('\n').pop();
      const sp = last.indexOf(' ');
      resolve({ status: Number(last.slice(0, sp)), contentType: last.slice(sp + 1), body });
    });
  });
}

function curlPost(server, route, payload) {
  return curl(['-X', 'POST', `${server.url}${route}`, '-H', 'Content-Type: application/json',
    '--data-binary', JSON.stringify(payload)]);
}

// Checks the raw SSE framing: only `data: <JSON>\n\n` events, then exactly one `data: [DONE]\n\n`
// at the end. Returns the parsed JSON chunks.
function parseSSE(body) {
  assert.ok(body.endsWith('\n\n'), `stream must end with an empty line; got tail ${JSON.stringify(body.slice(-80))}`);
  const events = body.slice(0, -2).split('\n\n');
  assert.equal(events.at(-1), 'data: [DONE]', 'the last event is data: [DONE]');
  const chunks = [];
  for (const [i, ev] of events.slice(0, -1).entries()) {
    assert.ok(!ev.includes('\n'), `event ${i} is one line: ${JSON.stringify(ev)}`);
    assert.ok(ev.startsWith('data: '), `event ${i} starts with "data: ": ${JSON.stringify(ev)}`);
    assert.notEqual(ev, 'data: [DONE]', `[DONE] only once, at the end (event ${i})`);
    let chunk;
    assert.doesNotThrow(() => { chunk = JSON.parse(ev.slice(6)); }, `event ${i} is JSON: ${ev}`);
    chunks.push(chunk);
  }
  assert.ok(chunks.length > 0, 'at least one data chunk before [DONE]');
  return chunks;
}

function assertUsage(usage, { completionMax } = {}) {
  assert.ok(usage, 'usage present');
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, `prompt_tokens: ${JSON.stringify(usage)}`);
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0, `completion_tokens: ${JSON.stringify(usage)}`);
  if (completionMax) assert.ok(usage.completion_tokens <= completionMax, `completion_tokens <= ${completionMax}: ${JSON.stringify(usage)}`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 'total_tokens = prompt + completion');
}

function assertErrorObject(body, status) {
  assert.ok(body && typeof body.error === 'object', `OpenAI error object for ${status}: ${JSON.stringify(body)}`);
  for (const key of ['message', 'type', 'param', 'code']) {
    assert.ok(key in body.error, `error.${key} present (may be null): ${JSON.stringify(body)}`);
  }
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0, 'error.message is not empty');
}

async function expectAPIError(promise, ErrorClass, status) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${ErrorClass.name}, the request succeeded`);
  assert.ok(err instanceof ErrorClass, `expected ${ErrorClass.name} (${status}), got ${err.constructor.name}: ${err.status} ${err.message}`);
  assert.equal(err.status, status);
  return err;
}

// `text` continues fixture prompt `p` as llama2.c's greedy decoding does (prompt + text is a
// prefix of its full text; the completion keeps the first piece's leading space).
function assertGreedyContinuation(p, text) {
  assert.ok(text.length > 0, 'non-empty completion');
  assert.ok(p.greedy.full_text.startsWith(p.text + text),
    `${JSON.stringify(p.text)} + completion must be a prefix of llama2.c's greedy ${JSON.stringify(p.greedy.full_text)}; ` +
    `got completion ${JSON.stringify(text)}`);
}

function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length, 'same dimension');
  let m = 0;
  for (let i = 0; i < a.length; ++i) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function decodeBase64Floats(s) {
  const bytes = Buffer.from(s, 'base64');
  assert.equal(bytes.length % 4, 0, 'base64 embedding is a whole number of float32');
  const out = [];
  for (let i = 0; i < bytes.length; i += 4) out.push(bytes.readFloatLE(i));
  return out;
}

// ---------------------------------------------------------------------------------------------

describe(`${MODEL_NAME} with --chat-template`, () => {
  let server;
  let openai;
  const greedy = { model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 16, temperature: 0 };
  const chatRequest = {
    model: MODEL_NAME,
    messages: [
      { role: 'system', content: 'You tell stories.' },
      { role: 'user', content: 'Once upon a time' },
    ],
    max_tokens: 16,
    temperature: 0,
  };

  before(async () => {
    server = await startServer('stories', MODEL, ['--chat-template', CHAT_TEMPLATE]);
    openai = client(server);
  }, { timeout: START_TIMEOUT });
  after(async () => { await stopServer(server); });

  test('GET /health', { timeout: TEST_TIMEOUT }, async () => {
    const res = await fetch(`${server.url}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  });

  test('models.list names the served model', { timeout: TEST_TIMEOUT }, async () => {
    const page = await openai.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes(MODEL_NAME), `models: ${JSON.stringify(ids)}`);
    const m = page.data.find((x) => x.id === MODEL_NAME);
    assert.equal(m.object, 'model');
    assert.equal(typeof m.owned_by, 'string');
    assert.ok(Number.isInteger(m.created), `created: ${m.created}`);
  });

  let greedyText;
  test('completions: greedy text, usage, reference continuation', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.completions.create(greedy);
    assert.equal(res.object, 'text_completion');
    assert.equal(typeof res.id, 'string');
    assert.ok(Number.isInteger(res.created));
    assert.equal(res.model, MODEL_NAME);
    assert.equal(res.choices.length, 1);
    const [c] = res.choices;
    assert.equal(c.index, 0);
    assert.equal(c.finish_reason, 'length');
    assertGreedyContinuation(ONCE, c.text);
    assertUsage(res.usage, { completionMax: 16 });
    assert.equal(res.usage.completion_tokens, 16);
    assert.equal(res.usage.prompt_tokens, ONCE.ids.length, 'prompt tokens include BOS');
    greedyText = c.text;
  });

  test('completions: streamed text equals non-streamed, include_usage', { timeout: TEST_TIMEOUT }, async () => {
    const stream = await openai.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      assert.equal(chunk.object, 'text_completion');
      assert.equal(chunk.model, MODEL_NAME);
      if (chunk.usage) {
        assert.equal(usage, null, 'only one chunk carries usage');
        assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
        usage = chunk.usage;
        continue;
      }
      for (const c of chunk.choices) {
        assert.equal(c.index, 0);
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.ok(chunks > 2, `streamed in several chunks (${chunks})`);
    assert.equal(text, greedyText ?? (await openai.completions.create(greedy)).choices[0].text);
    assert.equal(finish, 'length');
    assertUsage(usage, { completionMax: 16 });
  });

  test('completions: stop sequence', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.completions.create({ ...greedy, max_tokens: 40, stop: [' Lily'] });
    const want = ONCE.greedy.text.slice(0, ONCE.greedy.text.indexOf(' Lily'));
    assert.equal(res.choices[0].text, want);
    assert.equal(res.choices[0].finish_reason, 'stop');
  });

  test('completions: prompt list and token-id prompt', { timeout: TEST_TIMEOUT }, async () => {
    const other = STORIES.prompts[1];
    const res = await openai.completions.create({ ...greedy, prompt: [ONCE.text, other.text] });
    assert.equal(res.choices.length, 2);
    const byIndex = Object.fromEntries(res.choices.map((c) => [c.index, c.text]));
    assertGreedyContinuation(ONCE, byIndex[0]);
    assertGreedyContinuation(other, byIndex[1]);
    assert.equal(res.usage.prompt_tokens, ONCE.ids.length + other.ids.length);
    // Token ids are the prompt as given (with the BOS the fixture lists).
    const ids = await openai.completions.create({ ...greedy, prompt: ONCE.ids });
    assert.equal(ids.choices[0].text, byIndex[0]);
    assert.equal(ids.usage.prompt_tokens, ONCE.ids.length);
  });

  test('completions: logprobs and echo', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.completions.create({ ...greedy, max_tokens: 8, logprobs: 2 });
    const [c] = res.choices;
    const lp = c.logprobs;
    assert.ok(lp, 'logprobs present');
    assert.equal(lp.tokens.length, 8);
    assert.equal(lp.token_logprobs.length, 8);
    assert.equal(lp.top_logprobs.length, 8);
    assert.equal(lp.text_offset.length, 8);
    assert.equal(lp.tokens.join(''), c.text, 'tokens concatenate to the text');
    for (let i = 0; i < 8; ++i) {
      assert.ok(lp.token_logprobs[i] <= 0, `token_logprobs[${i}] = ${lp.token_logprobs[i]}`);
      const top = lp.top_logprobs[i];
      assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3, `top_logprobs[${i}]: ${JSON.stringify(top)}`);
      const best = Math.max(...Object.values(top));
      assert.ok(Math.abs(best - lp.token_logprobs[i]) < 1e-4, `greedy token is the most likely (${i})`);
    }
    assert.equal(lp.text_offset[0], 0);
    for (let i = 1; i < 8; ++i) assert.equal(lp.text_offset[i], lp.text_offset[i - 1] + lp.tokens[i - 1].length);

    const echoed = await openai.completions.create({ ...greedy, max_tokens: 4, echo: true });
    assert.ok(echoed.choices[0].text.startsWith(ONCE.text), `echo: ${JSON.stringify(echoed.choices[0].text)}`);
    assert.ok(ONCE.greedy.full_text.startsWith(echoed.choices[0].text), `echo: ${JSON.stringify(echoed.choices[0].text)}`);
  });

  test('completions: seed reproducibility and n', { timeout: TEST_TIMEOUT }, async () => {
    const req = { model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 16, temperature: 1, top_p: 0.95, seed: 1234 };
    const a = await openai.completions.create(req);
    const b = await openai.completions.create(req);
    assert.equal(a.choices[0].text, b.choices[0].text, 'same seed, same text');
    const n = await openai.completions.create({ ...req, n: 2 });
    assert.equal(n.choices.length, 2);
    assert.deepEqual(n.choices.map((c) => c.index).sort(), [0, 1]);
    assert.ok(n.usage.completion_tokens > 0 && n.usage.completion_tokens <= 32, `usage: ${JSON.stringify(n.usage)}`);
  });

  let chatContent;
  test('chat.completions: plain', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.chat.completions.create(chatRequest);
    assert.equal(res.object, 'chat.completion');
    assert.equal(typeof res.id, 'string');
    assert.equal(res.model, MODEL_NAME);
    assert.equal(res.choices.length, 1);
    const [c] = res.choices;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(['stop', 'length'].includes(c.finish_reason), `finish_reason: ${c.finish_reason}`);
    assert.ok(res.usage, 'usage present');
    assert.ok(res.usage.prompt_tokens > 0);
    assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
    chatContent = c.message.content;
  });

  test('chat.completions: streamed deltas equal the plain content', { timeout: TEST_TIMEOUT }, async () => {
    const stream = await openai.chat.completions.create({ ...chatRequest, stream: true, stream_options: { include_usage: true } });
    let content = '';
    let first = true;
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) {
        assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
        usage = chunk.usage;
        continue;
      }
      for (const c of chunk.choices) {
        if (first) {
          assert.equal(c.delta.role, 'assistant', `first delta carries the role: ${JSON.stringify(chunk)}`);
          first = false;
        }
        if (c.delta.content) content += c.delta.content;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(first, false, 'at least one choice chunk');
    const plain = chatContent ?? (await openai.chat.completions.create(chatRequest)).choices[0].message.content;
    assert.equal(content, plain);
    assert.ok(['stop', 'length'].includes(finish), `finish_reason: ${finish}`);
    assert.ok(usage && usage.prompt_tokens > 0, `usage: ${JSON.stringify(usage)}`);
  });

  test('chat.completions: logprobs', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.chat.completions.create({ ...chatRequest, max_tokens: 6, logprobs: true, top_logprobs: 2 });
    const [c] = res.choices;
    const content = c.logprobs?.content;
    assert.ok(Array.isArray(content), `logprobs.content: ${JSON.stringify(c.logprobs)}`);
    assert.equal(content.length, res.usage.completion_tokens);
    assert.equal(content.map((t) => t.token).join(''), c.message.content, 'the tokens concatenate to the content');
    for (const t of content) {
      assert.ok(t.logprob <= 0);
      assert.equal(Buffer.from(t.bytes).toString('utf8'), t.token, 'bytes are the token\'s UTF-8');
      assert.ok(t.top_logprobs.length >= 1 && t.top_logprobs.length <= 2, JSON.stringify(t.top_logprobs));
      assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4, 'greedy token is the most likely');
    }
  });

  test('errors: unknown model -> 404 NotFoundError', { timeout: TEST_TIMEOUT }, async () => {
    const err = await expectAPIError(openai.completions.create({ ...greedy, model: 'no-such-model' }), NotFoundError, 404);
    assertErrorObject({ error: err.error }, 404);
    await expectAPIError(openai.chat.completions.create({ ...chatRequest, model: 'no-such-model' }), NotFoundError, 404);
    const raw = await fetch(`${server.url}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...greedy, model: 'no-such-model' }),
    });
    assert.equal(raw.status, 404);
    assert.match(raw.headers.get('content-type') ?? '', /^application\/json/);
    assertErrorObject(await raw.json(), 404);
    // A stream request that fails validation answers a plain JSON error, not an event stream.
    const streamed = await curlPost(server, '/v1/completions', { ...greedy, model: 'no-such-model', stream: true });
    assert.equal(streamed.status, 404, streamed.body);
    assert.match(streamed.contentType, /^application\/json/);
    assertErrorObject(JSON.parse(streamed.body), 404);
  });

  test('errors: max_tokens -1 -> 400 BadRequestError', { timeout: TEST_TIMEOUT }, async () => {
    const err = await expectAPIError(openai.completions.create({ ...greedy, max_tokens: -1 }), BadRequestError, 400);
    assertErrorObject({ error: err.error }, 400);
    await expectAPIError(openai.chat.completions.create({ ...chatRequest, max_tokens: -1 }), BadRequestError, 400);
  });

  test('raw SSE framing (curl): completions', { timeout: TEST_TIMEOUT }, async () => {
    const res = await curlPost(server, '/v1/completions', { ...greedy, stream: true });
    assert.equal(res.status, 200, res.body);
    assert.match(res.contentType, /^text\/event-stream/);
    const chunks = parseSSE(res.body);
    const text = chunks.flatMap((c) => c.choices.map((x) => x.text)).join('');
    assertGreedyContinuation(ONCE, text);
    assert.equal(chunks.filter((c) => c.choices.some((x) => x.finish_reason)).length, 1, 'one chunk has the finish_reason');
  });

  test('raw SSE framing (curl): chat completions', { timeout: TEST_TIMEOUT }, async () => {
    const res = await curlPost(server, '/v1/chat/completions', { ...chatRequest, stream: true });
    assert.equal(res.status, 200, res.body);
    assert.match(res.contentType, /^text\/event-stream/);
    const chunks = parseSSE(res.body);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  });
});

describe(`${EMBED_NAME}: embeddings`, () => {
  let server;
  let openai;
  const input = ['Hello world', 'The quick brown fox jumps over the lazy dog.'];

  before(async () => {
    server = await startServer('embeddings', EMBED_MODEL);
    openai = client(server);
  }, { timeout: START_TIMEOUT });
  after(async () => { await stopServer(server); });

  let floats;
  test('encoding_format float', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.embeddings.create({ model: EMBED_NAME, input, encoding_format: 'float' });
    assert.equal(res.object, 'list');
    assert.equal(res.model, EMBED_NAME);
    assert.equal(res.data.length, 2);
    res.data.forEach((d, i) => {
      assert.equal(d.object, 'embedding');
      assert.equal(d.index, i);
      assert.ok(Array.isArray(d.embedding) && d.embedding.every((x) => typeof x === 'number'));
    });
    const want = EXPECTED_EMBEDDINGS.single_short;
    assert.equal(res.data[0].embedding.length, want.shape[1]);
    assert.ok(maxAbsDiff(res.data[0].embedding, want.data) < 1e-4, 'matches sentence-transformers');
    assert.ok(res.usage && res.usage.prompt_tokens > 0, `usage: ${JSON.stringify(res.usage)}`);
    assert.equal(res.usage.total_tokens, res.usage.prompt_tokens);
    floats = res.data.map((d) => d.embedding);
  });

  test('encoding_format base64 decodes to the same vectors', { timeout: TEST_TIMEOUT }, async () => {
    const ref = floats ?? (await openai.embeddings.create({ model: EMBED_NAME, input, encoding_format: 'float' })).data.map((d) => d.embedding);
    const res = await openai.embeddings.create({ model: EMBED_NAME, input, encoding_format: 'base64' });
    assert.equal(res.data.length, 2);
    res.data.forEach((d, i) => {
      assert.equal(typeof d.embedding, 'string', 'base64 embeddings are strings');
      assert.ok(maxAbsDiff(decodeBase64Floats(d.embedding), ref[i]) <= 1e-6, `vector ${i}`);
    });
    // Without encoding_format the client asks for base64 and decodes it itself.
    const auto = await openai.embeddings.create({ model: EMBED_NAME, input });
    auto.data.forEach((d, i) => assert.ok(maxAbsDiff(d.embedding, ref[i]) <= 1e-6, `vector ${i} (client-decoded)`));
  });

  test('a single string input', { timeout: TEST_TIMEOUT }, async () => {
    const res = await openai.embeddings.create({ model: EMBED_NAME, input: 'Hello world', encoding_format: 'float' });
    assert.equal(res.data.length, 1);
    assert.ok(maxAbsDiff(res.data[0].embedding, EXPECTED_EMBEDDINGS.single_short.data) < 1e-4);
  });

  test('unknown model -> 404', { timeout: TEST_TIMEOUT }, async () => {
    await expectAPIError(openai.embeddings.create({ model: 'no-such-model', input }), NotFoundError, 404);
  });
});

describe(`${MODEL_NAME} with --api-key`, () => {
  let server;

  before(async () => {
    server = await startServer('api-key', MODEL, ['--api-key', 'sk-test']);
  }, { timeout: START_TIMEOUT });
  after(async () => { await stopServer(server); });

  test('a wrong key -> 401 AuthenticationError', { timeout: TEST_TIMEOUT }, async () => {
    const wrong = client(server, 'sk-wrong');
    const err = await expectAPIError(wrong.models.list(), AuthenticationError, 401);
    assertErrorObject({ error: err.error }, 401);
    await expectAPIError(wrong.completions.create({ model: MODEL_NAME, prompt: 'Hi', max_tokens: 2 }), AuthenticationError, 401);
    const none = await fetch(`${server.url}/v1/models`);
    assert.equal(none.status, 401, 'no Authorization header -> 401');
  });

  test('the right key is accepted', { timeout: TEST_TIMEOUT }, async () => {
    const right = client(server, 'sk-test');
    const page = await right.models.list();
    assert.ok(page.data.some((m) => m.id === MODEL_NAME));
    const res = await right.completions.create({ model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
    assertGreedyContinuation(ONCE, res.choices[0].text);
  });

  test('chat without a chat template -> 400 BadRequestError', { timeout: TEST_TIMEOUT }, async () => {
    const right = client(server, 'sk-test');
    const err = await expectAPIError(right.chat.completions.create({
      model: MODEL_NAME, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4,
    }), BadRequestError, 400);
    assertErrorObject({ error: err.error }, 400);
  });
});

describe('SIGTERM', () => {
  let server;
  before(async () => { server = await startServer('sigterm', MODEL); }, { timeout: START_TIMEOUT });
  after(async () => { await stopServer(server); });

  test('finishes the running stream and exits 0', { timeout: TEST_TIMEOUT }, async () => {
    // A long stream; SIGTERM as soon as its first event arrived.
    const proc = spawn('curl', ['-sSN', '--noproxy', '*', '--max-time', '50', '-X', 'POST', `${server.url}/v1/completions`,
      '-H', 'Content-Type: application/json', '--data-binary',
      JSON.stringify({ model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true })],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let body = '';
    let signalled = false;
    proc.stdout.setEncoding('utf8');
    const curlDone = new Promise((resolve) => proc.on('close', resolve));
    proc.stdout.on('data', (c) => {
      body += c;
      if (!signalled && body.includes('\n\n')) {
        signalled = true;
        server.proc.kill('SIGTERM');
      }
    });
    const curlCode = await curlDone;
    assert.ok(signalled, `the stream started: ${body.slice(0, 200)}`);
    assert.equal(curlCode, 0, 'curl completed');
    const chunks = parseSSE(body);
    assert.ok(chunks.length > 1);
    let timer;
    const status = await Promise.race([server.exited,
      new Promise((r) => { timer = setTimeout(() => r('timeout'), 20_000); })]);
    clearTimeout(timer);
    assert.notEqual(status, 'timeout', 'exits within 20 s of SIGTERM');
    assert.deepEqual({ code: status.code, signal: status.signal }, { code: 0, signal: null });
  });
});
