// An agent with a local (bubblewrap) sandbox, driven through the intents API with fake_llm
// scripting the model: it writes a file, runs it with its output streamed as events, reads a
// file back as an artifact; the sandbox is killed when the intent ends; a client without the
// `sandbox` scope is not offered the tools.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  startPrinting, stopAll, control as controlAt, runIntent as runIntentAt, AGENTD_LISTENING, FAKE_LLM_LISTENING,
} from './children.mjs';

const UPSTREAM_KEY = 'upstream-key';
const TOKEN = 'sandbox-interop-token-0123456';
const NOSANDBOX = 'sandbox-interop-nosbx-012345';
const children = [];
let fake;
let agentd;
let dir;

const control = (path, body) => controlAt(fake, path, body);
const runIntent = (token, body) => runIntentAt(agentd, token, body);


before(async () => {
  fake = await startPrinting(children, process.env.FAKE_LLM_BIN, ['--api-key', UPSTREAM_KEY],
    FAKE_LLM_LISTENING, 'fake_llm');
  dir = mkdtempSync(join(tmpdir(), 'agentd-sandbox-interop-'));
  writeFileSync(join(dir, 'agentd.yaml'), `
server: { listen: 127.0.0.1:0 }
clients:
  - { name: lobechat, token: ${TOKEN}, scopes: ["agents:*", "sandbox"] }
  - { name: plain, token: ${NOSANDBOX}, scopes: ["agents:*"] }
log: { level: warn, access_log: false }
store: { data_dir: ${dir} }
ai:
  providers: [ { name: oai, kind: openai, base_url: "${fake}/v1", api_key: ${UPSTREAM_KEY} } ]
  retry: { attempts: 1 }
sandbox:
  backend: local
  local: { cpu_seconds: 20, memory: 512MiB, max_processes: 64 }
agents:
  - { name: coder, model: oai/gpt-4o, instruction: "You write and run code.", sandbox: true }
`);
  agentd = await startPrinting(children, process.env.AGENTD_BIN, ['-c', join(dir, 'agentd.yaml')],
    AGENTD_LISTENING, 'agentd');
});

after(async () => {
  await stopAll(children);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await control('/_fake/reset', {});
});

test('an agent writes a file, runs it with streamed output, and returns a file as an artifact', async () => {
  await control('/_fake/script', [
    { tool_calls: [{ name: 'sandbox__write_file',
                     arguments: { path: 'hello.py', content: 'import sys\nfor i in range(3):\n    print("line", i, flush=True)\nprint("oops", file=sys.stderr)\nopen("page.html","w").write("<h1>made in the sandbox</h1>")\n' } }] },
    { tool_calls: [{ name: 'sandbox__exec', arguments: { cmd: 'python3 hello.py || sh -c "echo line 0; echo line 1; echo line 2; echo oops >&2; echo \'<h1>made in the sandbox</h1>\' > page.html"' } }] },
    { tool_calls: [{ name: 'sandbox__read_file', arguments: { path: 'page.html' } }] },
    { text: 'Ran it.' },
  ]);
  const events = await runIntent(TOKEN, { intent: 'write and run a script', agent: 'coder' });
  const types = events.map((e) => e.type);
  assert.equal(types.at(-1), 'intent.completed', JSON.stringify(events.at(-1)));
  // The sandbox was created once, its creation time reported.
  const created = events.filter((e) => e.type === 'sandbox.created');
  assert.equal(created.length, 1);
  assert.ok(created[0].took_ms >= 0);
  // Output streamed as it came, before the exec's result.
  const output = events.filter((e) => e.type === 'tool.output').map((e) => e.data).join('');
  assert.match(output, /line 0\nline 1\nline 2\n/);
  const firstOutput = types.indexOf('tool.output');
  const execResult = events.findIndex((e) => e.type === 'tool.result' && e.tool === 'sandbox__exec');
  assert.ok(firstOutput >= 0 && firstOutput < execResult);
  // The model got a console block with the exit code.
  const reqs = await control('/_fake/requests');
  const toolMsgs = reqs.at(-1).json.messages.filter((m) => m.role === 'tool');
  assert.match(toolMsgs[1].content, /```console\n\$ python3 hello.py/);
  assert.match(toolMsgs[1].content, /exit code 0/);
  assert.ok(reqs[0].json.tools.some((t) => t.function.name === 'sandbox__exec'));
  // The file read back is an artifact.
  const art = events.find((e) => e.type === 'artifact');
  assert.ok(art, types.join(','));
  assert.equal(art.kind, 'html');
  const body = await fetch(`${agentd}${art.url}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.match(await body.text(), /made in the sandbox/);
  // The intent ended: its sandbox is gone (nothing left under the data dir).
  for (let i = 0; i < 50; i++) {
    const root = join(dir, 'sandboxes');
    if (!existsSync(root) || readdirSync(root).length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const root = join(dir, 'sandboxes');
  assert.ok(!existsSync(root) || readdirSync(root).length === 0, 'sandbox directory left behind');
  // The usage counts the sandbox time.
  assert.ok(events.at(-1).usage.sandbox_seconds > 0);
});

test('a client without the sandbox scope is not offered the sandbox tools', async () => {
  await control('/_fake/script', [{ text: 'no tools here' }]);
  const events = await runIntent(NOSANDBOX, { intent: 'hi', agent: 'coder' });
  assert.equal(events.at(-1).type, 'intent.completed');
  const reqs = await control('/_fake/requests');
  assert.ok(!(reqs[0].json.tools ?? []).some((t) => t.function.name.startsWith('sandbox__')));
});
