// Two agentd instances sharing one Redis (AGENTD_TEST_REDIS_URL) and one E2B account (the
// fake_e2b double): an agent's session keeps its e2b sandbox across intents; the other
// instance's periodic sweep leaves that live peer's sandbox alone, and kills it once the peer
// is SIGKILLed and its run is no longer announced in Redis. fake_llm scripts the model.
// AGENTD_BIN, FAKE_LLM_BIN and FAKE_E2B_BIN name the binaries.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import {
  AGENTD_LISTENING, FAKE_LLM_LISTENING, control, runIntent as runIntentAt, startPrinting, stopAll,
} from './children.mjs';

const TOKEN = 'sk-agentd-sbx-scaleout-0123456789';
const UPSTREAM_KEY = 'sk-fake-upstream-sbx-scaleout';
const ADMIN = 'sk-agentd-sbx-scaleout-admin-0123';
const E2B_KEY = 'e2b_fake_scaleout_0123456789';
const children = [];
let llm;
let e2b;
let a;
let b;
let dir;

const start = (bin, args, re, name) => startPrinting(children, bin, args, re, name);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sandboxes = () => control(e2b, '/_fake/sandboxes');
const runIntent = (base, body) => runIntentAt(base, TOKEN, body);

before(async () => {
  for (const v of ['AGENTD_BIN', 'FAKE_LLM_BIN', 'FAKE_E2B_BIN']) assert.ok(process.env[v], `set ${v}`);
  assert.ok(process.env.AGENTD_TEST_REDIS_URL,
    'set AGENTD_TEST_REDIS_URL: scripts/test starts a Redis server for this test');
  llm = await start(process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY], FAKE_LLM_LISTENING, 'fake_llm');
  e2b = await start(process.env.FAKE_E2B_BIN, ['--api-key', E2B_KEY],
    /^fake_e2b listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'fake_e2b');
  dir = mkdtempSync(join(tmpdir(), 'agentd-sbx-scaleout-'));
  const prefix = `agentd-sbx-scaleout-${randomBytes(6).toString('hex')}:`;
  const config = (name) => `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: lobechat, token: ${TOKEN}, scopes: ["agents:*", "sandbox"] }
  - { name: ops, token: ${ADMIN}, scopes: ["admin"] }
log: { level: warn, access_log: false }
store: { data_dir: ${join(dir, name)}, redis: "${process.env.AGENTD_TEST_REDIS_URL}", redis_prefix: "${prefix}" }
ai:
  providers: [ { name: oai, kind: openai, base_url: "${llm}/v1", api_key: ${UPSTREAM_KEY} } ]
  retry: { attempts: 1 }
  cache: { enabled: false }
sandbox:
  backend: e2b
  scope: session
  session_idle: 10m
  sweep_interval: 1s
  e2b: { api_key: ${E2B_KEY}, api_url: "${e2b}", sandbox_url: "${e2b}" }
agents:
  - { name: coder, model: oai/gpt-4o, instruction: "You write and run code.", sandbox: true }
`;
  for (const name of ['a', 'b']) writeFileSync(join(dir, `${name}.yaml`), config(name));
  a = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'a.yaml')], AGENTD_LISTENING, 'agentd a');
  b = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'b.yaml')], AGENTD_LISTENING, 'agentd b');
});

after(async () => {
  await stopAll(children);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a session keeps its e2b sandbox; a peer leaves it alone while its instance lives, and sweeps it once that instance died', async () => {
  await control(llm, '/_fake/script', [
    { tool_calls: [{ name: 'sandbox__write_file', arguments: { path: 'note.txt', content: 'from the first intent' } }] },
    { text: 'Wrote it.' },
    { tool_calls: [{ name: 'sandbox__exec', arguments: { cmd: 'cat note.txt' } }] },
    { text: 'Read it.' },
  ]);
  const first = await runIntent(a, { intent: 'write a note', agent: 'coder', session_id: 'team-1' });
  assert.equal(first.at(-1).type, 'intent.completed', JSON.stringify(first.at(-1)));
  const created = first.filter((e) => e.type === 'sandbox.created');
  assert.equal(created.length, 1);
  assert.equal(created[0].backend, 'e2b');
  const id = created[0].sandbox_id;

  const second = await runIntent(a, { intent: 'read the note', agent: 'coder', session_id: 'team-1' });
  assert.equal(second.at(-1).type, 'intent.completed', JSON.stringify(second.at(-1)));
  assert.equal(second.filter((e) => e.type === 'sandbox.created').length, 0, 'the session\'s sandbox is reused');
  const out = second.filter((e) => e.type === 'tool.output').map((e) => e.data).join('');
  assert.match(out, /from the first intent/);

  // The sandbox outlives the intents (it is the session's), and carries agentd's marks.
  let listed = await sandboxes();
  const mine = listed.find((s) => s.sandboxID === id);
  assert.ok(mine, JSON.stringify(listed));
  assert.equal(mine.metadata.agentd, '1');
  assert.equal(mine.metadata.agentd_owner, 'session:team-1');
  assert.match(mine.metadata.agentd_run, /^[0-9a-f]{32}$/);

  // b restarts (its start-up clean-up used to kill every sandbox of another run), then sweeps
  // every second: a's sandbox is a live peer's and stays.
  const cb = children[3];
  cb.removeAllListeners('exit');
  const stopped = new Promise((r) => cb.once('exit', r));
  cb.kill('SIGTERM');
  await stopped;
  b = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'b.yaml')], AGENTD_LISTENING, 'agentd b again');
  await sleep(3500);
  listed = await sandboxes();
  assert.ok(listed.some((s) => s.sandboxID === id), 'a live peer\'s sandbox was killed by the sweep');

  // a dies without cleaning up; its run's key expires (3 beats of 1 s) and b's sweep kills
  // the sandbox it left.
  const ca = children[2];
  ca.removeAllListeners('exit');  // startPrinting's "exited early" handler
  const exited = new Promise((r) => ca.once('exit', r));
  ca.kill('SIGKILL');
  await exited;
  const t0 = Date.now();
  while (Date.now() - t0 < 15000) {
    listed = await sandboxes();
    if (!listed.some((s) => s.sandboxID === id)) break;
    await sleep(250);
  }
  assert.ok(!listed.some((s) => s.sandboxID === id), 'the dead instance\'s sandbox was not swept');
  const res = await fetch(`${b}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.match(await res.text(), /agentd_sandbox_leftovers_killed_total\{backend="e2b"\} 1/);
});
