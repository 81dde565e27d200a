// What load.mjs and sdk.mjs print: key=value lines summarising N runs started at once.
export function report(results, seconds, cpu, extra = {}) {
  const ok = results.filter((r) => !r.error);
  const ms = ok.map((r) => r.ms).sort((a, b) => a - b);
  const q = (p) => (ms.length ? ms[Math.min(ms.length - 1, Math.ceil(p * ms.length) - 1)] : 0);
  const firstBad = results.find((r) => r.error);
  const out = {
    intents: results.length, completed: ok.length, errors: results.length - ok.length,
    seconds: seconds.toFixed(3), intents_per_sec: (ok.length / seconds).toFixed(1),
    p50_ms: q(0.5).toFixed(1), p99_ms: q(0.99).toFixed(1), max_ms: (ms.at(-1) ?? 0).toFixed(1),
    cpu_ms: ((cpu.user + cpu.system) / 1000).toFixed(0), ...extra,
    first_error: firstBad ? JSON.stringify(firstBad.error) : '',
  };
  for (const [k, v] of Object.entries(out)) console.log(`${k}=${v}`);
}

// Runs one(i) for i in 0..n-1 all at once; returns [results, seconds, cpu].
export async function all(n, one) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return [results, seconds, process.cpuUsage(cpu0)];
}
