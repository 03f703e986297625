// Redis topologies for tests, from Debian's redis-server on free loopback ports: a Redis Cluster
// (3 masters + 3 replicas by default, made by `redis-cli --cluster create`) and a Sentinel setup
// (1 master + 1 replica + 3 sentinels, `redis-server sentinel.conf --sentinel`). Start each once
// per test file (a failover test ends with a different topology: the next test reads roles
// again rather than assuming them). Every process is started through the harness, so
// `cleanup()` kills them by PID; `stop()` does the same earlier.
//
// Roles are always read back from Redis (CLUSTER NODES, SENTINEL get-master-addr-by-name, ROLE):
// `redis-cli --cluster create` may make any port a master, and a failover changes them.
//
// Making a replica lag: `DEBUG SLEEP` alone is not enough on loopback, because the master has
// already handed the replication stream to the kernel, and the sleeping replica reads it from its
// socket when it wakes. So `lagReplica` puts the replica to sleep and then writes a filler value
// (32 MiB by default, more than the socket buffers on both sides hold) on its master: every write
// after it waits in the master's own output buffer, and is lost if the master dies before the
// replica wakes. That is the asynchronous-replication window a `WAIT` closes.

import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, spawnTracked, until } from "./harness.mjs";

const REDIS_SERVER = "redis-server";
const REDIS_CLI = "redis-cli";
const LAG_FILLER_BYTES = 32 * 1024 * 1024;
const ERROR_REPLY = /^(ERR|WRONGTYPE|MOVED|ASK|CLUSTERDOWN|CROSSSLOT|NOAUTH|LOADING|BUSY|NOSCRIPT|READONLY|MASTERDOWN|NOREPLICAS|TRYAGAIN|NOPERM)\b/;

const tempDirs = new Set();
process.on("exit", () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `redis-cli -p <port> <args...>` against 127.0.0.1 and resolves with its output, trimmed
 * (arrays: one element per line). Rejects on an error reply, an unreachable server, or no answer
 * within `timeoutMs`.
 */
export function redisCli(port, args, { timeoutMs = 5000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(REDIS_CLI, ["-h", "127.0.0.1", "-p", String(port), ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const out = stdout.toString().trim();
      if (err) {
        const why = err.killed ? `no answer within ${timeoutMs} ms` : (stderr.toString().trim() || out || err.message);
        reject(new Error(`redis-cli -p ${port} ${args.join(" ")}: ${why}`));
      } else if (ERROR_REPLY.test(out) || /^Could not connect/.test(out)) {
        reject(new Error(`redis-cli -p ${port} ${args.join(" ")}: ${out}`));
      } else {
        resolve(out);
      }
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

/** `count` distinct free loopback ports. */
async function freePorts(count) {
  const ports = new Set();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Starts one redis-server and resolves once it answers PING; the child is tracked by the harness. */
async function startServer(name, port, args) {
  const child = spawnTracked(REDIS_SERVER, args, name, { stdio: ["ignore", "ignore", "pipe"] });
  const died = new Promise((_, reject) => {
    child.once("exit", (code, signal) => reject(new Error(`${name} exited (${signal ?? `code ${code}`}) while starting:\n${child.stderrTail}`)));
  });
  died.catch(() => {});
  await Promise.race([died, until(`${name} to answer PING`, async () => (await redisCli(port, ["PING"], { timeoutMs: 1000 })) === "PONG")]);
  return child;
}

/** SIGKILLs `child` (if still running) and resolves once it has exited. */
async function kill(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  process.kill(child.pid, "SIGKILL");
  await exited;
}

/** The settings every node of these fixtures shares: no persistence, DEBUG allowed from loopback. */
const COMMON = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0"];

/**
 * Puts the replica on `replicaPort` to sleep for `ms` (DEBUG SLEEP: it neither reads the
 * replication stream nor acknowledges it), confirms it sleeps, then writes a filler of
 * `fillerBytes` on `masterPort` under `fillerKey` (on a cluster, a key of that master's slots).
 * From then until the replica wakes, every write on the master stays in the master's memory only.
 * Resolves with `{ awake }`, a promise that resolves when the replica answers again.
 */
async function lagReplica({ replicaPort, masterPort, ms, fillerKey, fillerBytes = LAG_FILLER_BYTES }) {
  const awake = redisCli(replicaPort, ["DEBUG", "SLEEP", String(ms / 1000)], { timeoutMs: ms + 10_000 });
  awake.catch(() => {});
  await until(`the replica on ${replicaPort} to be asleep`, async () => {
    try {
      await redisCli(replicaPort, ["PING"], { timeoutMs: 150 });
      return false;
    } catch (err) {
      return /no answer/.test(err.message);
    }
  });
  await redisCli(masterPort, ["EVAL", "return redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1])))", "1", fillerKey, String(fillerBytes)]);
  return { awake: awake.then(() => undefined) };
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster

/**
 * One line of CLUSTER NODES: `{ id, port, role: "master" | "replica", masterId, failed, slots }`
 * (`slots`: `[first, last]` ranges; `failed`: flagged fail or fail? by the node asked).
 */
export function parseClusterNodes(text) {
  return text
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      const [id, address, flags, masterId, , , , , ...slots] = line.trim().split(" ");
      const flagList = flags.split(",");
      return {
        id,
        port: Number(address.split("@")[0].split(":").at(-1)),
        role: flagList.includes("master") ? "master" : "replica",
        masterId: masterId === "-" ? null : masterId,
        failed: flagList.includes("fail") || flagList.includes("fail?"),
        slots: slots
          .filter((s) => !s.startsWith("["))
          .map((s) => (s.includes("-") ? s.split("-").map(Number) : [Number(s), Number(s)])),
      };
    });
}

/**
 * A Redis Cluster of `masters` masters with `replicasPerMaster` replicas each, on free loopback
 * ports (each with its cluster bus port set explicitly by `cluster-port`), `cluster-node-timeout`
 * of `nodeTimeoutMs`, and `cluster-replica-validity-factor 0` (a replica that lagged may still
 * take over, as tests of lag want). Resolves once every node sees `cluster_state:ok` and every
 * node. Helpers:
 * - `url`: `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&...` (every node);
 * - `nodes()`: CLUSTER NODES as a live node sees it; `masters()`, `replicas()`;
 * - `masterOfKey(key)`: the master serving `key` now; `replicaOf(masterPort)`;
 * - `kill(port)`: SIGKILL that node; `restart(port)`: start it again (its cluster config kept);
 * - `waitForPromotion(oldMasterPort)`: resolves with the replica that took over the slots of
 *   that (dead) master, once every live node sees `cluster_state:ok`;
 * - `lagReplica(replicaPort, ms)`: see the top of this file;
 * - `cli(port, ...args)`: redis-cli on one node; `stop()`: SIGKILL every node.
 */
export async function startRedisCluster({ masters = 3, replicasPerMaster = 1, nodeTimeoutMs = 1000 } = {}) {
  const count = masters * (1 + replicasPerMaster);
  const allPorts = await freePorts(count * 2);
  const ports = allPorts.slice(0, count);
  const busPorts = allPorts.slice(count);
  const dir = tempDir("chat-redis-cluster-");
  const children = new Map();
  const args = (port, i) => [
    "--port", String(port),
    "--cluster-enabled", "yes",
    "--cluster-port", String(busPorts[i]),
    "--cluster-config-file", `nodes-${port}.conf`,
    "--cluster-node-timeout", String(nodeTimeoutMs),
    "--cluster-replica-validity-factor", "0",
    "--dir", dir,
    ...COMMON,
  ];
  const startNode = async (port) => {
    const i = ports.indexOf(port);
    children.set(port, await startServer(`redis-cluster:${port}`, port, args(port, i)));
  };
  await Promise.all(ports.map(startNode));
  await new Promise((resolve, reject) => {
    execFile(
      REDIS_CLI,
      ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", String(replicasPerMaster), "--cluster-yes"],
      { timeout: 30_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`redis-cli --cluster create failed: ${stderr}${stdout}`)) : resolve()),
    );
  });

  const slotsOf = new Map();
  const alive = () => ports.filter((p) => children.get(p)?.exitCode === null && children.get(p)?.signalCode === null);
  const cluster = {
    ports,
    url: `redis-cluster://127.0.0.1:${ports[0]}?${ports.slice(1).map((p) => `node=127.0.0.1:${p}`).join("&")}`,
    cli: (port, ...argv) => redisCli(port, argv),
    /** CLUSTER NODES as the first live node sees it. */
    async nodes() {
      return parseClusterNodes(await redisCli(alive()[0], ["CLUSTER", "NODES"]));
    },
    async masters() {
      return (await cluster.nodes()).filter((n) => n.role === "master" && !n.failed);
    },
    async replicas() {
      return (await cluster.nodes()).filter((n) => n.role === "replica");
    },
    async masterOfKey(key) {
      const slot = Number(await redisCli(alive()[0], ["CLUSTER", "KEYSLOT", key]));
      const master = (await cluster.masters()).find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b));
      if (!master) throw new Error(`no live master serves slot ${slot}`);
      return master;
    },
    async replicaOf(masterPort) {
      const nodes = await cluster.nodes();
      const master = nodes.find((n) => n.port === masterPort);
      return nodes.find((n) => n.masterId === master?.id && !n.failed) ?? null;
    },
    /** Resolves once every live node answers `cluster_state:ok` and agrees on one master per slot range. */
    async untilHealthy(what = "the cluster to be healthy", timeoutMs = 20_000) {
      await until(
        what,
        async () => {
          for (const port of alive()) {
            if (!(await redisCli(port, ["CLUSTER", "INFO"])).includes("cluster_state:ok")) return false;
          }
          const nodes = await cluster.nodes();
          const covered = nodes.filter((n) => n.role === "master" && !n.failed).reduce((sum, n) => sum + n.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0);
          return covered === 16384;
        },
        { timeoutMs, everyMs: 100 },
      );
    },
    /** SIGKILLs one node; the slots it served as a master are remembered for `waitForPromotion`. */
    async kill(port) {
      const node = (await cluster.nodes()).find((n) => n.port === port);
      if (node?.role === "master") slotsOf.set(port, node.slots);
      await kill(children.get(port));
    },
    /** Starts a killed node again; resolves once it is back in the cluster, unflagged. */
    async restart(port) {
      await startNode(port);
      await until(`${port} to rejoin the cluster`, async () => {
        const node = (await cluster.nodes()).find((n) => n.port === port);
        return node !== undefined && !node.failed;
      }, { timeoutMs: 20_000, everyMs: 100 });
    },
    async waitForPromotion(oldMasterPort, timeoutMs = 20_000) {
      const slots = slotsOf.get(oldMasterPort);
      if (!slots?.length) throw new Error(`${oldMasterPort} was not a master with slots when it was killed`);
      const [firstSlot] = slots[0];
      let promoted;
      await until(
        `a replica of ${oldMasterPort} to take over its slots`,
        async () => {
          promoted = (await cluster.masters()).find((n) => n.port !== oldMasterPort && n.slots.some(([a, b]) => firstSlot >= a && firstSlot <= b));
          return promoted !== undefined;
        },
        { timeoutMs, everyMs: 100 },
      );
      await cluster.untilHealthy(`every live node to see cluster_state:ok after the promotion of ${promoted.port}`, timeoutMs);
      return promoted;
    },
    async lagReplica(replicaPort, ms) {
      const nodes = await cluster.nodes();
      const replica = nodes.find((n) => n.port === replicaPort);
      const master = nodes.find((n) => n.id === replica?.masterId);
      if (!replica || replica.role !== "replica" || !master) throw new Error(`${replicaPort} is not a replica of a known master`);
      // A filler key on that master's own slots: try hash tags until one lands there.
      let fillerKey;
      for (let i = 0; !fillerKey; i++) {
        const key = `{lag-filler-${i}}`;
        const slot = Number(await redisCli(master.port, ["CLUSTER", "KEYSLOT", key]));
        if (master.slots.some(([a, b]) => slot >= a && slot <= b)) fillerKey = key;
      }
      return lagReplica({ replicaPort, masterPort: master.port, ms, fillerKey });
    },
    async stop() {
      await Promise.all([...children.values()].map(kill));
    },
  };
  await cluster.untilHealthy(`every node of the new cluster to see cluster_state:ok`);
  // `--cluster create` returns once the slots are assigned; which nodes are replicas spreads by
  // gossip after that (a busy machine showed 5 "masters" for a while): wait until every node
  // knows every node and sees exactly `masters` masters.
  await until(`every node to know all ${count} nodes, ${masters} of them masters`, async () => {
    for (const port of ports) {
      const nodes = parseClusterNodes(await redisCli(port, ["CLUSTER", "NODES"]));
      if (nodes.length !== count || nodes.some((n) => n.failed)) return false;
      if (nodes.filter((n) => n.role === "master").length !== masters) return false;
    }
    return true;
  }, { timeoutMs: 20_000, everyMs: 100 });
  return cluster;
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel

/**
 * A master, one replica and `sentinels` sentinels monitoring it as `serviceName` (quorum: a
 * majority), with `down-after-milliseconds` of `downAfterMs` and `failover-timeout` of
 * `failoverTimeoutMs`. Each sentinel runs `redis-server <its own copy of sentinel.conf>
 * --sentinel` (sentinels rewrite their config file). Resolves once the replica is in sync and
 * every sentinel knows the replica and the other sentinels. Helpers:
 * - `url`: `redis-sentinel://127.0.0.1:S1/0?sentinelServiceName=NAME&node=127.0.0.1:S2&...`;
 * - `dataPorts` (master and replica, as started), `sentinelPorts`;
 * - `masterPort()`: the master as the sentinels name it now (SENTINEL get-master-addr-by-name);
 * - `role(port)`: `"master"` or `"slave"` as that server says (ROLE);
 * - `replicaPort()`: the data port that is not the master;
 * - `killMaster()`: SIGKILLs the current master, resolves with its port;
 * - `waitForPromotion(oldMasterPort)`: resolves with the new master's port once every live
 *   sentinel names it and it says it is master;
 * - `restart(port)`: starts a data node again, as a replica of the current master;
 * - `lagReplica(ms)`: see the top of this file; `stop()`: SIGKILL every process.
 */
export async function startRedisSentinel({ serviceName = "chat", sentinels = 3, downAfterMs = 1000, failoverTimeoutMs = 3000 } = {}) {
  const [masterPort, replicaPort, ...sentinelPorts] = await freePorts(2 + sentinels);
  const dataPorts = [masterPort, replicaPort];
  const dir = tempDir("chat-redis-sentinel-");
  const children = new Map();
  const quorum = Math.floor(sentinels / 2) + 1;

  const startData = async (port, replicaOf) => {
    const args = ["--port", String(port), "--dir", dir, "--dbfilename", `dump-${port}.rdb`, ...COMMON];
    if (replicaOf) args.push("--replicaof", "127.0.0.1", String(replicaOf));
    children.set(port, await startServer(`redis-data:${port}`, port, args));
  };
  await startData(masterPort);
  await startData(replicaPort, masterPort);
  await until(`the replica on ${replicaPort} to be in sync`, async () => (await redisCli(replicaPort, ["INFO", "replication"])).includes("master_link_status:up"));

  for (const port of sentinelPorts) {
    const conf = path.join(dir, `sentinel-${port}.conf`);
    writeFileSync(
      conf,
      [
        `port ${port}`,
        "bind 127.0.0.1",
        `dir ${dir}`,
        `sentinel monitor ${serviceName} 127.0.0.1 ${masterPort} ${quorum}`,
        `sentinel down-after-milliseconds ${serviceName} ${downAfterMs}`,
        `sentinel failover-timeout ${serviceName} ${failoverTimeoutMs}`,
        `sentinel parallel-syncs ${serviceName} 1`,
        "",
      ].join("\n"),
    );
    const child = spawnTracked(REDIS_SERVER, [conf, "--sentinel"], `redis-sentinel:${port}`, { stdio: ["ignore", "ignore", "pipe"] });
    children.set(port, child);
  }
  const liveSentinels = () => sentinelPorts.filter((p) => children.get(p).exitCode === null && children.get(p).signalCode === null);
  const masterAddrFrom = async (sentinelPort) => {
    const [host, port] = (await redisCli(sentinelPort, ["SENTINEL", "get-master-addr-by-name", serviceName])).split("\n");
    return `${host}:${port}`;
  };
  // SENTINEL MASTER answers field/value lines; one field by name.
  const masterField = async (sentinelPort, field) => {
    const lines = (await redisCli(sentinelPort, ["SENTINEL", "MASTER", serviceName])).split("\n");
    return lines[lines.indexOf(field) + 1];
  };
  await until(
    "every sentinel to know the replica and the other sentinels",
    async () => {
      for (const port of sentinelPorts) {
        if ((await masterField(port, "num-slaves")) !== "1") return false;
        if ((await masterField(port, "num-other-sentinels")) !== String(sentinels - 1)) return false;
      }
      return true;
    },
    { timeoutMs: 20_000, everyMs: 100 },
  );

  const setup = {
    serviceName,
    dataPorts,
    sentinelPorts,
    url: `redis-sentinel://127.0.0.1:${sentinelPorts[0]}/0?sentinelServiceName=${serviceName}&${sentinelPorts.slice(1).map((p) => `node=127.0.0.1:${p}`).join("&")}`,
    cli: (port, ...argv) => redisCli(port, argv),
    async masterPort() {
      return Number((await masterAddrFrom(liveSentinels()[0])).split(":")[1]);
    },
    async role(port) {
      return (await redisCli(port, ["ROLE"])).split("\n")[0];
    },
    async replicaPort() {
      const master = await setup.masterPort();
      return dataPorts.find((p) => p !== master);
    },
    async killMaster() {
      const port = await setup.masterPort();
      await kill(children.get(port));
      return port;
    },
    async waitForPromotion(oldMasterPort, timeoutMs = 30_000) {
      let promoted;
      await until(
        `the sentinels to promote a new master in place of ${oldMasterPort}`,
        async () => {
          const named = new Set();
          for (const port of liveSentinels()) named.add(await masterAddrFrom(port));
          if (named.size !== 1) return false;
          promoted = Number([...named][0].split(":")[1]);
          return promoted !== oldMasterPort && (await setup.role(promoted)) === "master";
        },
        { timeoutMs, everyMs: 100 },
      );
      return promoted;
    },
    /** Starts a data node again as a replica of the current master; resolves once it is in sync
     * and every live sentinel lists it as a replica that is up. */
    async restart(port) {
      await startData(port, await setup.masterPort());
      await until(`${port} to be a replica in sync`, async () => (await redisCli(port, ["INFO", "replication"])).includes("master_link_status:up"));
      const seen = new Map();
      await until(
        `every sentinel to see ${port} as a replica that is up`,
        async () => {
          for (const sentinel of liveSentinels()) {
            const lines = (await redisCli(sentinel, ["SENTINEL", "REPLICAS", serviceName])).split("\n");
            // Field/value lines per replica: find this port's flags.
            const at = lines.findIndex((line, i) => line === "port" && lines[i + 1] === String(port));
            const flags = at < 0 ? "(not listed)" : lines[lines.indexOf("flags", at) + 1];
            seen.set(sentinel, flags);
            if (flags !== "slave") return false;
          }
          return true;
        },
        // A sentinel whose timer was held up (a busy machine) enters TILT mode for 30 s, during
        // which it updates no flags: wait past it.
        { timeoutMs: 60_000, everyMs: 200 },
      ).catch(async (err) => {
        const tilt = {};
        for (const sentinel of liveSentinels()) {
          const info = await redisCli(sentinel, ["INFO", "sentinel"]).catch((e) => e.message);
          tilt[sentinel] = /sentinel_tilt:(\d)/.exec(info)?.[1];
        }
        throw new Error(`${err.message}; last flags per sentinel: ${JSON.stringify(Object.fromEntries(seen))}; in TILT: ${JSON.stringify(tilt)}`);
      });
    },
    async lagReplica(ms) {
      const master = await setup.masterPort();
      return lagReplica({ replicaPort: dataPorts.find((p) => p !== master), masterPort: master, ms, fillerKey: "lag-filler" });
    },
    async stop() {
      await Promise.all([...children.values()].map(kill));
    },
  };
  return setup;
}
