// The official `openai` npm SDK driving the agentd binary, with the fake_llm binary as the
// upstream provider: models, chat (stream and not), tools, embeddings, speech, transcription
// and error mapping, shaped like LobeChat's requests. AGENTD_BIN and FAKE_LLM_BIN name them.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import OpenAI, { toFile } from 'openai';

import { startPrinting, stopAll } from './children.mjs';

const UPSTREAM_KEY = 'upstream-key';
const TOKEN = 'interop-lobechat-token-0123';
const NARROW = 'interop-narrow-token-01234';
const CAPPED = 'interop-capped-token-012345';
const children = [];
let fake; // http://127.0.0.1:PORT of the provider double
let agentd; // http://127.0.0.1:PORT of agentd
let dir;

const start = (bin, args, re, name) => startPrinting(children, bin, args, re, name);

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

const client = (apiKey = TOKEN, extra = {}) =>
  new OpenAI({ apiKey, baseURL: `${agentd}/v1`, maxRetries: 0, ...extra });

before(async () => {
  assert.ok(process.env.AGENTD_BIN, 'set AGENTD_BIN');
  assert.ok(process.env.FAKE_LLM_BIN, 'set FAKE_LLM_BIN');
  fake = await start(process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY],
    /^fake_llm listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'fake_llm');
  dir = mkdtempSync(join(tmpdir(), 'agentd-interop-'));
  const config = `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: lobechat, token: ${TOKEN}, scopes: ["models:*"] }
  - { name: narrow, token: ${NARROW}, scopes: ["models:fast"] }
  - { name: capped, token: ${CAPPED}, scopes: ["*"] }
log: { level: warn, access_log: false }
store: { data_dir: ${dir} }
ai:
  providers:
    - name: oai
      kind: openai
      base_url: ${fake}/v1
      api_key: ${UPSTREAM_KEY}
      models: [gpt-4o-mini, gpt-4o, text-embedding-3-small, tts-1, whisper-1]
      prices: { gpt-4o-mini: { input: 0.15, output: 0.6 } }
    - { name: ant, kind: anthropic, base_url: "${fake}", api_key: ${UPSTREAM_KEY} }
  models:
    - { name: fast, targets: [oai/gpt-4o-mini], display_name: Fast, context_window: 128000, vision: true }
    - { name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5] }
  retry: { attempts: 1 }
  limits:
    capped: { rpm: 2 }
`;
  writeFileSync(join(dir, 'agentd.yaml'), config);
  agentd = await start(process.env.AGENTD_BIN, ['-c', join(dir, 'agentd.yaml')],
    /^agentd listening on (http:\/\/127\.0\.0\.1:\d+)$/, 'agentd');
});

after(async () => {
  await stopAll(children);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await control('/_fake/reset', {});
});

test('models.list shows aliases with LobeChat metadata, and provider models', async () => {
  const ids = [];
  let fast;
  for await (const m of client().models.list()) {
    ids.push(m.id);
    if (m.id === 'fast') fast = m;
  }
  assert.ok(ids.includes('smart'));
  assert.ok(ids.includes('oai/gpt-4o-mini'));
  assert.equal(fast.displayName, 'Fast');
  assert.equal(fast.contextWindowTokens, 128000);
  assert.equal(fast.vision, true);
  const one = await client().models.retrieve('oai/gpt-4o');
  assert.equal(one.id, 'oai/gpt-4o');
  // The narrow client sees only what it may use.
  const narrow = [];
  for await (const m of client(NARROW).models.list()) narrow.push(m.id);
  assert.deepEqual(narrow, ['fast']);
});

test('chat.completions.create, non-streaming, LobeChat-shaped', async () => {
  const { data, response } = await client().chat.completions.create({
    model: 'fast',
    user: 'lobe-user-1',
    temperature: 0.7,
    messages: [
      { role: 'system', content: 'You are helpful.' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'what is in this picture' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
        ],
      },
    ],
  }).withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices[0].message.content, 'echo: what is in this picture');
  assert.ok(data.usage.total_tokens > 0);
  assert.equal(response.headers.get('x-agentd-provider'), 'oai');
  assert.equal(response.headers.get('x-agentd-model'), 'gpt-4o-mini');
  const up = (await recorded())[0];
  assert.equal(up.json.model, 'gpt-4o-mini');
  assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
});

test('streaming with include_usage, as LobeChat sends it', async () => {
  const stream = await client().chat.completions.create({
    model: 'fast',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream this please' }],
  });
  let text = '';
  let usage;
  let finish;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, 'echo: stream this please');
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens > 0);
});

test('tool calls, non-streaming and streamed through Anthropic translation', async () => {
  const tools = [{
    type: 'function',
    function: { name: 'get_weather', description: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
  }];
  await script({ tool_calls: [{ name: 'get_weather', arguments: { city: 'Paris' } }] });
  const r = await client().chat.completions.create({
    model: 'fast', tools, messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });

  // gpt-4o is down: `smart` falls back to Anthropic, which streams the call in pieces.
  await control('/_fake/down', { models: ['gpt-4o'] });
  await script({ tool_calls: [{ name: 'get_weather', arguments: { city: 'Lyon', days: 3 } }] });
  const stream = client().chat.completions.stream({
    model: 'smart', tools, messages: [{ role: 'user', content: 'and Lyon?' }],
  });
  const final = await stream.finalChatCompletion();
  const streamed = final.choices[0].message.tool_calls[0];
  assert.equal(streamed.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(streamed.function.arguments), { city: 'Lyon', days: 3 });
  // Then the tool result goes back and the model answers.
  const back = await client().chat.completions.create({
    model: 'smart',
    tools,
    messages: [
      { role: 'user', content: 'and Lyon?' },
      { role: 'assistant', content: null, tool_calls: [streamed] },
      { role: 'tool', tool_call_id: streamed.id, content: '{"temp":21}' },
      { role: 'user', content: 'thanks' },
    ],
  });
  // Anthropic wants the tool result and the next user text in one user turn: the double echoes both.
  assert.equal(back.choices[0].message.content, 'echo: {"temp":21}thanks');
  const anth = (await recorded()).filter((q) => q.path === '/v1/messages').at(-1).json;
  const toolResult = anth.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : []))
    .find((b) => b.type === 'tool_result');
  assert.equal(toolResult.tool_use_id, streamed.id);
});

test('embeddings, speech and transcription', async () => {
  const e = await client().embeddings.create({ model: 'oai/text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(e.data.length, 2);
  assert.ok(e.data[0].embedding.length > 0);

  const speech = await client().audio.speech.create({ model: 'oai/tts-1', voice: 'alloy', input: 'hello' });
  const bytes = Buffer.from(await speech.arrayBuffer());
  assert.ok(bytes.length > 0);

  const t = await client().audio.transcriptions.create({
    model: 'oai/whisper-1',
    file: await toFile(Buffer.from('ID3 not really audio'), 'clip.mp3', { type: 'audio/mpeg' }),
  });
  assert.equal(typeof t.text, 'string');
  const up = (await recorded()).at(-1);
  assert.equal(up.path, '/v1/audio/transcriptions');
  assert.match(up.body, /\r\n\r\nwhisper-1\r\n/);
});

test('errors map to the SDK error classes', async () => {
  await assert.rejects(
    client().chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(
    client(NARROW).chat.completions.create({ model: 'smart', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.PermissionDeniedError && e.status === 403);
  await assert.rejects(
    client('wrong-token-000000000000').models.list(),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(
    client().chat.completions.create({ model: 'fast', messages: [{ role: 'wizard', content: 'x' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages[0].role');
  // The capped client has 2 requests per minute (distinct prompts: cache hits are free).
  const capped = client(CAPPED);
  const msg = (text) => ({ model: 'fast', messages: [{ role: 'user', content: text }] });
  await capped.chat.completions.create(msg('one'));
  await capped.chat.completions.create(msg('two'));
  await assert.rejects(capped.chat.completions.create(msg('three')), (e) =>
    e instanceof OpenAI.RateLimitError && e.status === 429 && Number(e.headers.get('retry-after')) >= 1);
});

test('an upstream failure mid-stream reaches the SDK as an error', async () => {
  await script({ text: 'this answer will be cut off after a few chunks', cut_after: 3 });
  const stream = await client().chat.completions.create({
    model: 'fast', stream: true, messages: [{ role: 'user', content: 'x' }],
  });
  await assert.rejects(async () => {
    for await (const _ of stream) { /* drain */ }
  }, (e) => e instanceof OpenAI.APIError && /ended the stream/.test(e.message));
});
