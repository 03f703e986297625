// Several hosts on one machine, for multi-host tests: a redis-server on a host of its own, a
// `chat-cluster supervise` per host bound to that host's address, and a real nginx in the root
// namespace with the `ip_hash` upstream that `chat-cluster nginx-config --hosts` generates. The
// hosts are network namespaces from ./netns.mjs; every process is started through the harness
// (tracked, killed by PID at cleanup) and the namespaces are removed by netns.mjs.

import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { binary, freePort, sleep, spawnTracked, until } from "./harness.mjs";

const tempDirs = new Set();
process.on("exit", () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755);
  tempDirs.add(dir);
  return dir;
}

/** The environment minus a stray CHAT_WORKER_SETTINGS, which would override the flags. */
function cleanEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.CHAT_WORKER_SETTINGS;
  return env;
}

/** Rejects with `what` if `child` exits before `promise` settles. */
function unlessExits(child, what, promise) {
  const exited = new Promise((_, reject) => {
    child.once("exit", (code, signal) => reject(new Error(`${what} exited (${signal ?? `code ${code}`}) while starting:\n${child.stderrTail}`)));
  });
  exited.catch(() => {});
  return Promise.race([promise, exited]);
}

/** Whether `pid` is gone: no such process, or a zombie nobody reaped yet. */
export function processGone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code === "ESRCH") return true;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return true;
  }
}

/**
 * A redis-server inside `host` of `network`, on `port` of the host's address, with a password
 * (it is reachable over the test network, as a real Redis would be). `url` is what the
 * supervisors on the other hosts use; `cli(...args)` runs redis-cli against it from the root
 * namespace (through the bridge).
 */
export async function startRedisOnHost(network, host, { port = 6379, password = "multi-host-test" } = {}) {
  const { address } = network.hosts[host];
  const [command, args] = network.command(host, [
    "redis-server",
    "--port", String(port),
    "--bind", address,
    "--requirepass", password,
    "--save", "",
    "--appendonly", "no",
  ]);
  const child = spawnTracked(command, args, `redis-server@${host}`, { stdio: ["ignore", "ignore", "pipe"] });
  const cli = (...argv) =>
    execFileSync("redis-cli", ["-h", address, "-p", String(port), "--no-auth-warning", "-a", password, ...argv], {
      timeout: 5000,
      stdio: ["ignore", "pipe", "pipe"],
    })
      .toString()
      .trim();
  await unlessExits(child, "redis-server", until(`redis-server on ${address}:${port}`, async () => cli("PING") === "PONG"));
  return { child, address, port, url: `redis://:${password}@${address}:${port}`, cli };
}

/**
 * `chat-cluster supervise` inside `host`, its workers on `basePort`, `basePort + 1`, ... of the
 * host's address (`--bind`), its `/status` on `adminPort` of that address. Resolves once every
 * worker is ready and every worker's `/ready` is 200 (the Redis bus is connected).
 */
export async function startSupervisorOnHost(network, host, { redisUrl, workers = 2, basePort = 6001, adminPort = 9100, extraArgs = [] }) {
  const { address } = network.hosts[host];
  const [command, args] = network.command(host, [
    binary,
    "supervise",
    "--workers", String(workers),
    "--bind", address,
    "--base-port", String(basePort),
    "--admin-bind", address,
    "--admin-port", String(adminPort),
    "--redis-url", redisUrl,
    "--shutdown-grace-ms", "2000",
    ...extraArgs,
  ]);
  const child = spawnTracked(command, args, `supervisor@${host}`, { stdio: ["ignore", "pipe", "pipe"], env: cleanEnv() });
  // Nothing here reads the console's JSON lines; draining them keeps the pipe from filling up
  // (a supervisor blocked on a full stdout would stop serving /status).
  child.stdout.resume();
  const ports = Array.from({ length: workers }, (_, i) => basePort + i);
  const status = async () => {
    const response = await fetch(`http://${address}:${adminPort}/status`, { signal: AbortSignal.timeout(3000) });
    if (!response.ok) throw new Error(`/status of ${host} answered ${response.status}`);
    return response.json();
  };
  const supervisor = {
    host,
    address,
    child,
    pid: child.pid,
    ports,
    status,
    upstreams: ports.map((p) => `${address}:${p}`),
    /** Connections on this host's workers, from its supervisor's `/status`. */
    async connections() {
      return (await status()).total_connections;
    },
    /** The pids of the running workers, from `/status`. */
    async workerPids() {
      return (await status()).workers.map((w) => w.pid).filter((pid) => pid > 0);
    },
  };
  await unlessExits(
    child,
    `the supervisor on ${host}`,
    until(`${workers} ready workers on ${host}`, async () => {
      const { workers: list } = await status();
      return list.length === workers && list.every((w) => w.state === "ready");
    }),
  );
  await unlessExits(
    child,
    `the supervisor on ${host}`,
    until(`every worker's /ready on ${host} (Redis bus connected)`, async () => {
      const answers = await Promise.all(ports.map((p) => fetch(`http://${address}:${p}/ready`, { signal: AbortSignal.timeout(3000) })));
      return answers.every((a) => a.status === 200);
    }),
  );
  return supervisor;
}

/**
 * Loses `supervisor`'s whole host at once: its link goes down first (nothing it sends after
 * that reaches anyone: no FIN, no RST, as with a power cut), then the supervisor is stopped
 * (SIGSTOP, so it cannot respawn anything), every worker SIGKILLed, then the supervisor
 * SIGKILLed. Resolves with the pids it killed once every one of them is gone.
 */
export async function loseHost(network, supervisor) {
  const workerPids = await supervisor.workerPids();
  if (workerPids.length === 0) throw new Error(`no running workers on ${supervisor.host} to kill`);
  network.linkDown(supervisor.host);
  process.kill(supervisor.pid, "SIGSTOP");
  for (const pid of workerPids) process.kill(pid, "SIGKILL");
  process.kill(supervisor.pid, "SIGKILL");
  const pids = [supervisor.pid, ...workerPids];
  await until(`the processes of ${supervisor.host} (${pids.join(", ")}) to be gone`, async () => pids.every(processGone));
  return pids;
}

function nginxPath() {
  const found = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"].find((p) => existsSync(p));
  if (!found) throw new Error("nginx is not installed: run `bash scripts/install-deps.sh`");
  return found;
}

/**
 * A real nginx in the root namespace on a free loopback port, with the complete config that
 * `chat-cluster nginx-config --hosts <addresses> --workers <n> --base-port <port>` prints.
 * `conf` is that config, for a test to check what it was given.
 */
export async function startNginxOverHosts({ hosts, workers, basePort = 6001 }) {
  const port = await freePort();
  const dir = tempDir("chat-nginx-hosts-");
  const conf = execFileSync(binary, [
    "nginx-config",
    "--hosts", hosts.join(","),
    "--workers", String(workers),
    "--base-port", String(basePort),
    "--listen", `127.0.0.1:${port}`,
    "--runtime-dir", dir,
  ]).toString();
  const confPath = path.join(dir, "nginx.conf");
  writeFileSync(confPath, conf);
  const child = spawnTracked(nginxPath(), ["-c", confPath, "-p", `${dir}/`], "nginx", { stdio: ["ignore", "ignore", "pipe"] });
  await unlessExits(child, "nginx", until(`nginx on port ${port} to serve /monitor`, async () => (await fetch(`http://127.0.0.1:${port}/monitor`)).ok));
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    conf,
    errorLog: () => (existsSync(path.join(dir, "error.log")) ? readFileSync(path.join(dir, "error.log"), "utf8") : ""),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      // Fast shutdown: nginx closes every connection at once. (A graceful SIGQUIT would wait
      // for the websockets of clients whose host vanished, whose close handshakes never end.)
      process.kill(child.pid, "SIGTERM");
      await Promise.race([exited, sleep(3000)]);
    },
  };
}

/**
 * The upstream server nginx's `ip_hash` picks first for an IPv4 client address, among `count`
 * servers of equal weight in config order: the hash of the first three octets, as in nginx's
 * ngx_http_upstream_ip_hash_module.c (start 89; for each octet hash = (hash * 113 + octet) %
 * 6271; server = hash % count). Only the first choice: a server marked failed makes nginx rehash.
 */
export function ipHashServer(address, count) {
  const octets = address.split(".").map(Number);
  let hash = 89;
  for (let i = 0; i < 3; i++) hash = (hash * 113 + octets[i]) % 6271;
  return hash % count;
}

/**
 * Client source addresses 127.0.N.1 (N from 1) whose `ip_hash` choice is one of `servers`
 * (indexes into the upstream list): the first `count` of them. Loopback accepts any 127.x
 * source, so a client bound to one of these reaches nginx through the chosen server.
 */
export function clientAddressesFor(servers, upstreamCount, count) {
  const found = [];
  for (let n = 1; n < 255 && found.length < count; n++) {
    const address = `127.0.${n}.1`;
    if (servers.includes(ipHashServer(address, upstreamCount))) found.push(address);
  }
  if (found.length < count) throw new Error(`only ${found.length} of ${count} client addresses hash to servers ${servers}`);
  return found;
}
