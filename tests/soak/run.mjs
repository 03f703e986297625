// The long soak: `bash scripts/soak.sh --clients 2000 --seconds 600` (see there). Starts a
// private Redis and a cluster, runs the soak, prints one JSON line per second and a summary.

import { parseArgs } from "node:util";
import { cleanup, startCluster, startRedis } from "../support/harness.mjs";
import { soak } from "../support/soak.mjs";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "1000" },
    seconds: { type: "string", default: "120" },
    "churn-per-sec": { type: "string", default: "20" },
    "says-per-sec": { type: "string", default: "100" },
    workers: { type: "string", default: "2" },
  },
});
const number = (name, max) => {
  const value = Number(values[name]);
  if (!Number.isInteger(value) || value < 1 || value > max) throw new Error(`--${name} must be an integer from 1 to ${max}`);
  return value;
};
const clients = number("clients", 20_000);
const seconds = number("seconds", 3600);
const workers = number("workers", 64);

let exitCode = 0;
try {
  const redis = await startRedis();
  const cluster = await startCluster({ workers, redisUrl: redis.url, extraArgs: ["--rate-per-sec", "1000", "--rate-burst", "1000"] });
  const result = await soak({
    urls: cluster.ports.map((port) => `http://127.0.0.1:${port}`),
    statusUrl: `http://127.0.0.1:${cluster.adminPort}/status`,
    clients,
    seconds,
    churnPerSec: number("churn-per-sec", 10_000),
    saysPerSec: number("says-per-sec", 10_000),
    onSample: (sample) => console.log(JSON.stringify({ sample })),
  });
  const { samples, ...summary } = result;
  console.log(JSON.stringify({ summary }));
  const rss = summary.rss_kib;
  console.error(
    `\n${summary.connected}/${clients} clients, ${summary.churned} replaced over ${seconds} s, ${summary.said} said, ${summary.received} received\n` +
      `worker RSS (KiB, all workers): idle ${rss.idle}, warm ${rss.warm}, peak ${rss.peak}, end ${rss.end_loaded}, after disconnect ${rss.after_disconnect}\n` +
      `growth under churn: ${(((rss.end_loaded - rss.warm) / rss.warm) * 100).toFixed(1)}% (samples: ${samples.length})`,
  );
  await cluster.stop();
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
