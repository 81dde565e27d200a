// Child processes for the interop tests: start a program and wait for the URL it prints,
// stop them all at the end.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

// Spawns `bin` and resolves with the first capture of `re` in a stdout line (e.g. the URL of
// "agentd listening on http://..."). The child is added to `children` for stopAll().
export function startPrinting(children, bin, args, re, name) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 60s`)), 60000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${name} exited early (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = re.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

// SIGTERM to every child still running, newest first, waiting for each to exit.
export async function stopAll(children) {
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    child.removeAllListeners('exit');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

export const AGENTD_LISTENING = /^agentd listening on (http:\/\/127\.0\.0\.1:\d+)$/;
export const FAKE_LLM_LISTENING = /^fake_llm listening on (http:\/\/127\.0\.0\.1:\d+)$/;
