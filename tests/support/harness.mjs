// Test harness for the end-to-end tests: real redis-server, the real chat-cluster binary, real
// nginx, and the official socket.io client. Every process started here is tracked and killed by
// PID when the test file ends (or the test process exits); nothing else is ever signalled.

import { spawn, execFileSync } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach } from "node:test";
import { io } from "socket.io-client";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const binary = process.env.CHAT_BIN || path.join(repoRoot, "target/debug/chat-cluster");
const WAIT_MS = 10_000;

const children = new Set(); // running
const started = []; // every process started by this test file, running or not, for failure reports
const tempDirs = new Set();

function track(child, name) {
  child.testName = name;
  child.stderrTail = "";
  child.stderr?.on("data", (chunk) => {
    // Keep the last 8 KiB of each child's stderr for failure reports.
    child.stderrTail = (child.stderrTail + chunk.toString()).slice(-8192);
  });
  child.on("error", (err) => {
    child.stderrTail += `\n[spawn error: ${err.message}]`;
  });
  children.add(child);
  started.push(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Clients and connections a test opened: closed by `cleanup()`, so that a failed test that
 * never reached its own disconnects cannot keep the test process alive. */
const openClients = new Set();

/** Starts a helper process of a test (a Python client, ...), killed by `cleanup()` like every
 * process the harness starts; its stderr tail shows in failure reports. */
export function spawnTracked(command, args, name, options = {}) {
  return track(spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], ...options }), name);
}

/** Registers something with a `close()` (or `disconnect()`) for `cleanup()`. */
export function trackClient(client) {
  openClients.add(client);
  return client;
}

/** Kills every process this harness started that is still running, closes every client, and
 * removes temp dirs. */
export async function cleanup() {
  for (const client of openClients) {
    try {
      if (typeof client.disconnect === "function") client.disconnect();
      else client.close();
    } catch {
      // Already closed.
    }
  }
  openClients.clear();
  const exits = [];
  for (const child of children) {
    exits.push(new Promise((resolve) => child.once("exit", resolve)));
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  // Bounded, and the bound's timer cleared: a pending timer would keep the test file's process
  // alive for its full 5 s after the last test.
  let timer;
  await Promise.race([Promise.all(exits), new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
  clearTimeout(timer);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
  started.length = 0;
}

function killAll() {
  for (const child of children) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

process.on("exit", killAll);
// The test runner stops a file that overruns with a signal: leave no child behind then either.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    killAll();
    process.exit(signal === "SIGINT" ? 130 : 143);
  });
}

// A failing test shows what the processes it ran said on stderr.
afterEach((t) => {
  if (!t.passed) console.error(`stderr of the processes started by this file, for the failed test "${t.name}":\n${childLogs()}`);
});

/** The stderr tails of the processes this file started (running or exited), for a failure report. */
export function childLogs() {
  return started
    .map((c) => {
      const state = c.exitCode !== null || c.signalCode !== null ? `exited ${c.signalCode ?? c.exitCode}` : "running";
      return `--- ${c.testName} (pid ${c.pid}, ${state})\n${c.stderrTail}`;
    })
    .join("\n");
}

/** Runs a setup step; on failure its error carries the children's stderr (hooks get no afterEach report). */
async function setupStep(promise) {
  try {
    return await promise;
  } catch (err) {
    err.message += `\n${childLogs()}`;
    throw err;
  }
}

/** Redis names the product uses under the default prefix `chat:` (crates/chat-protocol/src/keys.rs). */
export const redisNames = {
  room: (room) => `chat:{room:${room}}`,
  user: (user) => `chat:{user:${user}}`,
  inbox: (user) => `chat:{user:${user}}:inbox`,
  unread: (user) => `chat:{user:${user}}:unread`,
  senders: (user) => `chat:{user:${user}}:senders`,
};

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection naming `what` after `timeoutMs`. */
export async function within(what, promise, timeoutMs = WAIT_MS) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every `everyMs` until it returns a truthy value, or fails after `timeoutMs`. */
export async function until(what, check, { timeoutMs = WAIT_MS, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      // A check that hangs (a request to a stuck server) must not outlive the deadline.
      let timer;
      const expired = new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      });
      const value = await Promise.race([check(), expired]).finally(() => clearTimeout(timer));
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ""}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function portIsFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** `count` consecutive free ports (the supervisor uses base, base+1, ...). */
export async function freePortRange(count) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = await freePort();
    if (base + count > 65535) continue;
    let free = true;
    for (let i = 0; i < count && free; i++) free = await portIsFree(base + i);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports`);
}

function requireCommand(name, candidates) {
  for (const candidate of candidates) if (existsSync(candidate)) return candidate;
  throw new Error(`${name} is not installed: run \`bash scripts/install-deps.sh\``);
}

function requireBinary() {
  if (!existsSync(binary)) {
    throw new Error(`${binary} does not exist: build it with \`cargo build -p chat-cluster\` (or set CHAT_BIN)`);
  }
  return binary;
}

const redisServerPath = () => requireCommand("redis-server", ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]);
const nginxPath = () => requireCommand("nginx", ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]);

/** Sends one RESP command and resolves with the raw reply text. */
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("redis did not answer"));
    }, 2000);
    socket.on("connect", () => {
      let request = `*${args.length}\r\n`;
      for (const arg of args) request += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
      socket.write(request);
    });
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      clearTimeout(timer);
      socket.end();
      resolve(reply);
    });
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * A private redis-server on a free port; `stop()` kills it, `restart()` starts it again on the
 * same port. `persistent: true` turns on the append-only file (fsync always) in a temp dir, so
 * data survives `stop()` + `restart()`. `args` go to redis-server as they are (e.g.
 * `["--replicaof", "127.0.0.1", "<port>"]`).
 */
export async function startRedis({ persistent = false, args = [] } = {}) {
  const port = await freePort();
  // Its own directory even without persistence: a replica writes the RDB it syncs from its
  // master there, and nothing may land in the checkout.
  const dir = mkdtempSync(path.join(os.tmpdir(), "chat-redis-"));
  tempDirs.add(dir);
  let persistence = ["--save", "", "--appendonly", "no", "--dir", dir];
  if (persistent) {
    persistence = ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir];
  }
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    child: null,
    async restart() {
      this.child = track(
        spawn(redisServerPath(), ["--port", String(port), "--bind", "127.0.0.1", ...persistence, ...args], {
          stdio: ["ignore", "ignore", "pipe"],
        }),
        `redis-server:${port}`,
      );
      await setupStep(until(`redis-server on port ${port} to answer PING`, async () => (await redisCommand(port, "PING")).includes("PONG")));
    },
    async stop() {
      const child = this.child;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid, "SIGKILL");
      await exited;
    },
    /** Channels with a subscriber, classic or sharded (rooms and users are sharded channels). */
    async channels() {
      const names = [];
      for (const kind of ["CHANNELS", "SHARDCHANNELS"]) {
        const lines = (await redisCommand(port, "PUBSUB", kind, "*")).split("\r\n");
        names.push(...lines.filter((_, i) => i > 0 && lines[i - 1].startsWith("$")));
      }
      return names;
    },
  };
  await redis.restart();
  return redis;
}

async function getJson(url, headers = {}) {
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

/** The environment minus a stray CHAT_WORKER_SETTINGS, which would override the flags below. */
function withoutWorkerSettings() {
  const env = { ...process.env };
  delete env.CHAT_WORKER_SETTINGS;
  return env;
}

/** `chat-cluster supervise` with its JSON console lines collected in `lines`; `adminToken` sets
 * CHAT_ADMIN_TOKEN and is sent by `status()`. */
export async function startCluster({ workers = 2, redisUrl, extraArgs = [], env = {}, adminToken }) {
  const adminHeaders = adminToken ? { authorization: `Bearer ${adminToken}` } : {};
  if (adminToken) env = { ...env, CHAT_ADMIN_TOKEN: adminToken };
  const basePort = await freePortRange(workers);
  const adminPort = await freePort();
  const child = track(
    spawn(
      requireBinary(),
      [
        "supervise",
        "--workers", String(workers),
        "--base-port", String(basePort),
        "--admin-port", String(adminPort),
        "--redis-url", redisUrl,
        "--shutdown-grace-ms", "2000",
        ...extraArgs,
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...withoutWorkerSettings(), ...env } },
    ),
    "supervisor",
  );
  const events = new EventEmitter();
  const lines = [];
  readline.createInterface({ input: child.stdout }).on("line", (text) => {
    // The console prints only JSON when stdout is not a terminal; anything else is kept as
    // `non_json` for a test to see, rather than crashing the test file.
    let line;
    try {
      line = JSON.parse(text);
    } catch {
      line = { event: "non_json", text };
    }
    lines.push(line);
    events.emit("line", line);
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const cluster = {
    child,
    basePort,
    adminPort,
    ports: Array.from({ length: workers }, (_, i) => basePort + i),
    lines,
    exited,
    url: (i) => `http://127.0.0.1:${basePort + i}`,
    status: () => getJson(`http://127.0.0.1:${adminPort}/status`, adminHeaders),
    /** Resolves with the first console line, from now on or already printed after `since`, that matches. */
    waitLine(what, predicate, { since = 0, timeoutMs = WAIT_MS } = {}) {
      const seen = lines.slice(since).find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off("line", onLine);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for the supervisor to print ${what}`));
        }, timeoutMs);
        const onLine = (line) => {
          if (predicate(line)) {
            clearTimeout(timer);
            events.off("line", onLine);
            resolve(line);
          }
        };
        events.on("line", onLine);
      });
    },
    /** SIGTERM, then resolves with `{code, signal}` once the supervisor exits (bounded). */
    async stop(timeoutMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGTERM");
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the supervisor (pid ${child.pid}) did not exit within ${timeoutMs} ms of SIGTERM`)), timeoutMs);
      });
      try {
        return await Promise.race([exited, late]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
  // Setup fails at once, with the supervisor's stderr, if the supervisor dies while starting.
  const died = exited.then(({ code, signal }) => {
    throw new Error(`the supervisor exited (${signal ?? `code ${code}`}) while starting`);
  });
  died.catch(() => {});
  await setupStep(
    Promise.race([
      died,
      until(`/status on admin port ${adminPort} to show ${workers} ready workers`, async () => {
        const status = await cluster.status();
        return status.workers.length === workers && status.workers.every((w) => w.state === "ready");
      }),
    ]),
  );
  // Serving starts before Redis connects; tests about rooms across workers, logins and direct
  // messages need the bus and the store connected.
  await setupStep(
    Promise.race([
      died,
      until("every worker's /ready (Redis bus and store connected)", async () => {
        const answers = await Promise.all(cluster.ports.map((p) => fetch(`http://127.0.0.1:${p}/ready`)));
        return answers.every((a) => a.status === 200);
      }),
    ]),
  );
  return cluster;
}

/** `chat-cluster worker` alone on a free port; ready once `/monitor` answers 200. */
export async function startWorker({ redisUrl, extraArgs = [], env = {} }) {
  const port = await freePort();
  const child = track(
    spawn(requireBinary(), ["worker", "--port", String(port), "--redis-url", redisUrl, "--shutdown-grace-ms", "2000", ...extraArgs], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...withoutWorkerSettings(), ...env },
    }),
    `worker:${port}`,
  );
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const died = exited.then(({ code, signal }) => {
    throw new Error(`the worker exited (${signal ?? `code ${code}`}) while starting`);
  });
  died.catch(() => {});
  const url = `http://127.0.0.1:${port}`;
  await setupStep(Promise.race([died, until(`the worker on port ${port} to answer /monitor`, async () => (await fetch(`${url}/monitor`)).ok)]));
  return {
    child,
    port,
    url,
    exited,
    /** SIGTERM, then resolves with `{code, signal}` once the worker exits (bounded). */
    async stop(timeoutMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGTERM");
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the worker (pid ${child.pid}) did not exit within ${timeoutMs} ms of SIGTERM`)), timeoutMs);
      });
      try {
        return await Promise.race([exited, late]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** A real nginx in front of `upstreams`, with the config `chat-cluster nginx-config` generates;
 * serving once `ready` accepts its answer to `/monitor` (an upstream that is not the product,
 * such as the node design's worker, answers it 404). */
export async function startNginx({ upstreams, ready = (response) => response.ok }) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "chat-nginx-"));
  tempDirs.add(dir);
  chmodSync(dir, 0o755);
  const confPath = path.join(dir, "nginx.conf");
  const render = (list) =>
    execFileSync(requireBinary(), ["nginx-config", "--upstream", list.join(","), "--listen", `127.0.0.1:${port}`, "--runtime-dir", dir]).toString();
  writeFileSync(confPath, render(upstreams));
  const child = track(spawn(nginxPath(), ["-c", confPath, "-p", `${dir}/`], { stdio: ["ignore", "ignore", "pipe"] }), "nginx");
  await setupStep(until(`nginx on port ${port} to serve /monitor`, async () => ready(await fetch(`http://127.0.0.1:${port}/monitor`))));
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Regenerates the config for `list` and reloads nginx (new workers; old connections stay). */
    reload(list) {
      writeFileSync(confPath, render(list));
      execFileSync(nginxPath(), ["-s", "reload", "-c", confPath, "-p", `${dir}/`]);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid, "SIGQUIT");
      await Promise.race([exited, sleep(3000)]);
    },
  };
}

/**
 * A socket.io client that records every `message` event. Options pass through to `io()`;
 * `username` makes it emit `join` on every (re)connection, as the page does.
 */
export function chatClient(url, { roomid, username, ...options } = {}) {
  const socket = trackClient(io(url, {
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    transports: ["websocket"],
    ...(roomid === undefined ? {} : { query: { roomid } }),
    ...options,
  }));
  const received = [];
  const arrivals = new EventEmitter();
  socket.on("connect_error", (err) => {
    socket.lastConnectError = err;
  });
  socket.on("message", (message) => {
    received.push(message);
    arrivals.emit("message", message);
  });
  // The room's recent messages, sent once after a join (oldest first).
  const history = [];
  socket.on("history", (payload) => {
    history.push(...(payload?.messages ?? []));
    socket.histories = (socket.histories ?? 0) + 1;
    arrivals.emit("message", null);
  });
  socket.joins = 0;
  socket.recoveries = 0;
  if (username) {
    socket.on("connect", () => {
      // A recovered session is still in its room (socket.io connection state recovery): no
      // join, as the page does.
      if (socket.recovered) {
        socket.recoveries += 1;
        socket.joins += 1;
        return;
      }
      socket.emit("join", { username }, (ack) => {
        if (ack?.ok) socket.joins += 1;
      });
    });
  }
  return Object.assign(socket, {
    received,
    history,
    /** The first message, already received or coming, that matches. */
    next(what, predicate, timeoutMs = WAIT_MS) {
      const seen = received.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          arrivals.off("message", onMessage);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last received: ${JSON.stringify(received.slice(-5))}`));
        }, timeoutMs);
        const onMessage = (message) => {
          if (predicate(message)) {
            clearTimeout(timer);
            arrivals.off("message", onMessage);
            resolve(message);
          }
        };
        arrivals.on("message", onMessage);
      });
    },
    ack(event, payload, timeoutMs = WAIT_MS) {
      return socket.timeout(timeoutMs).emitWithAck(event, payload);
    },
    connected_() {
      if (socket.connected) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const why = socket.lastConnectError ? ` (last connect_error: ${socket.lastConnectError.message})` : "";
          reject(new Error(`timed out after ${WAIT_MS} ms waiting for a socket.io connection to ${url}${why}`));
        }, WAIT_MS);
        socket.once("connect", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  });
}

/** Connects and joins; resolves once the join is acknowledged. */
export async function member(url, roomid, username, options = {}) {
  const client = chatClient(url, { roomid, ...options });
  await client.connected_();
  const ack = await client.ack("join", { username });
  if (!ack?.ok) throw new Error(`join refused: ${JSON.stringify(ack)}`);
  // Re-join after automatic reconnections that did not recover the session, as the page does.
  client.on("connect", () => {
    if (!client.recovered) client.emit("join", { username });
  });
  return client;
}

export const said = (text) => (m) => m.event === "broadcast_say" && m.data?.text === text;

/** Says probes from `from` until one reaches `to`: after a restart each worker re-subscribes on its own schedule. */
export async function untilCrosses(from, to, label) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const text = `${label} ${attempt}`;
    await from.ack("say", { text });
    try {
      await to.next(text, said(text), 200);
      return;
    } catch {
      // Not subscribed yet: try again.
    }
  }
  throw new Error(`no "${label}" probe crossed workers in 50 tries`);
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code !== "ESRCH";
  }
}
