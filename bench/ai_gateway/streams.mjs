// Many concurrent streaming chat requests held open through agentd, for bench/ai_gateway/run.sh.
//
// This process is both ends: a slow OpenAI-compatible upstream on --upstream-port (agentd's
// provider `slow` points at it) that sends one content chunk at once and then one more every
// second until told to finish, and a client that opens --n streaming requests to agentd. Once
// every stream has delivered its first content chunk, agentd's resident memory is sampled from
// /proc/<pid>/status for --hold seconds; then the upstream finishes every stream and the client
// checks that each one ended with `data: [DONE]`. Prints one JSON object.
//
// node streams.mjs --upstream-port P --agentd http://127.0.0.1:A --token T --pid PID \
//                  [--n 1000] [--hold 10] [--model slow/gpt-4o-mini]
import http from 'node:http';
import { readFileSync, readdirSync } from 'node:fs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const n = Number(args.n ?? 1000);
const holdSeconds = Number(args.hold ?? 10);
const model = args.model ?? 'slow/gpt-4o-mini';
const pid = Number(args.pid);
const agentd = new URL(args.agentd);
const upstreamPort = Number(args['upstream-port']);
if (!pid || !upstreamPort || !args.token) {
  console.error('usage: streams.mjs --upstream-port P --agentd URL --token T --pid PID');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function memory() {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  let fds = 0;
  try {
    fds = readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    fds = -1;
  }
  return { rss_kb: kb('VmRSS'), hwm_kb: kb('VmHWM'), fds };
}

// ---- the slow upstream -------------------------------------------------------------------
const created = 1764000000;
const chunk = (delta, finish = null) =>
  `data: ${JSON.stringify({
    id: 'chatcmpl-slow',
    object: 'chat.completion.chunk',
    created,
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  })}\n\n`;
const usageChunk = `data: ${JSON.stringify({
  id: 'chatcmpl-slow',
  object: 'chat.completion.chunk',
  created,
  model: 'gpt-4o-mini-2024-07-18',
  choices: [],
  usage: { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 },
})}\n\n`;

const open = new Set();
let upstreamRequests = 0;
const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    upstreamRequests++;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(chunk({ role: 'assistant', content: '' }));
    res.write(chunk({ content: 'Hello' }));
    open.add(res);
    res.on('close', () => open.delete(res));
  });
});
upstream.keepAliveTimeout = 120_000;
upstream.headersTimeout = 0;
upstream.requestTimeout = 0;
upstream.maxConnections = n + 100;
await new Promise((resolve) => upstream.listen(upstreamPort, '127.0.0.1', resolve));
const ticker = setInterval(() => {
  for (const res of open) res.write(chunk({ content: ' more' }));
}, 1000);

function finishUpstream() {
  clearInterval(ticker);
  for (const res of open) {
    res.write(chunk({}, 'stop'));
    res.write(usageChunk);
    res.end('data: [DONE]\n\n');
  }
}

// ---- the client ---------------------------------------------------------------------------
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const body = JSON.stringify({
  model,
  stream: true,
  messages: [{ role: 'user', content: 'Stream something slowly' }],
});
let opened = 0;
let completed = 0;
const errors = [];
const before = memory();

const streams = Array.from({ length: n }, () => new Promise((resolve) => {
  let text = '';
  let first = false;
  const req = http.request(
    {
      host: agentd.hostname,
      port: agentd.port,
      path: '/v1/chat/completions',
      method: 'POST',
      agent,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        authorization: `Bearer ${args.token}`,
      },
    },
    (res) => {
      if (res.statusCode !== 200) errors.push(`status ${res.statusCode}`);
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
        if (!first && text.includes('Hello')) {
          first = true;
          opened++;
        }
        if (text.length > 4096) text = text.slice(-256);  // only the tail matters now
      });
      res.on('end', () => {
        if (/data: \[DONE\]\s*$/.test(text)) completed++;
        else errors.push('ended without [DONE]');
        resolve();
      });
      res.on('error', (e) => {
        errors.push(e.message);
        resolve();
      });
    },
  );
  req.on('error', (e) => {
    errors.push(e.message);
    resolve();
  });
  req.end(body);
}));

const t0 = Date.now();
while (opened < n && Date.now() - t0 < 60_000 && errors.length === 0) await sleep(50);
const openMs = Date.now() - t0;
const atOpen = memory();
let peakRss = atOpen.rss_kb;
const holdUntil = Date.now() + holdSeconds * 1000;
while (Date.now() < holdUntil) {
  await sleep(250);
  peakRss = Math.max(peakRss, memory().rss_kb);
}
const held = memory();
const openDuringHold = open.size;
finishUpstream();
const done = Promise.all(streams);
await Promise.race([done, sleep(30_000)]);
await sleep(500);
const after = memory();

const distinct = [...new Set(errors)].slice(0, 5);
console.log(JSON.stringify({
  streams: n,
  opened,
  open_ms: openMs,
  upstream_requests: upstreamRequests,
  open_upstream_during_hold: openDuringHold,
  completed,
  errors: errors.length,
  error_samples: distinct,
  rss_before_kb: before.rss_kb,
  rss_open_kb: atOpen.rss_kb,
  rss_open_max_kb: peakRss,
  rss_held_kb: held.rss_kb,
  fds_open: atOpen.fds,
  rss_after_kb: after.rss_kb,
  hwm_kb: after.hwm_kb,
}));
upstream.close();
upstream.closeAllConnections?.();
agent.destroy();
process.exit(0);
