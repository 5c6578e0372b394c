// One `plugformer serve` process for the node tests (openai/, soak/): started on 127.0.0.1 with
// --port 0, its output drained into a log file for its whole life, ready once it printed its
// listening line (which names the port it got).
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';

// Starts `bin serve model --host 127.0.0.1 --port 0 ...extra` and resolves to the server:
// { proc, url, port, logFile, output (the last `outputLimit` characters kept), exitStatus (null
// while it runs), exited (a promise of { code, signal }) }. Rejects, the process killed, when it
// exits or stays silent for `startTimeoutMs` first; the error quotes the command and its output.
// `onExit(code, signal)` runs when the process exits at any time. PLUGFORMER_API_KEY is dropped
// from the environment (serve would require it) unless `env` sets it.
export function startServe({ bin, model, extra = [], logFile, env = {}, startTimeoutMs, outputLimit = 1_000_000,
  onExit = null }) {
  const args = ['serve', model, '--host', '127.0.0.1', '--port', '0', ...extra];
  const command = `$ ${bin} ${args.join(' ')}`;
  const log = createWriteStream(logFile);
  log.write(`${command}\n`);
  const childEnv = { ...process.env };
  delete childEnv.PLUGFORMER_API_KEY;
  Object.assign(childEnv, env);
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
  const server = { proc, logFile, url: null, port: 0, exitStatus: null, output: '' };
  server.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      server.exitStatus = { code, signal };
      log.end(`\n[exit code ${code} signal ${signal}]\n`);
      if (onExit) onExit(code, signal);
      resolve(server.exitStatus);
    });
  });
  const keep = (chunk) => {
    log.write(chunk);
    if (server.output.length < outputLimit) server.output += chunk;
  };
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', keep);
  return new Promise((resolve, reject) => {
    let pending = '';
    let done = false;
    const fail = (msg) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (server.exitStatus === null) proc.kill('SIGKILL');
      reject(new Error(`${msg}\n${command}\n--- output (${logFile}) ---\n${server.output.slice(-4000)}`));
    };
    const timer = setTimeout(() => fail(`no listening line within ${startTimeoutMs / 1000} s`), startTimeoutMs);
    proc.stdout.on('data', (chunk) => {
      keep(chunk);
      if (done) return;
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const m = /^plugformer serve: listening on (http:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
        if (!m) continue;
        if (Number(m[2]) === 0) return fail(`listening line names port 0: ${line}`);
        done = true;
        clearTimeout(timer);
        server.url = m[1];
        server.port = Number(m[2]);
        return resolve(server);
      }
    });
    proc.on('error', (err) => fail(`cannot start ${bin}: ${err.message}`));
    proc.on('exit', (code, signal) => fail(`exited (code ${code}, signal ${signal}) before its listening line`));
  });
}
