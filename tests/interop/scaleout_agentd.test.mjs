// Two agentd instances sharing one Redis (the one scripts/test starts, AGENTD_TEST_REDIS_URL):
// a client's rate limit and budget hold across both, a cached answer from one is a hit on the
// other, and /readyz names the backend. Driven with the official openai SDK; fake_llm is the
// provider. AGENTD_BIN and FAKE_LLM_BIN name the binaries.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';

import { AGENTD_LISTENING, FAKE_LLM_LISTENING, startPrinting, stopAll } from './children.mjs';

const TOKEN = 'sk-agentd-scaleout-0123456789';
const CAPPED = 'sk-agentd-scaleout-capped-0123';
const ADMIN = 'sk-agentd-scaleout-admin-0123';
const UPSTREAM_KEY = 'sk-fake-upstream-scaleout';
const children = [];
let fake;
let a;
let b;
let dir;

const start = (bin, args, re, name) => startPrinting(children, bin, args, re, name);

before(async () => {
  for (const v of ['AGENTD_BIN', 'FAKE_LLM_BIN']) assert.ok(process.env[v], `set ${v}`);
  assert.ok(process.env.AGENTD_TEST_REDIS_URL,
    'set AGENTD_TEST_REDIS_URL: scripts/test starts a Redis server for this test');
  fake = await start(process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY],
    FAKE_LLM_LISTENING, 'fake_llm');
  dir = mkdtempSync(join(tmpdir(), 'agentd-scaleout-'));
  // A prefix of its own: the shared Redis may hold other tests' keys.
  const prefix = `agentd-scaleout-${randomBytes(6).toString('hex')}:`;
  const config = (name) => `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: lobechat, token: ${TOKEN}, scopes: ["models:*"] }
  - { name: capped, token: ${CAPPED}, scopes: ["models:*"] }
  - { name: ops, token: ${ADMIN}, scopes: ["admin"] }
log: { level: warn, access_log: false }
store: { data_dir: ${join(dir, name)}, redis: "${process.env.AGENTD_TEST_REDIS_URL}", redis_prefix: "${prefix}" }
ai:
  providers:
    - { name: oai, kind: openai, base_url: "${fake}/v1", api_key: ${UPSTREAM_KEY} }
  models:
    - { name: fast, targets: [oai/gpt-4o-mini] }
  cache: { enabled: true, ttl: 5m }
  retry: { attempts: 1 }
  limits:
    capped: { rpm: 3 }
`;
  for (const name of ['a', 'b']) writeFileSync(join(dir, `${name}.yaml`), config(name));
  const re = AGENTD_LISTENING;
  a = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'a.yaml')], re, 'agentd a');
  b = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'b.yaml')], re, 'agentd b');
});

after(async () => {
  await stopAll(children);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const client = (base, apiKey = TOKEN) => new OpenAI({ apiKey, baseURL: `${base}/v1`, maxRetries: 0 });

test('both instances report the Redis backend in /readyz', async () => {
  for (const base of [a, b]) {
    const res = await fetch(`${base}/readyz`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.match(JSON.stringify(body), /cache redis/);
  }
});

test('an answer cached by one instance is a cache hit on the other', async () => {
  const req = { model: 'fast', messages: [{ role: 'user', content: 'cache me across instances' }] };
  const first = await client(a).chat.completions.create(req).withResponse();
  assert.equal(first.response.headers.get('x-agentd-cache'), 'miss');
  const second = await client(b).chat.completions.create(req).withResponse();
  assert.equal(second.response.headers.get('x-agentd-cache'), 'hit');
  assert.equal(second.data.choices[0].message.content, first.data.choices[0].message.content);
});

test('a client\'s requests per minute are counted across instances', async () => {
  // Windows are fixed minutes: keep the four requests inside one.
  const intoMinute = Date.now() % 60000;
  if (intoMinute > 55000) await new Promise((r) => setTimeout(r, 60500 - intoMinute));
  const ask = (base, i) => client(base, CAPPED).chat.completions.create({
    model: 'fast', messages: [{ role: 'user', content: `limit ${i}` }] });
  await ask(a, 1);
  await ask(b, 2);
  await ask(a, 3);
  const err = await ask(b, 4).then(() => null, (e) => e);
  assert.ok(err, 'the fourth request in the minute, on the other instance, must be refused');
  assert.equal(err.status, 429);
  assert.ok(Number(err.headers.get('retry-after')) > 0);
});
