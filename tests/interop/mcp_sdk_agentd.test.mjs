// The official @modelcontextprotocol/sdk client connecting to agentd's /mcp, with real MCP
// servers behind agentd (server-everything and the SDK-built test server, both over stdio):
// namespaced tools, calls, progress, cancellation, scopes, list_changed. AGENTD_BIN names
// the binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const here = dirname(fileURLToPath(import.meta.url));
const FULL = 'mcp-interop-full-token-0123';
const NARROW = 'mcp-interop-narrow-token-01';
let child;
let base;
let dir;

before(async () => {
  assert.ok(process.env.AGENTD_BIN, 'set AGENTD_BIN');
  dir = mkdtempSync(join(tmpdir(), 'agentd-mcp-interop-'));
  writeFileSync(join(dir, 'agentd.yaml'), `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: full, token: ${FULL}, scopes: ["mcp:*"] }
  - { name: narrow, token: ${NARROW}, scopes: ["mcp:test/echo"] }
log: { level: warn, access_log: false }
store: { data_dir: ${dir} }
mcp:
  servers:
    - name: everything
      transport: stdio
      command: node
      args: [${here}/node_modules/@modelcontextprotocol/server-everything/dist/index.js, stdio]
    - name: test
      transport: stdio
      command: node
      args: [${here}/mcp_test_server.mjs]
      cwd: ${here}
`);
  child = spawn(process.env.AGENTD_BIN, ['-c', join(dir, 'agentd.yaml')], { stdio: ['ignore', 'pipe', 'inherit'] });
  base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('agentd did not start in 60s')), 60000);
    child.once('exit', (code) => reject(new Error(`agentd exited early (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^agentd listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
});

after(async () => {
  if (child && child.exitCode === null) {
    child.removeAllListeners('exit');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function connect(token) {
  const client = new Client({ name: 'interop', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

// The upstream servers start in the background: wait until their tools are listed.
async function toolNames(client, want, limitMs = 30000) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const names = (await client.listTools()).tools.map((t) => t.name);
    if (want.every((w) => names.includes(w)) || Date.now() > deadline) return names;
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('lists and calls namespaced tools of real servers', async () => {
  const client = await connect(FULL);
  const names = await toolNames(client, ['everything__echo', 'test__echo', 'test__sleep']);
  assert.ok(names.includes('everything__echo'), names.join(','));
  assert.ok(names.includes('test__sleep'));
  const echo = await client.callTool({ name: 'everything__echo', arguments: { message: 'via agentd' } });
  assert.equal(echo.content[0].text, 'Echo: via agentd');
  const mine = await client.callTool({ name: 'test__echo', arguments: { text: 'hello' } });
  assert.equal(mine.content[0].text, 'hello');
  const failed = await client.callTool({ name: 'test__fail', arguments: {} });
  assert.equal(failed.isError, true);
  await assert.rejects(client.callTool({ name: 'nosuch__tool', arguments: {} }), /unknown tool/i);
  await client.close();
});

test('progress is relayed and cancellation reaches the upstream', async () => {
  const client = await connect(FULL);
  await toolNames(client, ['test__sleep']);
  const progress = [];
  const slept = await client.callTool({ name: 'test__sleep', arguments: { ms: 500 } }, undefined, {
    onprogress: (p) => progress.push(p.progress),
  });
  assert.equal(slept.content[0].text, 'slept 500');
  assert.ok(progress.length >= 3, `progress events: ${progress.length}`);

  const abort = new AbortController();
  setTimeout(() => abort.abort('enough'), 300);
  const started = Date.now();
  await assert.rejects(client.callTool({ name: 'test__sleep', arguments: { ms: 10000 } }, undefined,
    { signal: abort.signal }));
  assert.ok(Date.now() - started < 5000);
  // The session still works afterwards.
  const after = await client.callTool({ name: 'test__echo', arguments: { text: 'after' } });
  assert.equal(after.content[0].text, 'after');
  await client.close();
});

test('a client sees and calls only what its scopes allow', async () => {
  const full = await connect(FULL);
  await toolNames(full, ['test__echo']);
  await full.close();
  const narrow = await connect(NARROW);
  const names = (await narrow.listTools()).tools.map((t) => t.name);
  assert.deepEqual(names, ['test__echo']);
  await assert.rejects(narrow.callTool({ name: 'test__sleep', arguments: { ms: 1 } }), /unknown tool/i);
  const ok = await narrow.callTool({ name: 'test__echo', arguments: { text: 'allowed' } });
  assert.equal(ok.content[0].text, 'allowed');
  await narrow.close();
});

test('list_changed from an upstream reaches the client', async () => {
  const client = await connect(FULL);
  await toolNames(client, ['test__grow']);
  const changed = new Promise((resolve) =>
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve(true)));
  await client.callTool({ name: 'test__grow', arguments: {} });
  const timeout = new Promise((resolve) => setTimeout(() => resolve(false), 10000));
  assert.equal(await Promise.race([changed, timeout]), true);
  const names = await toolNames(client, ['test__extra'], 10000);
  assert.ok(names.includes('test__extra'));
  await client.close();
});

test('a bad token is refused before any MCP exchange', async () => {
  await assert.rejects(connect('wrong-token-0000000000000'), /401|Unauthorized|invalid/i);
});
