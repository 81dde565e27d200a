// Child processes for the interop tests: start a program and wait for the URL it prints,
// stop them all at the end; and the requests the tests make of them (a double's control
// routes, an intent run to its end).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

// Spawns `bin` and resolves with the first capture of `re` in a stdout line (e.g. the URL of
// "agentd listening on http://..."). The child is added to `children` for stopAll().
export function startPrinting(children, bin, args, re, name) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 60s`)), 60000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${name} exited early (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = re.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

// SIGTERM to every child still running, newest first, waiting for each to exit.
export async function stopAll(children) {
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    child.removeAllListeners('exit');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

export const AGENTD_LISTENING = /^agentd listening on (http:\/\/127\.0\.0\.1:\d+)$/;
export const FAKE_LLM_LISTENING = /^fake_llm listening on (http:\/\/127\.0\.0\.1:\d+)$/;

// A test double's control route (`/_fake/...`): GET without a body, POST with one; 200 expected.
export async function control(base, path, body) {
  const res = await fetch(base + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

// POST /v1/intents with Accept: text/event-stream, read to the end: the events' data objects.
export async function runIntent(base, token, body) {
  const res = await fetch(`${base}/v1/intents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const events = [];
  for (const block of (await res.text()).split('\n\n')) {
    const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('');
    if (data) events.push(JSON.parse(data));
  }
  return events;
}
