// The cost of a refused event: one raw socket floods a release worker with events over the
// rate limit, and the worker's CPU time (user + system, from /proc) is divided by the events.
//   node bench/refusal-cost.mjs [--events 200000] [--bin target/release/chat-cluster]
// Needs tests/node_modules (ws) and redis-server. Prints one JSON line. Loopback only, bounded
// in events and time.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests/package.json"));
const WebSocket = require("ws");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, i, all) => (i % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
const events = Number(args.events ?? 200_000);
const bin = path.resolve(root, args.bin ?? "target/release/chat-cluster");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
const ticks = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (1/100 s)
};

const redisPort = await freePort();
const redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
const port = await freePort();
const worker = spawn(bin, ["worker", "--port", String(port), "--redis-url", `redis://127.0.0.1:${redisPort}`, "--rate-per-sec", "1", "--rate-burst", "1"], {
  stdio: "ignore",
  env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "CHAT_WORKER_SETTINGS")), CHAT_MAX_REFUSALS: "4294967295" },
});
const stop = () => {
  worker.kill("SIGKILL");
  redis.kill("SIGKILL");
};
process.on("exit", stop);
try {
  for (let i = 0; ; i++) {
    if (i > 100) throw new Error("the worker did not start");
    try {
      if ((await fetch(`http://127.0.0.1:${port}/monitor`)).ok) break;
    } catch {
      await sleep(100);
    }
  }
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket&roomid=cost`);
  let barrier = false;
  ws.on("message", (data) => {
    const text = data.toString();
    if (text === "2") ws.send("3");
    if (text.startsWith("43999999999[")) barrier = true;
  });
  await new Promise((resolve) => ws.once("open", resolve));
  ws.send("40");
  await sleep(300);
  const before = ticks(worker.pid);
  const started = Date.now();
  // The events ask for no answer (a flood does not wait); the last one asks for an ack, which
  // comes once the worker has handled every event before it (one socket's events are handled
  // in order).
  for (let i = 0; i < events; i++) ws.send('42["hb"]');
  ws.send('42999999999["hb"]');
  const deadline = Date.now() + 120_000;
  while (!barrier && Date.now() < deadline) await sleep(20);
  if (!barrier) throw new Error("the worker did not answer the last event within 120 s");
  const seconds = (Date.now() - started) / 1000;
  const cpuSeconds = (ticks(worker.pid) - before) / 100;
  console.log(
    JSON.stringify({
      events,
      seconds: Number(seconds.toFixed(2)),
      worker_cpu_seconds: cpuSeconds,
      cpu_us_per_refused_event: Number(((cpuSeconds * 1e6) / events).toFixed(2)),
      refused_events_per_cpu_second: Math.round(events / cpuSeconds),
    }),
  );
  ws.close();
} finally {
  stop();
}
