// The official OpenAI, Anthropic and Google GenAI SDKs against the fake_llm binary: proves the
// double speaks each provider's wire format. FAKE_LLM_BIN names the binary.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import OpenAI, { toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI, ApiError } from '@google/genai';

const KEY = 'sdk-test-key';
let child;
let base; // http://127.0.0.1:PORT

// Starts the binary and resolves with the URL from its one listening line.
function startFake(bin) {
  return new Promise((resolve, reject) => {
    child = spawn(bin, ['--api-key', KEY], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('fake_llm did not report listening in 60s')), 60000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`fake_llm exited early (${code})`)));
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      const m = /^fake_llm listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
      if (m) resolve(m[1]);
      else reject(new Error(`unexpected first line: ${line}`));
    });
  });
}

async function control(path, body) {
  const res = await fetch(base + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return res.json();
}
const script = (...actions) => control('/_fake/script', actions);
const recorded = () => control('/_fake/requests');

before(async () => {
  const bin = process.env.FAKE_LLM_BIN;
  assert.ok(bin, 'set FAKE_LLM_BIN to the fake_llm binary');
  base = await startFake(bin);
});

after(async () => {
  if (!child || child.exitCode !== null) return;
  child.removeAllListeners('exit');
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.kill('SIGTERM');
  const { code } = await exited;
  assert.equal(code, 0, 'fake_llm exits 0 on SIGTERM');
});

beforeEach(async () => {
  await control('/_fake/reset', {});
});

const openai = () => new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0 });
const anthropic = () => new Anthropic({ apiKey: KEY, baseURL: base, maxRetries: 0 });
const gemini = (apiKey = KEY) => new GoogleGenAI({ apiKey, httpOptions: { baseUrl: base } });

const weatherArgs = { city: 'Paris', unit: 'celsius', days: [1, 2, 3] };
const timeArgs = { timezone: 'Europe/Paris' };

// ---------------------------------------------------------------------------------------------
// OpenAI

test('openai: chat completion echoes the last user message, with usage', async () => {
  const res = await openai().chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'first answer' },
      { role: 'user', content: [{ type: 'text', text: 'hello sdk' }] },
    ],
  });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.model, 'gpt-4o-mini');
  assert.equal(res.choices[0].message.role, 'assistant');
  assert.equal(res.choices[0].message.content, 'echo: hello sdk');
  assert.equal(res.choices[0].finish_reason, 'stop');
  // 8 + 14 + 12 + 9 = 43 characters of messages → 10 tokens; "echo: hello sdk" → 3.
  assert.equal(res.usage.prompt_tokens, 10);
  assert.equal(res.usage.completion_tokens, 3);
  assert.equal(res.usage.total_tokens, 13);

  const reqs = await recorded();
  assert.equal(reqs.length, 1);
  assert.equal(reqs[0].method, 'POST');
  assert.equal(reqs[0].path, '/v1/chat/completions');
  assert.equal(reqs[0].headers.authorization, `Bearer ${KEY}`);
  assert.equal(reqs[0].json.model, 'gpt-4o-mini');
});

test('openai: streamed text and the include_usage chunk', async () => {
  await script({
    text: 'The quick brown fox jumps',
    usage: { prompt_tokens: 12, completion_tokens: 7, cached_tokens: 5 },
  });
  const stream = await openai().chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'go' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let contentChunks = 0;
  let finish = null;
  let usage = null;
  let last = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    last = chunk;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.content) {
        text += choice.delta.content;
        contentChunks++;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, 'The quick brown fox jumps');
  assert.ok(contentChunks >= 5, `text came in ${contentChunks} pieces`);
  assert.equal(finish, 'stop');
  assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
  assert.equal(usage.prompt_tokens, 12);
  assert.equal(usage.completion_tokens, 7);
  assert.equal(usage.total_tokens, 19);
  assert.equal(usage.prompt_tokens_details.cached_tokens, 5);
});

test('openai: parallel tool calls with arguments split across chunks', async () => {
  await script({
    tool_calls: [
      { name: 'get_weather', arguments: weatherArgs },
      { name: 'get_time', arguments: timeArgs, id: 'call_fixed' },
    ],
  });
  const stream = await openai().chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'weather and time in Paris?' }],
    tools: [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } },
      { type: 'function', function: { name: 'get_time', parameters: { type: 'object' } } },
    ],
    stream: true,
  });
  const calls = [];
  const pieces = [0, 0];
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice.finish_reason) finish = choice.finish_reason;
    for (const tc of choice.delta.tool_calls ?? []) {
      if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, arguments: '' };
      if (tc.function?.arguments) {
        calls[tc.index].arguments += tc.function.arguments;
        pieces[tc.index]++;
      }
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 2);
  assert.equal(calls[0].name, 'get_weather');
  assert.match(calls[0].id, /^call_/);
  assert.deepEqual(JSON.parse(calls[0].arguments), weatherArgs);
  assert.equal(calls[1].id, 'call_fixed');
  assert.equal(calls[1].name, 'get_time');
  assert.deepEqual(JSON.parse(calls[1].arguments), timeArgs);
  assert.ok(pieces[0] >= 2 && pieces[1] >= 2, `argument pieces: ${pieces}`);
});

test('openai: the SDK stream helper reassembles tool calls and reasoning', async () => {
  await script({
    text: 'Checking.',
    reasoning: 'The user wants the weather.',
    tool_calls: [{ name: 'get_weather', arguments: weatherArgs }],
  });
  const runner = openai().chat.completions.stream({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'weather?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
  });
  let reasoning = '';
  runner.on('chunk', (chunk) => {
    reasoning += chunk.choices[0]?.delta?.reasoning_content ?? '';
  });
  const final = await runner.finalChatCompletion();
  const msg = final.choices[0].message;
  assert.equal(msg.content, 'Checking.');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), weatherArgs);
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(reasoning, 'The user wants the weather.');
});

test('openai: 429 becomes RateLimitError with retry-after; a wrong key AuthenticationError', async () => {
  await script({ error: { status: 429, message: 'slow down', retry_after: 3 } });
  await assert.rejects(
    openai().chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}`);
      assert.equal(err.status, 429);
      assert.equal(err.code, 'rate_limit_exceeded');
      assert.equal(err.error.message, 'slow down');
      assert.equal(err.headers.get('retry-after'), '3');
      return true;
    },
  );
  const wrong = new OpenAI({ apiKey: 'nope', baseURL: `${base}/v1`, maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
  assert.equal((await control('/_fake/script', [])).pending, 0, 'the 429 action was consumed');
});

test('openai: an error event mid-stream and a stream cut short', async () => {
  await script(
    { text: 'never finished', error: { status: 500, message: 'boom mid-stream', in_stream: true } },
    { text: 'one two three four five six', cut_after: 3 },
  );
  const client = openai();
  const params = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true };
  const s1 = await client.chat.completions.create(params);
  await assert.rejects(
    (async () => {
      for await (const chunk of s1) void chunk;
    })(),
    (err) => {
      assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}`);
      assert.match(err.message, /boom mid-stream/);
      return true;
    },
  );
  const s2 = await client.chat.completions.create(params);
  const got = [];
  for await (const chunk of s2) got.push(chunk);
  // role chunk + two content pieces, then the connection closed: no finish reason, no [DONE].
  assert.equal(got.length, 3);
  assert.equal(got.map((c) => c.choices[0].delta.content).join(''), 'one two ');
  assert.ok(got.every((c) => c.choices[0].finish_reason === null));
});

test('openai: embeddings are deterministic unit vectors (base64 and float)', async () => {
  const client = openai();
  const a = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] });
  assert.equal(a.object, 'list');
  assert.equal(a.data.length, 2);
  assert.equal(a.data[1].index, 1);
  assert.equal(a.usage.prompt_tokens, 2);
  for (const d of a.data) {
    assert.equal(d.embedding.length, 16);
    const norm = Math.hypot(...d.embedding);
    assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
  }
  assert.notDeepEqual(a.data[0].embedding, a.data[1].embedding);
  const reqs = await recorded();
  assert.equal(reqs[0].json.encoding_format, 'base64', 'the SDK asks for base64 by default');

  const b = await client.embeddings.create({
    model: 'text-embedding-3-small',
    input: 'alpha',
    encoding_format: 'float',
    dimensions: 8,
  });
  assert.equal(b.data[0].embedding.length, 8);
  const c = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha' });
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(c.data[0].embedding[i] - a.data[0].embedding[i]) < 1e-7);
});

test('openai: models list', async () => {
  const ids = [];
  for await (const m of openai().models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  assert.ok(ids.includes('gpt-4o-mini') && ids.includes('claude-sonnet-4-6'), ids.join(','));
});

test('openai: speech bytes and their transcription', async () => {
  const client = openai();
  const speech = await client.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'say hi to the fake' });
  assert.equal(speech.headers.get('content-type'), 'audio/mpeg');
  const audio = Buffer.from(await speech.arrayBuffer());
  assert.equal(audio.subarray(0, 3).toString('latin1'), 'ID3');

  const tr = await client.audio.transcriptions.create({
    model: 'whisper-1',
    file: await toFile(audio, 'speech.mp3', { type: 'audio/mpeg' }),
  });
  assert.equal(tr.text, 'say hi to the fake');
  const reqs = await recorded();
  assert.equal(reqs[1].path, '/v1/audio/transcriptions');
  assert.match(reqs[1].headers['content-type'], /^multipart\/form-data; boundary=/);

  const plain = await client.audio.transcriptions.create({
    model: 'whisper-1',
    file: await toFile(Buffer.from('not audio'), 'x.wav'),
    response_format: 'text',
  });
  assert.equal(String(plain).trim(), 'audio of 9 bytes');
});

// ---------------------------------------------------------------------------------------------
// Anthropic

test('anthropic: messages.create', async () => {
  const res = await anthropic().messages.create({
    model: 'claude-sonnet-4-6',
    max_tokens: 100,
    system: 'You are terse.',
    messages: [{ role: 'user', content: 'hi claude' }],
  });
  assert.equal(res.type, 'message');
  assert.equal(res.role, 'assistant');
  assert.equal(res.model, 'claude-sonnet-4-6');
  assert.deepEqual(res.content, [{ type: 'text', text: 'echo: hi claude' }]);
  assert.equal(res.stop_reason, 'end_turn');
  assert.equal(res.usage.input_tokens, 5); // 14 + 9 characters
  assert.equal(res.usage.output_tokens, 3);
  const reqs = await recorded();
  assert.equal(reqs[0].path, '/v1/messages');
  assert.ok(reqs[0].headers['anthropic-version'], 'the SDK sends anthropic-version');
  assert.ok(
    reqs[0].headers['x-api-key'] === KEY || reqs[0].headers.authorization === `Bearer ${KEY}`,
    'the key arrives',
  );
});

test('anthropic: messages.stream with thinking, text and a tool_use block', async () => {
  await script({
    reasoning: 'Need the weather tool.',
    text: 'Let me check that.',
    tool_calls: [{ name: 'get_weather', arguments: weatherArgs }],
    usage: { prompt_tokens: 30, completion_tokens: 12, cached_tokens: 20 },
  });
  const stream = anthropic().messages.stream({
    model: 'claude-sonnet-4-6',
    max_tokens: 1024,
    tools: [{ name: 'get_weather', description: 'weather', input_schema: { type: 'object' } }],
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  let text = '';
  let jsonPieces = 0;
  let thinking = '';
  const events = [];
  stream.on('text', (delta) => (text += delta));
  stream.on('inputJson', (partial) => (jsonPieces += partial ? 1 : 0));
  stream.on('thinking', (delta) => (thinking += delta));
  stream.on('streamEvent', (e) => events.push(e.type));
  const msg = await stream.finalMessage();

  assert.equal(text, 'Let me check that.');
  assert.equal(thinking, 'Need the weather tool.');
  assert.ok(jsonPieces >= 2, `input_json_delta pieces: ${jsonPieces}`);
  assert.equal(events[0], 'message_start');
  assert.equal(events.at(-1), 'message_stop');
  assert.ok(events.includes('message_delta'));
  assert.equal(msg.content.length, 3);
  assert.equal(msg.content[0].type, 'thinking');
  assert.equal(msg.content[0].thinking, 'Need the weather tool.');
  assert.ok(msg.content[0].signature.length > 0);
  assert.deepEqual(msg.content[1], { type: 'text', text: 'Let me check that.' });
  assert.equal(msg.content[2].type, 'tool_use');
  assert.equal(msg.content[2].name, 'get_weather');
  assert.match(msg.content[2].id, /^toolu_/);
  assert.deepEqual(msg.content[2].input, weatherArgs);
  assert.equal(msg.stop_reason, 'tool_use');
  assert.equal(msg.usage.output_tokens, 12);
  assert.equal(msg.usage.input_tokens, 10);
  assert.equal(msg.usage.cache_read_input_tokens, 20);
});

test('anthropic: 529 overloaded, a mid-stream error event, a wrong key', async () => {
  await script(
    { error: { status: 529, message: 'Overloaded' } },
    { error: { status: 529, message: 'Overloaded mid-stream', in_stream: true } },
  );
  const client = anthropic();
  const params = { model: 'claude-sonnet-4-6', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] };
  await assert.rejects(client.messages.create(params), (err) => {
    assert.ok(err instanceof Anthropic.InternalServerError, `got ${err?.constructor?.name}`);
    assert.equal(err.status, 529);
    assert.equal(err.type, 'overloaded_error');
    assert.equal(err.error.error.message, 'Overloaded');
    assert.ok(err.requestID, 'request-id header');
    return true;
  });
  await assert.rejects(client.messages.stream(params).finalMessage(), (err) => {
    assert.ok(err instanceof Anthropic.APIError, `got ${err?.constructor?.name}`);
    assert.equal(err.type, 'overloaded_error');
    assert.match(err.message, /Overloaded mid-stream/);
    return true;
  });
  const wrong = new Anthropic({ apiKey: 'nope', baseURL: base, maxRetries: 0 });
  await assert.rejects(wrong.messages.create(params), (err) => {
    assert.ok(err instanceof Anthropic.AuthenticationError, `got ${err?.constructor?.name}`);
    assert.equal(err.type, 'authentication_error');
    return true;
  });
});

// ---------------------------------------------------------------------------------------------
// Gemini

test('gemini: generateContent on v1beta', async () => {
  await script({ text: 'Bonjour', usage: { prompt_tokens: 9, completion_tokens: 4, cached_tokens: 3 } });
  const res = await gemini().models.generateContent({
    model: 'gemini-2.5-flash',
    contents: 'hi gemini',
    config: { systemInstruction: 'be nice', temperature: 0.2 },
  });
  assert.equal(res.text, 'Bonjour');
  assert.equal(res.candidates[0].finishReason, 'STOP');
  assert.equal(res.usageMetadata.promptTokenCount, 9);
  assert.equal(res.usageMetadata.candidatesTokenCount, 4);
  assert.equal(res.usageMetadata.totalTokenCount, 13);
  assert.equal(res.usageMetadata.cachedContentTokenCount, 3);
  assert.equal(res.modelVersion, 'gemini-2.5-flash');

  const res2 = await gemini().models.generateContent({ model: 'gemini-2.5-flash', contents: 'again' });
  assert.equal(res2.text, 'echo: again');

  const reqs = await recorded();
  assert.equal(reqs[0].path, '/v1beta/models/gemini-2.5-flash:generateContent');
  assert.equal(reqs[0].headers['x-goog-api-key'], KEY);
  assert.equal(reqs[0].json.contents[0].parts[0].text, 'hi gemini');
  assert.equal(reqs[0].json.systemInstruction.parts[0].text, 'be nice');
});

test('gemini: generateContentStream with text, then a function call', async () => {
  const ai = gemini();
  let text = '';
  let chunks = 0;
  let last;
  for await (const chunk of await ai.models.generateContentStream({
    model: 'gemini-2.5-flash',
    contents: 'stream this text please',
  })) {
    text += chunk.text ?? '';
    chunks++;
    last = chunk;
  }
  assert.equal(text, 'echo: stream this text please');
  assert.ok(chunks >= 3, `chunks: ${chunks}`);
  assert.equal(last.candidates[0].finishReason, 'STOP');
  assert.equal(last.usageMetadata.promptTokenCount, 5);
  const reqs = await recorded();
  assert.equal(reqs[0].path, '/v1beta/models/gemini-2.5-flash:streamGenerateContent');
  assert.equal(reqs[0].query, 'alt=sse');

  await script(
    { tool_calls: [{ name: 'get_weather', arguments: weatherArgs }, { name: 'get_time', arguments: timeArgs }] },
    { tool_calls: [{ name: 'get_weather', arguments: weatherArgs }] },
  );
  const tools = [{ functionDeclarations: [{ name: 'get_weather' }, { name: 'get_time' }] }];
  const calls = [];
  for await (const chunk of await ai.models.generateContentStream({
    model: 'gemini-2.5-flash',
    contents: 'weather and time?',
    config: { tools },
  })) {
    calls.push(...(chunk.functionCalls ?? []));
  }
  assert.equal(calls.length, 2);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(calls[0].args, weatherArgs);
  assert.equal(calls[1].name, 'get_time');
  assert.deepEqual(calls[1].args, timeArgs);

  const res = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'weather?', config: { tools } });
  assert.equal(res.functionCalls.length, 1);
  assert.equal(res.functionCalls[0].name, 'get_weather');
  assert.deepEqual(res.functionCalls[0].args, weatherArgs);
});

test('gemini: errors as ApiError (scripted 429, down model, wrong key)', async () => {
  await script({ error: { status: 429, message: 'Resource has been exhausted' } });
  await control('/_fake/down', { models: ['gemini-down'] });
  const ai = gemini();
  await assert.rejects(ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'x' }), (err) => {
    assert.ok(err instanceof ApiError, `got ${err?.constructor?.name}`);
    assert.equal(err.status, 429);
    const body = JSON.parse(err.message);
    assert.equal(body.error.status, 'RESOURCE_EXHAUSTED');
    assert.equal(body.error.code, 429);
    assert.equal(body.error.message, 'Resource has been exhausted');
    return true;
  });
  await assert.rejects(ai.models.generateContent({ model: 'gemini-down', contents: 'x' }), (err) => {
    assert.equal(err.status, 503);
    assert.equal(JSON.parse(err.message).error.status, 'UNAVAILABLE');
    return true;
  });
  await assert.rejects(gemini('nope').models.generateContent({ model: 'gemini-2.5-flash', contents: 'x' }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(JSON.parse(err.message).error.details[0].reason, 'API_KEY_INVALID');
    return true;
  });
  assert.equal((await recorded()).length, 3);
});
