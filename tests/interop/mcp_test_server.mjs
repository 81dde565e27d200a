// A small MCP server over stdio, built with the official SDK, for fault tests: it echoes,
// sleeps, reports progress, crashes on request, and adds a tool at runtime (list_changed).
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { z } from 'zod';

const server = new McpServer({ name: 'agentd-test-server', version: '1.0.0' });

server.registerTool('echo', {
  description: 'Echoes its text',
  inputSchema: { text: z.string() },
  annotations: { readOnlyHint: true },
}, async ({ text }) => ({ content: [{ type: 'text', text }] }));

server.registerTool('sleep', {
  description: 'Waits ms milliseconds, reporting progress every 100 ms',
  inputSchema: { ms: z.number() },
}, async ({ ms }, extra) => {
  const token = extra._meta?.progressToken;
  const steps = Math.max(1, Math.floor(ms / 100));
  for (let i = 1; i <= steps; i++) {
    if (extra.signal.aborted) return { content: [{ type: 'text', text: 'aborted' }], isError: true };
    await new Promise((r) => setTimeout(r, ms / steps));
    if (token !== undefined) {
      await extra.sendNotification({ method: 'notifications/progress',
        params: { progressToken: token, progress: i, total: steps, message: `step ${i}` } });
    }
  }
  return { content: [{ type: 'text', text: `slept ${ms}` }] };
});

server.registerTool('crash', { description: 'Exits the process mid-call' }, async () => {
  process.exit(3);
});

server.registerTool('fail', { description: 'Returns a tool error' },
  async () => ({ content: [{ type: 'text', text: 'it failed' }], isError: true }));

server.registerTool('grow', { description: 'Adds a tool named extra and announces it' }, async () => {
  server.registerTool('extra', { description: 'Added at runtime' },
    async () => ({ content: [{ type: 'text', text: 'extra!' }] }));
  server.sendToolListChanged();
  return { content: [{ type: 'text', text: 'grown' }] };
});

process.stderr.write('agentd-test-server: starting\n');
await server.connect(new StdioServerTransport());
