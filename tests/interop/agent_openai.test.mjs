// The official `openai` npm SDK driving an agentd agent exactly as LobeChat drives a model
// (stream, include_usage, user, its own tools), with fake_llm as the provider and
// server-everything as the agent's MCP server; then the intents API as a LobeChat-shaped client
// uses it: an event stream, a dropped connection resumed with Last-Event-ID, and artifacts.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import OpenAI, { PermissionDeniedError } from 'openai';

import { startPrinting, stopAll, AGENTD_LISTENING, FAKE_LLM_LISTENING } from './children.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const everything = join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
const UPSTREAM_KEY = 'upstream-key';
const TOKEN = 'agent-interop-lobechat-token-01';
const NARROW = 'agent-interop-narrow-token-0123';
const children = [];
let fake;
let agentd;
let dir;

async function control(path, body) {
  const res = await fetch(fake + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}
const script = (...actions) => control('/_fake/script', actions);
const recorded = () => control('/_fake/requests');
const client = (apiKey = TOKEN) => new OpenAI({ apiKey, baseURL: `${agentd}/v1`, maxRetries: 0 });
const ADMIN = 'agent-interop-admin-token-012345';
const auth = { authorization: `Bearer ${TOKEN}` };

// Reads an SSE body into [{id, event, data}] until the stream ends or `stopAfter` events.
async function readEvents(res, stopAfter = Infinity) {
  const events = [];
  const decoder = new TextDecoder();
  let buf = '';
  const reader = res.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const ev = { id: '', event: '', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) ev.id = line.slice(4);
        else if (line.startsWith('event: ')) ev.event = line.slice(7);
        else if (line.startsWith('data: ')) ev.data += line.slice(6);
      }
      if (!ev.event && !ev.data) continue; // keepalive comment
      events.push({ ...ev, data: JSON.parse(ev.data) });
      if (events.length >= stopAfter) {
        await reader.cancel();
        return events;
      }
    }
  }
  return events;
}

before(async () => {
  assert.ok(process.env.AGENTD_BIN, 'set AGENTD_BIN');
  assert.ok(process.env.FAKE_LLM_BIN, 'set FAKE_LLM_BIN');
  fake = await startPrinting(children, process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY],
    FAKE_LLM_LISTENING, 'fake_llm');
  dir = mkdtempSync(join(tmpdir(), 'agentd-agent-interop-'));
  writeFileSync(join(dir, 'agentd.yaml'), `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: lobechat, token: ${TOKEN}, scopes: ["agents:*", "models:*", "mcp:*"] }
  - { name: narrow, token: ${NARROW}, scopes: ["models:*"] }
  - { name: ops, token: ${ADMIN}, scopes: ["admin"] }
log: { level: warn, access_log: false }
store: { data_dir: ${dir} }
ai:
  providers:
    - { name: oai, kind: openai, base_url: "${fake}/v1", api_key: ${UPSTREAM_KEY} }
  models:
    - { name: smart, targets: [oai/gpt-4o] }
  retry: { attempts: 1 }
mcp:
  servers:
    - { name: everything, transport: stdio, command: ${process.execPath}, args: ["${everything}"] }
agents:
  - name: helper
    description: A helper with the everything server's tools
    model: smart
    instruction: "You help {{client}}."
    servers: [everything]
    tools: ["everything__echo", "everything__get-sum", "everything__add"]
intents: { keepalive: 1s }
`);
  agentd = await startPrinting(children, process.env.AGENTD_BIN, ['-c', join(dir, 'agentd.yaml')],
    AGENTD_LISTENING, 'agentd');
  // The MCP server starts in the background: wait until its tools are in the catalog.
  for (let i = 0; i < 200; i++) {
    const r = await fetch(`${agentd}/readyz`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const body = await r.json();
    if (body.checks['mcp:everything'].detail.startsWith('ready')) break;
    await new Promise((r2) => setTimeout(r2, 100));
  }
});

after(async () => {
  await stopAll(children);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await control('/_fake/reset', {});
});

test('models.list shows the agent (and not to a client without agents:*)', async () => {
  const ids = [];
  for await (const m of client().models.list()) ids.push(m.id);
  assert.ok(ids.includes('helper'), ids.join(','));
  const narrow = [];
  for await (const m of client(NARROW).models.list()) narrow.push(m.id);
  assert.ok(!narrow.includes('helper'));
  await assert.rejects(
    client(NARROW).chat.completions.create({ model: 'helper', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof PermissionDeniedError && /agents:helper/.test(e.message));
});

test('LobeChat-shaped streaming run: MCP tool inside, the client tool handed back, then the answer with an artifact', async () => {
  const tools = [{
    type: 'function',
    function: { name: 'lobe_web_search', description: 'search the web',
                parameters: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] } },
  }];
  await script(
    { tool_calls: [{ name: 'everything__echo', arguments: { message: 'from the agent' } }] },
    { tool_calls: [{ name: 'lobe_web_search', arguments: { q: 'agentd' }, id: 'call_lobe_1' }] },
    { text: 'Here is the page:\n```html\n<h1>agentd</h1>\n```\n' },
  );
  const messages = [
    { role: 'system', content: 'You are LobeChat\'s assistant.' },
    { role: 'user', content: 'find agentd and show a page' },
  ];
  // Turn 1: the agent runs the MCP tool itself, then calls the client's tool.
  const { data: stream1, response: r1 } = await client().chat.completions.create({
    model: 'helper', stream: true, stream_options: { include_usage: true }, user: 'lobe-user-7',
    messages, tools,
  }).withResponse();
  assert.match(r1.headers.get('x-agentd-intent-id'), /^[0-9a-f]{32}$/);
  let reasoning = '';
  let finish;
  let usage;
  const calls = [];
  for await (const chunk of stream1) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta.reasoning_content) reasoning += choice.delta.reasoning_content;
    for (const tc of choice.delta.tool_calls ?? []) calls.push(tc);
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].function.name, 'lobe_web_search');
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { q: 'agentd' });
  assert.match(reasoning, /everything__echo/);
  assert.match(reasoning, /Echo: from the agent/);
  assert.ok(usage && usage.total_tokens > 0);

  // Turn 2: the client answers its tool call; the agent finishes with text and an html block.
  const stream2 = await client().chat.completions.create({
    model: 'helper', stream: true, stream_options: { include_usage: true }, user: 'lobe-user-7', tools,
    messages: [
      ...messages,
      { role: 'assistant', content: null, tool_calls: [{ id: calls[0].id, type: 'function', function: calls[0].function }] },
      { role: 'tool', tool_call_id: calls[0].id, content: 'agentd: one daemon' },
    ],
  });
  let content = '';
  for await (const chunk of stream2) {
    const choice = chunk.choices[0];
    if (choice?.delta.content) content += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(finish, 'stop');
  // The artifact, read out of the content as LobeChat does.
  const m = /```html\n([\s\S]*?)\n```/.exec(content);
  assert.ok(m, content);
  assert.equal(m[1], '<h1>agentd</h1>');
  // The model saw the agent's own instruction, LobeChat's system prompt and the tool result.
  const reqs = await recorded();
  const last = reqs[reqs.length - 1].json;
  assert.equal(last.messages[0].role, 'system');
  assert.match(last.messages[0].content, /You help lobechat/);
  assert.equal(last.messages[1].content, 'You are LobeChat\'s assistant.');
  assert.equal(last.messages.at(-1).role, 'tool');
  assert.equal(last.messages.at(-1).content, 'agentd: one daemon');
  assert.ok(last.tools.some((t) => t.function.name === 'lobe_web_search'));
  assert.ok(last.tools.some((t) => t.function.name === 'everything__echo'));
});

test('non-streaming agent completion', async () => {
  await script({ tool_calls: [{ name: 'everything__echo', arguments: { message: 'x' } }] }, { text: 'done' });
  const c = await client().chat.completions.create({
    model: 'helper', messages: [{ role: 'user', content: 'go' }],
  });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.content, 'done');
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.ok(c.usage.total_tokens > 0);
});

test('intents API: streamed events, resume after a dropped connection, artifacts', async () => {
  await script(
    { tool_calls: [{ name: 'everything__echo', arguments: { message: 'one' } },
                   { name: 'everything__echo', arguments: { message: 'two' } }] },
    { text: 'Summary.\n```svg\n<svg xmlns="http://www.w3.org/2000/svg"/>\n```\n', chunk_delay_ms: 20 },
  );
  const res = await fetch(`${agentd}/v1/intents`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ intent: 'echo twice', agent: 'helper',
                           memCtx: { vectors: [{ text: 'likes svg', score: 0.8 }] } }),
  });
  assert.equal(res.status, 200);
  const id = res.headers.get('x-agentd-intent-id');
  // Drop the connection after three events, then resume from the last id seen.
  const first = await readEvents(res, 3);
  assert.equal(first[0].event, 'intent.accepted');
  const resumed = await readEvents(await fetch(`${agentd}/v1/intents/${id}/events`, {
    headers: { ...auth, 'last-event-id': first.at(-1).id },
  }));
  const all = await readEvents(await fetch(`${agentd}/v1/intents/${id}/events`, { headers: auth }));
  assert.deepEqual([...first, ...resumed].map((e) => e.id), all.map((e) => e.id));
  assert.equal(all.at(-1).event, 'intent.completed');
  const types = all.map((e) => e.event);
  for (const t of ['step.started', 'tool.call', 'tool.result', 'llm.delta', 'artifact', 'message']) {
    assert.ok(types.includes(t), `${t} in ${types.join(',')}`);
  }
  assert.equal(types.filter((t) => t === 'tool.result').length, 2);
  const art = all.find((e) => e.event === 'artifact').data;
  assert.equal(art.kind, 'svg');
  const body = await fetch(`${agentd}${art.url}`, { headers: auth });
  assert.equal(body.status, 200);
  assert.equal(body.headers.get('content-type'), 'image/svg+xml');
  assert.equal(await body.text(), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  const intent = await (await fetch(`${agentd}/v1/intents/${id}`, { headers: auth })).json();
  assert.equal(intent.status, 'completed');
  assert.deepEqual(intent.result.artifacts, [art.artifact_id]);
  // The memory context reached the model's system prompt.
  const reqs = await recorded();
  assert.match(reqs[0].json.messages[0].content, /likes svg/);
});
