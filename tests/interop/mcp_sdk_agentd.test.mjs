// The official @modelcontextprotocol/sdk client connecting to agentd's /mcp, with real MCP
// servers behind agentd (server-everything and the SDK-built test server, both over stdio):
// namespaced tools, calls, progress, cancellation, scopes, list_changed, resources, prompts,
// sampling (answered through agentd's AI layer by the fake_llm provider double), elicitation
// relayed to the client, argument policies. AGENTD_BIN and FAKE_LLM_BIN name the binaries.
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
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const here = dirname(fileURLToPath(import.meta.url));
const FULL = 'mcp-interop-full-token-0123';
const NARROW = 'mcp-interop-narrow-token-01';
const UPSTREAM_KEY = 'sk-fake-upstream-key-0123';
let child;
let fakeChild;
let fake;
let base;
let dir;

// Spawns a program and resolves with the first URL printed on a line matching `re`.
function started(proc, re, name) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 60s`)), 60000);
    proc.once('exit', (code) => reject(new Error(`${name} exited early (${code})`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = re.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

before(async () => {
  assert.ok(process.env.AGENTD_BIN, 'set AGENTD_BIN');
  assert.ok(process.env.FAKE_LLM_BIN, 'set FAKE_LLM_BIN');
  fakeChild = spawn(process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY], { stdio: ['ignore', 'pipe', 'inherit'] });
  fake = await started(fakeChild, /^fake_llm listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'fake_llm');
  dir = mkdtempSync(join(tmpdir(), 'agentd-mcp-interop-'));
  writeFileSync(join(dir, 'agentd.yaml'), `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: full, token: ${FULL}, scopes: ["mcp:*"] }
  - { name: narrow, token: ${NARROW}, scopes: ["mcp:test/echo"] }
log: { level: warn, access_log: false }
store: { data_dir: ${dir} }
ai:
  providers:
    - { name: oai, kind: openai, base_url: "${fake}/v1", api_key: ${UPSTREAM_KEY} }
  models:
    - { name: sampler, targets: [oai/gpt-4o-mini] }
mcp:
  sampling: { model: sampler, max_tokens: 256 }
  policies:
    - name: no-rm
      tools: ["test__echo"]
      argument: text
      deny_patterns: ['rm\\s+-rf']
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
  base = await started(child, /^agentd listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'agentd');
});

after(async () => {
  for (const proc of [child, fakeChild]) {
    if (!proc || proc.exitCode !== null) continue;
    proc.removeAllListeners('exit');
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function connect(token, capabilities = {}) {
  const client = new Client({ name: 'interop', version: '1.0.0' }, { capabilities });
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

test('resources and prompts of the upstreams are listed, read and fetched', async () => {
  const client = await connect(FULL);
  await toolNames(client, ['everything__echo']);
  const { resources } = await client.listResources();
  const doc = resources.find((r) => r.uri.startsWith('demo://resource/static/document/'));
  assert.ok(doc, JSON.stringify(resources.map((r) => r.uri)));
  const read = await client.readResource({ uri: doc.uri });
  assert.equal(read.contents[0].uri, doc.uri);
  const { resourceTemplates } = await client.listResourceTemplates();
  assert.ok(resourceTemplates.some((t) => t.uriTemplate === 'demo://resource/dynamic/text/{resourceId}'));
  const dynamic = await client.readResource({ uri: 'demo://resource/dynamic/text/3' });
  assert.equal(dynamic.contents[0].uri, 'demo://resource/dynamic/text/3');
  await assert.rejects(client.readResource({ uri: 'nope://missing' }), /not found/i);
  const { prompts } = await client.listPrompts();
  assert.ok(prompts.some((p) => p.name === 'everything__simple-prompt'), JSON.stringify(prompts));
  const prompt = await client.getPrompt({ name: 'everything__simple-prompt' });
  assert.ok(prompt.messages.length > 0);
  await client.close();
});

test('a server\'s sampling request is answered through the AI routing layer', async () => {
  const client = await connect(FULL);
  await toolNames(client, ['everything__trigger-sampling-request']);
  const r = await client.callTool({ name: 'everything__trigger-sampling-request',
    arguments: { prompt: 'sample me', maxTokens: 20 } });
  // fake_llm answers "echo: <last user message>"; server-everything shows the result.
  const text = r.content.map((c) => c.text).join('\n');
  assert.match(text, /echo: Resource trigger-sampling-request context: sample me/);
  assert.match(text, /"role": "assistant"/);
  await client.close();
});

test('a server\'s elicitation is relayed to the client that made the call', async () => {
  const client = await connect(FULL, { elicitation: {} });
  let asked;
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked = req.params;
    return { action: 'accept', content: { name: 'Grace Hopper', check: true } };
  });
  await toolNames(client, ['everything__trigger-elicitation-request']);
  const r = await client.callTool({ name: 'everything__trigger-elicitation-request', arguments: {} });
  assert.ok(asked && asked.requestedSchema, 'the client was asked');
  const text = r.content.map((c) => c.text).join('\n');
  assert.match(text, /Grace Hopper/);
  await client.close();

  // A client without the capability is not asked: agentd declines for it.
  const plain = await connect(FULL);
  const d = await plain.callTool({ name: 'everything__trigger-elicitation-request', arguments: {} });
  assert.match(d.content.map((c) => c.text).join('\n'), /declined/);
  await plain.close();
});

test('an argument policy denies a call before it leaves agentd, naming the rule', async () => {
  const client = await connect(FULL);
  await toolNames(client, ['test__echo']);
  await assert.rejects(client.callTool({ name: 'test__echo', arguments: { text: 'please rm -rf /' } }),
    (e) => e.code === -32003 && /denied by policy 'no-rm'/.test(e.message));
  const ok = await client.callTool({ name: 'test__echo', arguments: { text: 'harmless' } });
  assert.equal(ok.content[0].text, 'harmless');
  await client.close();
});
