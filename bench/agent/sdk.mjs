// The peer: the OpenAI Agents SDK for JavaScript (@openai/agents) running the same workflow as
// agentd's bench agent in one node process: N runs at once of one Agent whose model is fake_llm
// (Chat Completions, the SDK's own OpenAI client pointed at it) and whose MCP server is
// server-everything as one stdio child (MCPServerStdio, its tool list cached and filtered to
// `echo`, as agentd's agent is). Each run is checked: 3 tool outputs, each server-everything's
// echo, and the expected answer.
// Prints key=value lines.
//
// node sdk.mjs --llm http://127.0.0.1:P --key K --everything PATH --n 1000 --steps 3 [--stream 1]
import OpenAI from 'openai';
import {
  Agent, MCPServerStdio, createMCPToolStaticFilter, run, setDefaultOpenAIClient, setOpenAIAPI,
  setTracingDisabled,
} from '@openai/agents';

import { all, report } from './stats.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const n = Number(args.n ?? 1000);
const steps = Number(args.steps ?? 3);
const stream = args.stream === '1';
const expected = `done after ${steps} tool steps`;
const nonce = `${process.pid}-${Date.now()}`;  // as load.mjs does

// fake_llm has Chat Completions only; no traces leave this machine (nothing to send them to).
setDefaultOpenAIClient(new OpenAI({ apiKey: args.key, baseURL: `${args.llm}/v1`, maxRetries: 0 }));
setOpenAIAPI('chat_completions');
setTracingDisabled(true);

const everything = new MCPServerStdio({
  name: 'everything', command: process.execPath, args: [args.everything, 'stdio'],
  cacheToolsList: true, toolFilter: createMCPToolStaticFilter({ allowed: ['echo'] }),
});
await everything.connect();
const agent = new Agent({
  name: 'bench', instructions: 'You help bench.', model: 'gpt-4o-mini', mcpServers: [everything],
});

async function one(i) {
  const input = `bench intent ${nonce}.${i}: echo three times, then answer`;
  const started = process.hrtime.bigint();
  try {
    let result;
    if (stream) {
      result = await run(agent, input, { stream: true, maxTurns: 10 });
      for await (const _ of result.toTextStream()) { /* drained, as a client would */ }
      await result.completed;
    } else {
      result = await run(agent, input, { maxTurns: 10 });
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const outputs = result.newItems.filter((it) => it.type === 'tool_call_output_item');
    if (outputs.length !== steps) return { ms, error: `${outputs.length} tool outputs, expected ${steps}` };
    // server-everything's echo answers "Echo: <message>": anything else did not reach it.
    const bad = outputs.find((it) => !JSON.stringify(it.output).includes('Echo: step'));
    if (bad) return { ms, error: `a tool output that is not the echo: ${JSON.stringify(bad.output).slice(0, 200)}` };
    if (!String(result.finalOutput).includes(expected)) return { ms, error: `unexpected output ${result.finalOutput}` };
    return { ms };
  } catch (e) {
    return { ms: Number(process.hrtime.bigint() - started) / 1e6, error: `${e.name}: ${e.message}` };
  }
}

// One warm-up run (JIT, the MCP session, the tool list cache) before the clock starts.
const warm = await one(-1);
if (warm.error) console.error(`warm-up run failed: ${warm.error}`);
const rssBefore = process.memoryUsage().rss;
const [results, seconds, cpu] = await all(n, one);
report(results, seconds, cpu, {
  rss_before_kb: Math.round(rssBefore / 1024),
  rss_peak_kb: process.resourceUsage().maxRSS,  // the process's peak (KiB)
});
await everything.close();
process.exit(0);
