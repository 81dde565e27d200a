// A 2026-07-28-only MCP server built with the official SDK 2.4 (@modelcontextprotocol/server),
// for agentd's stateless-era client tests: `initialize` is refused (legacy: 'reject'), tools
// ask for input the 2026 way (an `input_required` result, answered on a retry).
// Usage: node mcp_stateless_server.mjs PORT   (binds 127.0.0.1; prints "listening" when ready)
import http from 'node:http';
import {
  McpServer, createMcpHandler, inputRequired, inputResponse, acceptedContent,
} from '@modelcontextprotocol/server';
import { z } from 'zod';

const port = Number(process.argv[2]);

function build() {
  const server = new McpServer({ name: 'agentd-stateless-test', version: '1.0.0' });
  server.registerTool('echo', { description: 'Echoes its text', inputSchema: z.object({ text: z.string() }) },
    async ({ text }) => ({ content: [{ type: 'text', text }] }));

  server.registerTool('slow', { description: 'Waits ms milliseconds unless cancelled', inputSchema: z.object({ ms: z.number() }) },
    async ({ ms }, ctx) => {
      const signal = ctx.mcpReq.signal;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); });
      });
      if (signal?.aborted) console.error('slow: cancelled');
      return { content: [{ type: 'text', text: signal?.aborted ? 'cancelled' : `slept ${ms}` }] };
    });

  // Needs an LLM: asks the client to sample, then answers with what came back.
  server.registerTool('ask-llm', { description: 'Samples through the client', inputSchema: z.object({ prompt: z.string() }) },
    async ({ prompt }, ctx) => {
      const answer = inputResponse(ctx.mcpReq.inputResponses, 'llm');
      if (answer.kind !== 'sampling') {
        return inputRequired({
          inputRequests: { llm: inputRequired.createMessage({
            messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens: 64 }) },
          requestState: 'asked-llm',
        });
      }
      const text = answer.result.content?.text ?? JSON.stringify(answer.result.content);
      return { content: [{ type: 'text', text: `llm said: ${text} (state ${ctx.mcpReq.requestState()})` }] };
    });

  // Needs the user and the roots: one round with both input requests.
  server.registerTool('confirm', { description: 'Asks the user, lists roots', inputSchema: z.object({}) },
    async (_args, ctx) => {
      const content = acceptedContent(ctx.mcpReq.inputResponses, 'ok');
      const roots = ctx.mcpReq.inputResponses?.roots?.roots;
      if (!ctx.mcpReq.inputResponses) {
        return inputRequired({ inputRequests: {
          ok: inputRequired.elicit({ message: 'Proceed?',
            requestedSchema: { type: 'object', properties: { yes: { type: 'boolean' } }, required: ['yes'] } }),
          roots: inputRequired.listRoots(),
        } });
      }
      return { content: [{ type: 'text',
        text: `confirmed: ${JSON.stringify(content ?? null)} roots: ${JSON.stringify(roots ?? null)}` }] };
    });

  server.registerPrompt('greet', { description: 'A greeting', argsSchema: z.object({ who: z.string() }) },
    ({ who }) => ({ messages: [{ role: 'user', content: { type: 'text', text: `hello ${who}` } }] }));
  server.registerResource('motd', 'test://motd', { mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.toString(), text: 'message of the day' }] }));
  return server;
}

const handler = createMcpHandler(build, { legacy: 'reject', onerror: (e) => console.error('[stateless]', e.message) });

http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const abort = new AbortController();
  res.on('close', () => { if (!res.writableFinished) abort.abort(); });
  const init = { method: req.method, headers: req.headers, signal: abort.signal };
  if (req.method !== 'GET' && req.method !== 'HEAD') init.body = Buffer.concat(chunks);
  const answer = await handler.fetch(new Request(`http://127.0.0.1:${port}${req.url}`, init));
  res.writeHead(answer.status, Object.fromEntries(answer.headers));
  if (answer.body) {
    try {
      for await (const c of answer.body) res.write(c);
    } catch { /* the client went away */ }
  }
  res.end();
}).listen(port, '127.0.0.1', () => console.log('listening'));
