// The soak: N room clients held with steady churn and traffic for a given time, sampling the
// workers' RSS every second. Used by `scripts/soak.sh` (long runs) and tests/e2e/soak.test.mjs
// (a short run in CI).

import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import { trackClient } from "./harness.mjs";

const ROOMS = 20;

/** Resident memory of a process in KiB, from /proc (0 if it is gone). */
export function rssKib(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function clusterStatus(statusUrl) {
  return (await fetch(statusUrl, { signal: AbortSignal.timeout(3000) })).json();
}

/** One client: joins room `n % ROOMS` and counts what it receives. */
function client(urls, n, counts) {
  const socket = trackClient(
    io(urls[n % urls.length], {
      forceNew: true,
      transports: ["websocket"],
      reconnection: false,
      query: { roomid: `soak${n % ROOMS}` },
    }),
  );
  socket.on("connect", () => socket.emit("join", { username: `s${n}` }, (answer) => (socket.joined = answer?.ok === true)));
  socket.on("message", () => (counts.received += 1));
  socket.on("connect_error", () => (counts.connectErrors += 1));
  return socket;
}

/**
 * Runs the soak and resolves with its summary. `onSample` gets one object per second.
 * Bounded: `seconds` of churn, plus at most 10 s to connect and 5 s to settle.
 */
export async function soak({ urls, statusUrl, clients = 200, seconds = 30, churnPerSec = 10, saysPerSec = 50, prefillPerRoom = 0, onSample = () => {} }) {
  const counts = { received: 0, said: 0, connectErrors: 0, churned: 0 };
  const before = await clusterStatus(statusUrl);
  const pids = before.workers.map((w) => w.pid);
  const rss = () => pids.map(rssKib);
  const idle = rss();

  let next = 0;
  const live = [];
  for (; next < clients; next++) live.push(client(urls, next, counts));
  const deadline = Date.now() + 10_000;
  while (live.some((s) => !s.connected) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const connected = live.filter((s) => s.connected).length;
  // Fills each room's history first, so that joins during the run already carry a full page:
  // the memory a join's history takes is then part of the warm level, not growth.
  while (live.some((s) => s.connected && !s.joined) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (let room = 0; room < Math.min(ROOMS, live.length); room++) {
    for (let i = 0; i < prefillPerRoom; i++) live[room].emit("say", { text: `prefill ${room}.${i}` });
  }
  if (prefillPerRoom > 0) await new Promise((r) => setTimeout(r, 1000));
  // Warm-up: a few seconds of traffic before the reference sample.
  const samples = [];
  const started = Date.now();
  let warm = null;
  let churnedAtWarm = 0;
  for (let second = 0; second < seconds; second++) {
    const tickEnd = Date.now() + 1000;
    for (let i = 0; i < churnPerSec; i++) {
      const victim = live.splice(Math.floor(Math.random() * live.length), 1)[0];
      victim?.disconnect();
      live.push(client(urls, next++, counts));
      counts.churned += 1;
    }
    for (let i = 0; i < saysPerSec; i++) {
      const speaker = live[Math.floor(Math.random() * live.length)];
      if (speaker?.connected) {
        speaker.emit("say", { text: `soak ${second}.${i}` });
        counts.said += 1;
      }
    }
    await new Promise((r) => setTimeout(r, Math.max(0, tickEnd - Date.now())));
    const sample = { t: Math.round((Date.now() - started) / 1000), clients: live.filter((s) => s.connected).length, rss_kib: rss(), ...counts };
    samples.push(sample);
    onSample(sample);
    if (second === Math.min(2, seconds - 1)) {
      warm = sample.rss_kib;
      churnedAtWarm = counts.churned;
    }
  }
  const loaded = rss();
  for (const s of live) s.disconnect();
  await new Promise((r) => setTimeout(r, 5000));
  const after = rss();
  // The same processes all along (a crashed worker's RSS would read 0, or its successor's),
  // and every count back to zero once every client left.
  const end = await clusterStatus(statusUrl);
  const sum = (list) => list.reduce((a, b) => a + b, 0);
  return {
    pids: { start: pids, end: end.workers.map((w) => w.pid) },
    restarts: sum(end.workers.map((w) => w.restarts)) - sum(before.workers.map((w) => w.restarts)),
    after_disconnect: { connections: end.total_connections, rooms: sum(end.workers.map((w) => w.rooms)) },
    /** The smallest RSS any worker showed in any sample: 0 means a worker was gone. */
    min_worker_rss_kib: Math.min(...samples.flatMap((s) => s.rss_kib), ...after),
    churned_after_warm: counts.churned - churnedAtWarm,
    clients,
    connected,
    seconds,
    churned: counts.churned,
    said: counts.said,
    received: counts.received,
    connect_errors: counts.connectErrors,
    rss_kib: { idle: sum(idle), warm: sum(warm ?? loaded), end_loaded: sum(loaded), after_disconnect: sum(after), peak: Math.max(...samples.map((s) => sum(s.rss_kib))) },
    samples,
  };
}
