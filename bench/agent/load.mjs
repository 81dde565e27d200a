// Load for agentd's intents API: N intents posted at once (POST /v1/intents with
// Accept: text/event-stream), each stream read to its final event and checked: `intent.completed`,
// the expected number of `tool.result` events, each server-everything's echo, and the expected
// answer. Latency per intent from
// the request's first byte to its final event. Prints key=value lines.
//
// node load.mjs --url http://127.0.0.1:P --token T --agent NAME --n 1000 --steps 3 [--show 1]
// (--show 1: the first intent's events on stderr)
import http from 'node:http';

import { all, report } from './stats.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const base = new URL(args.url);
const n = Number(args.n ?? 1000);
const steps = Number(args.steps ?? 3);
const expected = `done after ${steps} tool steps`;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const nonce = `${process.pid}-${Date.now()}`;  // no two rounds send the same conversation

function one(i) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ intent: `bench intent ${nonce}.${i}: echo three times, then answer`, agent: args.agent });
    const started = process.hrtime.bigint();
    const done = (error, extra = {}) =>
      resolve({ error, ms: Number(process.hrtime.bigint() - started) / 1e6, ...extra });
    const req = http.request({
      host: base.hostname, port: base.port, path: '/v1/intents', method: 'POST', agent,
      headers: {
        authorization: `Bearer ${args.token}`, 'content-type': 'application/json',
        accept: 'text/event-stream', 'content-length': Buffer.byteLength(body),
      },
    }, (res) => {
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => done(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        return;
      }
      res.setEncoding('utf8');
      let buf = '';
      let events = 0;
      let toolResults = 0;
      let badTool;
      let finished = false;
      res.on('data', (chunk) => {
        buf += chunk;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = '';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (!event) continue;  // keepalive comment
          ++events;
          if (args.show && i === 0) console.error(`${event}: ${data}`);
          if (event === 'tool.result') {
            // server-everything's echo answers "Echo: <message>": anything else did not reach it.
            if (!data.includes('Echo: step')) badTool ??= data.slice(0, 200);
            ++toolResults;
          }
          if (event === 'intent.completed' || event === 'intent.failed' || event === 'intent.cancelled') {
            finished = true;
            const ev = JSON.parse(data);
            const answer = typeof ev.result === 'string' ? ev.result : JSON.stringify(ev.result ?? '');
            let error;
            if (event !== 'intent.completed') error = `${event}: ${ev.reason ?? data.slice(0, 200)}`;
            else if (toolResults !== steps) error = `${toolResults} tool.result events, expected ${steps}`;
            else if (badTool) error = `a tool result that is not the echo: ${badTool}`;
            else if (!answer.includes(expected)) error = `unexpected result ${answer.slice(0, 200)}`;
            done(error, { events });
            res.destroy();
            return;
          }
        }
      });
      res.on('end', () => { if (!finished) done('stream ended before the final event'); });
      res.on('error', (e) => { if (!finished) done(`stream: ${e.message}`); });
    });
    req.on('error', (e) => done(`request: ${e.message}`));
    req.end(body);
  });
}

const [results, seconds, cpu] = await all(n, one);
report(results, seconds, cpu, { events: results.reduce((sum, r) => sum + (r.events ?? 0), 0) });
agent.destroy();
