// The official `e2b` npm SDK against the fake_e2b binary: proves the double speaks E2B's
// control-plane REST API and envd's Connect protocol as the SDK uses them. The SDK is pointed
// at the double with apiUrl and sandboxUrl (plain http on 127.0.0.1). FAKE_E2B_BIN names the
// binary.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { Sandbox, CommandExitError, AuthenticationError, NotFoundError, SandboxError } from 'e2b';

import { startPrinting, stopAll } from './children.mjs';

const KEY = 'e2b_sdk_test_key';
const children = [];
let base; // http://127.0.0.1:PORT

const opts = (extra = {}) => ({ apiKey: KEY, apiUrl: base, sandboxUrl: base, domain: 'e2b.test', ...extra });

async function control(path, body) {
  const res = await fetch(base + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return res.json();
}
const script = (...faults) => control('/_fake/script', faults);
const recorded = () => control('/_fake/requests');

before(async () => {
  const bin = process.env.FAKE_E2B_BIN;
  assert.ok(bin, 'set FAKE_E2B_BIN to the fake_e2b binary');
  // Keepalive events every 100 ms: the SDK must skip them in every stream below.
  base = await startPrinting(children, bin, ['--api-key', KEY, '--keepalive-ms', '100'],
    /^fake_e2b listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'fake_e2b');
});

after(async () => {
  await stopAll(children);
});

beforeEach(async () => {
  await control('/_fake/reset', {});
});

test('create, run a command with streamed stdout, files, setTimeout, kill', async () => {
  const sbx = await Sandbox.create('base', opts({ timeoutMs: 60_000, metadata: { owner: 'sdk-test' }, envs: { GREETING: 'hi' } }));
  assert.match(sbx.sandboxId, /^i[0-9a-f]+$/);

  const reqs = await recorded();
  const create = reqs.find((r) => r.method === 'POST' && r.path === '/v2/sandboxes');
  assert.ok(create, 'POST /v2/sandboxes');
  assert.equal(create.headers['x-api-key'], KEY);
  const body = JSON.parse(create.body);
  assert.equal(body.templateID, 'base');
  assert.equal(body.timeout, 60);
  assert.deepEqual(body.metadata, { owner: 'sdk-test' });
  assert.deepEqual(body.envVars, { GREETING: 'hi' });

  // Streamed: the first line reaches onStdout well before the command ends.
  const chunks = [];
  const started = Date.now();
  const res = await sbx.commands.run('echo "$GREETING one"; echo oops >&2; sleep 0.4; echo two', {
    onStdout: (d) => chunks.push({ d, at: Date.now() - started }),
  });
  const ended = Date.now() - started;
  assert.equal(res.exitCode, 0);
  assert.equal(res.stdout, 'hi one\ntwo\n');
  assert.equal(res.stderr, 'oops\n');
  assert.ok(chunks.length >= 2, `stdout came in pieces: ${JSON.stringify(chunks)}`);
  assert.equal(chunks[0].d, 'hi one\n');
  assert.ok(ended - chunks[0].at >= 300, `first piece ${chunks[0].at} ms, end ${ended} ms`);

  const start = (await recorded()).find((r) => r.path === '/process.Process/Start');
  assert.equal(start.headers['e2b-sandbox-id'], sbx.sandboxId);
  assert.equal(start.headers['e2b-sandbox-port'], '49983');
  assert.ok(start.headers['x-access-token'], 'X-Access-Token sent');
  assert.match(start.headers['content-type'], /^application\/connect\+json/);
  assert.equal(start.headers['connect-protocol-version'], '1');

  // Exit codes.
  await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (e) => {
    assert.ok(e instanceof CommandExitError);
    assert.equal(e.exitCode, 3);
    assert.equal(e.stderr, 'bad\n');
    return true;
  });

  // Files: write (multipart) and read back, by the SDK and by a command.
  await sbx.files.write('/home/user/hello.txt', 'hello from the sdk\n');
  assert.equal(await sbx.files.read('/home/user/hello.txt'), 'hello from the sdk\n');
  assert.equal((await sbx.commands.run('cat hello.txt')).stdout, 'hello from the sdk\n');
  await sbx.files.write('notes/a.txt', 'relative');
  assert.equal(await sbx.files.read('/home/user/notes/a.txt'), 'relative');
  const listed = await sbx.files.list('/home/user');
  const names = listed.map((e) => `${e.name}:${e.type}`).sort();
  assert.deepEqual(names, ['hello.txt:file', 'notes:dir']);
  assert.equal(listed.find((e) => e.name === 'hello.txt').size, 19);
  assert.equal(await sbx.files.exists('/home/user/nope.txt'), false);
  await sbx.files.remove('/home/user/hello.txt');
  await assert.rejects(sbx.files.read('/home/user/hello.txt'), NotFoundError);

  // stdin: a background command fed and closed.
  const cat = await sbx.commands.run('cat', { background: true, stdin: true });
  await cat.sendStdin('piped text\n');
  await cat.closeStdin();
  const catDone = await cat.wait();
  assert.equal(catDone.stdout, 'piped text\n');

  // kill of a running command: SendSignal SIGKILL.
  const sleeper = await sbx.commands.run('sleep 30', { background: true });
  assert.equal(await sbx.commands.kill(sleeper.pid), true);
  await assert.rejects(sleeper.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1);

  // setTimeout moves endAt.
  const before = await Sandbox.getInfo(sbx.sandboxId, opts());
  await sbx.setTimeout(600_000);
  const afterInfo = await Sandbox.getInfo(sbx.sandboxId, opts());
  assert.ok(afterInfo.endAt.getTime() > before.endAt.getTime() + 400_000);
  assert.equal(afterInfo.state, 'running');
  assert.deepEqual(afterInfo.metadata, { owner: 'sdk-test' });

  await sbx.kill();
  assert.equal(await Sandbox.kill(sbx.sandboxId, opts()), false, 'a second kill finds nothing');
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId, opts()), NotFoundError);
});

test('list pages with x-next-token', async () => {
  const a = await Sandbox.create('base', opts({ metadata: { suite: 'paging' } }));
  const b = await Sandbox.create('base', opts({ metadata: { suite: 'paging' } }));
  const c = await Sandbox.create('base', opts({ metadata: { suite: 'paging' } }));
  const paginator = Sandbox.list(opts({ limit: 2, query: { metadata: { suite: 'paging' } } }));
  const seen = [];
  let pages = 0;
  while (paginator.hasNext) {
    seen.push(...(await paginator.nextItems()).map((s) => s.sandboxId));
    pages += 1;
  }
  assert.equal(pages, 2);
  assert.deepEqual(seen.sort(), [a.sandboxId, b.sandboxId, c.sandboxId].sort());
  const lists = (await recorded()).filter((r) => r.method === 'GET' && r.path === '/v2/sandboxes');
  assert.match(lists[1].query, /nextToken=2/);
  for (const s of [a, b, c]) await s.kill();
});

test('pause and resume (connect)', async () => {
  const sbx = await Sandbox.create('base', opts());
  assert.equal(await sbx.pause(), true);
  assert.equal((await Sandbox.getInfo(sbx.sandboxId, opts())).state, 'paused');
  const again = await Sandbox.connect(sbx.sandboxId, opts());
  assert.equal((await Sandbox.getInfo(sbx.sandboxId, opts())).state, 'running');
  assert.equal((await again.commands.run('echo back')).stdout, 'back\n');
  await again.kill();
});

test('a wrong key is refused with 401', async () => {
  await assert.rejects(Sandbox.create('base', opts({ apiKey: 'e2b_wrong' })), AuthenticationError);
});

test('429 with Retry-After is retried by the SDK', async () => {
  await script({ method: 'POST', path: '/v2/sandboxes', status: 429, retry_after: 0, message: 'slow down' });
  const sbx = await Sandbox.create('base', opts());
  const creates = (await recorded()).filter((r) => r.method === 'POST' && r.path === '/v2/sandboxes');
  assert.equal(creates.length, 2);
  await sbx.kill();
});

test('an end-of-stream error in a process stream reaches the caller', async () => {
  const sbx = await Sandbox.create('base', opts());
  await script({ path: '/process.Process/Start', end_error: { code: 'internal', message: 'envd broke', after: 1 } });
  await assert.rejects(sbx.commands.run('echo a; sleep 0.2; echo b'), (e) => {
    assert.ok(e instanceof SandboxError, String(e));
    assert.match(e.message, /envd broke/);
    return true;
  });
  await sbx.kill();
});
