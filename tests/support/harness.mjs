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
import { io } from "socket.io-client";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const binary = process.env.CHAT_BIN || path.join(repoRoot, "target/debug/chat-cluster");
const WAIT_MS = 10_000;

const children = new Set();
const tempDirs = new Set();

function track(child, name) {
  child.testName = name;
  child.stderrTail = "";
  child.stderr?.on("data", (chunk) => {
    // Keep the last 8 KiB of each child's stderr for failure reports.
    child.stderrTail = (child.stderrTail + chunk.toString()).slice(-8192);
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Kills every process this harness started that is still running, and removes temp dirs. */
export async function cleanup() {
  const exits = [];
  for (const child of children) {
    exits.push(new Promise((resolve) => child.once("exit", resolve)));
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  await Promise.race([Promise.all(exits), sleep(5000)]);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

process.on("exit", () => {
  for (const child of children) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
});

/** The stderr tails of the processes still running, for a failing test's message. */
export function childLogs() {
  return [...children].map((c) => `--- ${c.testName} (pid ${c.pid})\n${c.stderrTail}`).join("\n");
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it returns a truthy value, or fails after `timeoutMs`. */
export async function until(what, check, { timeoutMs = WAIT_MS, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const value = await check();
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

/** A private redis-server on a free port; `stop()` kills it, `restart()` starts it again on the same port. */
export async function startRedis() {
  const port = await freePort();
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    child: null,
    async restart() {
      this.child = track(
        spawn(redisServerPath(), ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
          stdio: ["ignore", "ignore", "pipe"],
        }),
        `redis-server:${port}`,
      );
      await until("redis to answer PING", async () => (await redisCommand(port, "PING")).includes("PONG"));
    },
    async stop() {
      const child = this.child;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid, "SIGKILL");
      await exited;
    },
    async channels() {
      const reply = await redisCommand(port, "PUBSUB", "CHANNELS", "*");
      const lines = reply.split("\r\n");
      return lines.filter((_, i) => i > 0 && lines[i - 1].startsWith("$"));
    },
  };
  await redis.restart();
  return redis;
}

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

/** The environment minus a stray CHAT_WORKER_SETTINGS, which would override the flags below. */
function withoutWorkerSettings() {
  const env = { ...process.env };
  delete env.CHAT_WORKER_SETTINGS;
  return env;
}

/** `chat-cluster supervise` with its JSON console lines collected in `lines`. */
export async function startCluster({ workers = 2, redisUrl, extraArgs = [] }) {
  const basePort = await freePortRange(workers);
  const adminPort = await freePort();
  const child = track(
    spawn(
      binary,
      [
        "supervise",
        "--workers", String(workers),
        "--base-port", String(basePort),
        "--admin-port", String(adminPort),
        "--redis-url", redisUrl,
        "--shutdown-grace-ms", "2000",
        ...extraArgs,
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: withoutWorkerSettings() },
    ),
    "supervisor",
  );
  const events = new EventEmitter();
  const lines = [];
  readline.createInterface({ input: child.stdout }).on("line", (text) => {
    const line = JSON.parse(text); // The console prints only JSON when stdout is not a terminal.
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
    status: () => getJson(`http://127.0.0.1:${adminPort}/status`),
    /** Resolves with the first console line, from now on or already printed after `since`, that matches. */
    waitLine(what, predicate, { since = 0, timeoutMs = WAIT_MS } = {}) {
      const seen = lines.slice(since).find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off("line", onLine);
          reject(new Error(`timed out waiting for the supervisor to print ${what}\n${childLogs()}`));
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
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGTERM");
      return exited;
    },
  };
  await until("every worker to be ready", async () => {
    const status = await cluster.status();
    return status.workers.length === workers && status.workers.every((w) => w.state === "ready");
  });
  // Serving starts before the Redis bus connects; tests about rooms across workers need both.
  await until("every worker's Redis bus", async () => {
    const answers = await Promise.all(cluster.ports.map((p) => fetch(`http://127.0.0.1:${p}/ready`)));
    return answers.every((a) => a.status === 200);
  });
  return cluster;
}

/** A real nginx in front of `upstreams`, with the config `chat-cluster nginx-config` generates. */
export async function startNginx({ upstreams }) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "chat-nginx-"));
  tempDirs.add(dir);
  chmodSync(dir, 0o755);
  const confPath = path.join(dir, "nginx.conf");
  const render = (list) =>
    execFileSync(binary, ["nginx-config", "--upstream", list.join(","), "--listen", `127.0.0.1:${port}`, "--runtime-dir", dir]).toString();
  writeFileSync(confPath, render(upstreams));
  const child = track(spawn(nginxPath(), ["-c", confPath, "-p", `${dir}/`], { stdio: ["ignore", "ignore", "pipe"] }), "nginx");
  await until("nginx to serve /monitor", async () => (await fetch(`http://127.0.0.1:${port}/monitor`)).ok);
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
  const socket = io(url, {
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    transports: ["websocket"],
    ...(roomid === undefined ? {} : { query: { roomid } }),
    ...options,
  });
  const received = [];
  const arrivals = new EventEmitter();
  socket.on("message", (message) => {
    received.push(message);
    arrivals.emit("message", message);
  });
  socket.joins = 0;
  if (username) {
    socket.on("connect", () => {
      socket.emit("join", { username }, (ack) => {
        if (ack?.ok) socket.joins += 1;
      });
    });
  }
  return Object.assign(socket, {
    received,
    /** The first message, already received or coming, that matches. */
    next(what, predicate, timeoutMs = WAIT_MS) {
      const seen = received.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          arrivals.off("message", onMessage);
          reject(new Error(`timed out waiting for ${what}; received: ${JSON.stringify(received.slice(-5))}\n${childLogs()}`));
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
        const timer = setTimeout(() => reject(new Error(`connection to ${url} timed out`)), WAIT_MS);
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
  // Re-join after automatic reconnections, as the page does.
  client.on("connect", () => client.emit("join", { username }));
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
  throw new Error(`no "${label}" message crossed workers\n${childLogs()}`);
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code !== "ESRCH";
  }
}
