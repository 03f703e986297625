// Network namespaces as test "hosts": each host is a Linux network namespace made by the test,
// with one veth into a bridge in the root namespace, an address of its own in 10.77.K.0/24, and
// the root namespace reachable at 10.77.K.254. Traffic stays on this machine: the namespaces have
// no route but their own subnet, and the subnet is checked to route to the test's bridge before
// anything is sent to it.
//
// Every namespace and link made here is removed by `destroy()`, by the process "exit" hook (a
// test that fails or a runner that stops the file), and, for leftovers of a run that was
// SIGKILLed, by the next run (names carry the creating process's pid; a dead pid's are removed).
// Processes still running inside a namespace at cleanup were started by the test in it; they are
// killed by PID (`ip netns pids`) before the namespace goes.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const IP_CANDIDATES = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];
const NS_PREFIX = "chat-t"; // chat-t<pid>-<host>
const LINK_PREFIX = "ctv"; // ctv<pid>r<i> (root end of host i's veth), ctb<pid> the bridge
const BRIDGE_PREFIX = "ctb";

const live = new Set();

function ipPath() {
  return IP_CANDIDATES.find((candidate) => existsSync(candidate)) ?? null;
}

function ip(...args) {
  return execFileSync(ipPath(), args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** `ip ...`, ignoring failure (cleanup of things that may already be gone). */
function ipQuiet(...args) {
  try {
    return ip(...args);
  } catch {
    return "";
  }
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code !== "ESRCH";
  }
}

/**
 * Why this machine cannot run namespace tests, or null if it can: the test needs root, the `ip`
 * command (iproute2), and a kernel that lets it add a namespace and a bridge. The answer is for
 * `describe(..., { skip })`: a test that cannot run is reported as skipped with this reason.
 */
export function netnsUnavailable() {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "network namespaces need root (ip netns add); run as root, as CI does";
  }
  if (!ipPath()) return "the ip command is missing: run `bash scripts/install-deps.sh` (iproute2)";
  const probe = `${NS_PREFIX}${process.pid}-probe`;
  const bridge = `${BRIDGE_PREFIX}${process.pid}p`;
  try {
    ip("netns", "add", probe);
    ip("link", "add", bridge, "type", "bridge");
    return null;
  } catch (err) {
    return `cannot create a network namespace and a bridge here: ${err.stderr?.toString().trim() || err.message}`;
  } finally {
    ipQuiet("link", "del", bridge);
    ipQuiet("netns", "del", probe);
  }
}

/** Removes namespaces and links that an earlier run (a pid no longer alive) left behind. */
function reapStale() {
  for (const line of ipQuiet("netns", "list").split("\n")) {
    const name = line.split(" ")[0];
    const match = name.match(new RegExp(`^${NS_PREFIX}(\\d+)-`));
    if (match && !pidAlive(Number(match[1]))) removeNamespace(name);
  }
  for (const line of ipQuiet("-o", "link", "show").split("\n")) {
    const name = line.split(":")[1]?.trim().split("@")[0];
    const match = name?.match(new RegExp(`^(?:${LINK_PREFIX}|${BRIDGE_PREFIX})(\\d+)`));
    if (match && !pidAlive(Number(match[1]))) ipQuiet("link", "del", name);
  }
}

/** Kills what still runs in `name` (processes this test started there), then deletes it. */
function removeNamespace(name) {
  for (const pid of ipQuiet("netns", "pids", name).split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  ipQuiet("netns", "del", name);
}

/** A 10.77.K.0/24 that no address or route of this machine uses yet. */
function freeSubnet() {
  const taken = ipQuiet("-4", "route", "show", "table", "all") + ipQuiet("-4", "addr", "show");
  for (let i = 0; i < 250; i++) {
    const k = ((process.pid + i) % 250) + 1;
    if (!taken.includes(`10.77.${k}.`)) return `10.77.${k}`;
  }
  throw new Error("no free 10.77.K.0/24 subnet for the test hosts");
}

/**
 * Makes one namespace per name in `hosts` (in that order: host i gets 10.77.K.(i+1)), joined by a
 * bridge in the root namespace, which gets 10.77.K.254. Returns the network:
 * - `hosts[name]`: `{ namespace, address, link }` (`link` is the veth's end on the bridge);
 * - `rootAddress`, `bridge`, `subnet`;
 * - `command(host, argv)`: the argv that runs `argv` inside that host (`ip netns exec ...`;
 *   `ip` execs in place, so the spawned pid is the command's own);
 * - `linkDown(host)` / `linkUp(host)`: cut or restore the host's only link (packets are
 *   dropped, no reset is sent: a host lost at once);
 * - `destroy()`: kills what runs in the namespaces, removes them and the bridge (idempotent).
 */
export function createNetwork(hosts) {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  reapStale();
  const subnet = freeSubnet();
  const bridge = `${BRIDGE_PREFIX}${process.pid}`;
  const network = {
    subnet,
    bridge,
    rootAddress: `${subnet}.254`,
    hosts: {},
    destroyed: false,
    command(host, argv) {
      return [ipPath(), ["netns", "exec", this.hosts[host].namespace, ...argv]];
    },
    linkDown(host) {
      ip("link", "set", this.hosts[host].link, "down");
    },
    linkUp(host) {
      ip("link", "set", this.hosts[host].link, "up");
    },
    destroy() {
      if (this.destroyed) return;
      this.destroyed = true;
      live.delete(this);
      for (const host of Object.values(this.hosts)) {
        removeNamespace(host.namespace);
        // Deleting one end of a veth deletes both; gone already if the namespace went.
        ipQuiet("link", "del", host.link);
      }
      ipQuiet("link", "del", bridge);
    },
  };
  live.add(network);
  try {
    ip("link", "add", bridge, "type", "bridge");
    ip("addr", "add", `${network.rootAddress}/24`, "dev", bridge);
    ip("link", "set", bridge, "up");
    hosts.forEach((name, i) => {
      const namespace = `${NS_PREFIX}${process.pid}-${name}`;
      const link = `${LINK_PREFIX}${process.pid}r${i}`;
      const inner = `${LINK_PREFIX}${process.pid}n${i}`;
      const address = `${subnet}.${i + 1}`;
      network.hosts[name] = { namespace, address, link };
      ip("netns", "add", namespace);
      ip("link", "add", link, "type", "veth", "peer", "name", inner, "netns", namespace);
      ip("link", "set", link, "master", bridge);
      ip("link", "set", link, "up");
      ip("-n", namespace, "link", "set", "lo", "up");
      ip("-n", namespace, "addr", "add", `${address}/24`, "dev", inner);
      ip("-n", namespace, "link", "set", inner, "up");
    });
    // Nothing is sent to the subnet unless it routes to this bridge (never out of the machine).
    for (const { address } of Object.values(network.hosts)) {
      const route = ip("-4", "route", "get", address);
      if (!route.includes(`dev ${bridge}`)) throw new Error(`${address} does not route to the test bridge ${bridge}: ${route.trim()}`);
    }
  } catch (err) {
    network.destroy();
    throw err;
  }
  return network;
}

process.on("exit", () => {
  for (const network of live) network.destroy();
});
