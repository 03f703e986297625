// Operating the cluster: /metrics after real traffic, read with the reference Prometheus text
// parser (Python's prometheus_client, from tests/requirements.txt); chat_redis_up across a Redis
// stop and start; counters that survive a worker's respawn; the admin token; the live console in
// headless Chromium; JSON logs; and the deploy files (systemd unit, Grafana dashboard).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";
import { alive, binary, chatClient, cleanup, repoRoot, startCluster, startRedis, until } from "../support/harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const PYTHON = process.env.PYTHON || path.join(repoRoot, "tests/.venv/bin/python");
const TOKEN = "ops-test-token-5f1c2a9e7d3b4c60";
const ROOM = "ops-room";

// Reads Prometheus text on stdin with prometheus_client's parser; prints the families as JSON.
const PARSER = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([
    {"name": f.name, "type": f.type,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]))
`;

function parseMetrics(text) {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} is missing: run \`bash scripts/test.sh\` (it makes tests/.venv from tests/requirements.txt)`);
  }
  return JSON.parse(execFileSync(PYTHON, ["-c", PARSER], { input: text, encoding: "utf8" }));
}

/** The value of the sample `name` with exactly these labels (besides none other than listed). */
function sample(families, name, labels = {}) {
  for (const family of families) {
    for (const s of family.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length) {
        return s.value;
      }
    }
  }
  return undefined;
}

describe("operations: metrics, console, logs", () => {
  let redis;
  let cluster;
  let browser;
  const logLines = [];
  const admin = (p) => `http://127.0.0.1:${cluster.adminPort}${p}`;
  const auth = { authorization: `Bearer ${TOKEN}` };

  async function scrape() {
    const response = await fetch(admin("/metrics"), { headers: auth, signal: AbortSignal.timeout(5000) });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    return parseMetrics(await response.text());
  }

  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({ workers: 2, redisUrl: redis.url, adminToken: TOKEN, extraArgs: ["--log-format", "json"] });
    readline.createInterface({ input: cluster.child.stderr }).on("line", (line) => logLines.push(line));
  });
  after(async () => {
    await browser?.close();
    await cluster?.stop();
    await cleanup();
  });

  const clients = [];
  let deliveriesBeforeKill;

  test("/metrics after real traffic counts what the clients did, per worker", async () => {
    const before = await scrape();
    const base = (name, labels) => sample(before, name, labels) ?? 0;

    // Three members on worker 0, two on worker 1, all in one room.
    for (const worker of [0, 0, 0, 1, 1]) {
      const client = chatClient(cluster.url(worker), { roomid: ROOM });
      await client.connected_();
      client.worker = worker;
      clients.push(client);
    }
    await until("both workers to report their members", async () => {
      const status = await cluster.status();
      return status.workers[0].connections === 3 && status.workers[1].connections === 2;
    });
    // Every member joins (each join reaches all five), then one says four lines.
    for (const [i, client] of clients.entries()) {
      const ack = await client.ack("join", { username: `ops${i}` });
      assert.equal(ack.ok, true);
    }
    const texts = ["one", "two", "three", "four"];
    for (const text of texts) assert.equal((await clients[0].ack("say", { text })).ok, true);
    // A member gets the joins before its own in its history event, the others live.
    await until("every member to see 5 joins and receive 4 lines", async () =>
      clients.every(
        (c) =>
          c.histories === 1 &&
          [...c.history, ...c.received].filter((m) => m.event === "join").length === 5 &&
          c.received.filter((m) => m.event === "broadcast_say").length === 4,
      ));
    // A flood of events the server does not know, from worker 1: some are refused for the rate.
    const answers = await Promise.all(Array.from({ length: 30 }, () => clients[3].ack("ops-unknown", {})));
    const rateLimited = answers.filter((a) => a?.error?.code === "rate_limited").length;
    assert.ok(rateLimited > 0, "the flood went past the rate limit");
    assert.equal(answers.filter((a) => a?.error?.code === "unknown_event").length + rateLimited, 30);

    // Member i (joined i-th) gets its history event, the joins from its own on (5 - i), and
    // the 4 lines: 10 + 9 + 8 on worker 0, 7 + 6 on worker 1.
    const expected = { 0: 27, 1: 13 };
    let after;
    await until("the scrape to show every delivery", async () => {
      after = await scrape();
      return [0, 1].every((w) => sample(after, "chat_deliveries_total", { worker: `${w}` }) - base("chat_deliveries_total", { worker: `${w}` }) === expected[w]);
    }, { timeoutMs: 5000 });
    const delta = (name, labels) => sample(after, name, labels) - base(name, labels);
    const w = (id, extra = {}) => ({ worker: `${id}`, ...extra });

    assert.equal(sample(after, "chat_connections", w(0)), 3);
    assert.equal(sample(after, "chat_connections", w(1)), 2);
    assert.equal(sample(after, "chat_rooms", w(0)), 1);
    assert.equal(delta("chat_events_received_total", w(0, { event: "join" })), 3);
    assert.equal(delta("chat_events_received_total", w(1, { event: "join" })), 2);
    assert.equal(delta("chat_events_received_total", w(0, { event: "say" })), 4);
    assert.equal(delta("chat_events_received_total", w(1, { event: "other" })), 30);
    assert.equal(delta("chat_dropped_total", w(1, { reason: "rate_limited" })), rateLimited);
    assert.equal(delta("chat_dropped_total", w(0, { reason: "rate_limited" })), 0);
    // Redis took every line once (joins are published by their scripts); each worker hears
    // all nine frames (its own included).
    assert.equal(delta("chat_bus_published_total", w(0)), 4);
    assert.equal(delta("chat_bus_published_total", w(1)), 0);
    for (const id of [0, 1]) {
      assert.equal(delta("chat_bus_received_total", w(id)), 9);
      assert.equal(sample(after, "chat_redis_up", w(id)), 1);
      assert.equal(sample(after, "chat_worker_up", w(id)), 1);
      assert.equal(sample(after, "chat_worker_restarts_total", w(id)), 0);
      assert.ok(sample(after, "process_resident_memory_bytes", w(id)) > 1 << 20);
      assert.ok(sample(after, "process_cpu_seconds_total", w(id)) > 0);
      // The first fan-out of each worker is sampled: its writes are timed.
      const timed = sample(after, "chat_delivery_latency_seconds_count", w(id));
      assert.ok(timed > 0 && timed <= sample(after, "chat_deliveries_total", w(id)), `timed ${timed}`);
      assert.equal(sample(after, "chat_delivery_latency_seconds_bucket", w(id, { le: "+Inf" })), timed);
      assert.ok(sample(after, "chat_redis_command_duration_seconds_count", w(id)) > 0);
    }

    // The fixed families, with their types, as the text parser reads them.
    const types = Object.fromEntries(after.map((f) => [f.name, f.type]));
    for (const [name, type] of Object.entries({
      chat_connections: "gauge", chat_rooms: "gauge", chat_logged_in_users: "gauge",
      chat_events_received: "counter", chat_deliveries: "counter", chat_dropped: "counter",
      chat_bus_published: "counter", chat_bus_received: "counter", chat_redis_up: "gauge",
      chat_redis_command_duration_seconds: "histogram", chat_delivery_latency_seconds: "histogram",
      chat_worker_restarts: "counter", process_resident_memory_bytes: "gauge", process_cpu_seconds: "counter",
    })) {
      assert.equal(types[name], type, `family ${name}`);
    }
    deliveriesBeforeKill = sample(after, "chat_deliveries_total", w(1));
  });

  test("a respawned worker's counters continue from where the dead one left them", async () => {
    const { pid } = (await cluster.status()).workers[1];
    process.kill(pid, "SIGKILL");
    await until(`worker 1 (pid ${pid}) to die`, () => !alive(pid));
    await until("worker 1 to be back", async () => {
      const worker = (await cluster.status()).workers[1];
      return worker.restarts === 1 && worker.state === "ready" && worker.pid !== pid;
    });
    let families;
    await until("the new worker 1's first metrics", async () => {
      families = await scrape();
      return sample(families, "chat_redis_up", { worker: "1" }) === 1;
    });
    assert.equal(sample(families, "chat_worker_restarts_total", { worker: "1" }), 1);
    assert.ok(deliveriesBeforeKill > 0);
    assert.ok(sample(families, "chat_deliveries_total", { worker: "1" }) >= deliveriesBeforeKill, "deliveries did not restart at zero");
    assert.ok(sample(families, "chat_events_received_total", { worker: "1", event: "other" }) >= 30);
    // The supervisor's JSON log tells the story, with the worker's id.
    await until("the respawn in the JSON logs", () =>
      logLines.some((l) => JSON.parse(l).message === "worker serving" && JSON.parse(l).worker === "1"));
  });

  test("chat_redis_up drops to 0 when Redis goes away and returns to 1 when it is back", async () => {
    const { child } = redis;
    await redis.stop();
    assert.notEqual(child.exitCode ?? child.signalCode, null, "redis-server is gone");
    const redisUp = async (value) => {
      const families = await scrape();
      return [0, 1].every((w) => sample(families, "chat_redis_up", { worker: `${w}` }) === value);
    };
    await until("chat_redis_up 0 on both workers", () => redisUp(0), { timeoutMs: 5000, everyMs: 200 });
    await redis.restart();
    await until("chat_redis_up 1 on both workers", () => redisUp(1), { timeoutMs: 5000, everyMs: 200 });
  });

  test("the admin token guards everything, unknown paths are 404, stuck clients stall nothing", async () => {
    for (const p of ["/metrics", "/status", "/history"]) {
      for (const headers of [{}, { authorization: "Bearer wrong-token-wrong-token" }, { cookie: "chat_admin_token=nope" }]) {
        const response = await fetch(admin(p), { headers });
        assert.equal(response.status, 401, `${p} with ${JSON.stringify(headers)}`);
        assert.equal(await response.text(), "unauthorized\n");
        assert.match(response.headers.get("www-authenticate"), /^Bearer/);
      }
    }
    const page = await fetch(admin("/"));
    assert.equal(page.status, 401);
    const form = await page.text();
    assert.match(form, /<form method="post" action="\/login"/);
    assert.doesNotMatch(form, /chat_|pid|worker"/);
    assert.equal((await fetch(admin("/no-such-path"), { headers: auth })).status, 404);

    const wrong = await fetch(admin("/login"), { method: "POST", body: new URLSearchParams({ token: "not-the-token-at-all" }), redirect: "manual" });
    assert.equal(wrong.status, 401);
    const right = await fetch(admin("/login"), { method: "POST", body: new URLSearchParams({ token: TOKEN }), redirect: "manual" });
    assert.equal(right.status, 303);
    const cookie = right.headers.get("set-cookie").split(";")[0];
    assert.match(right.headers.get("set-cookie"), /HttpOnly; SameSite=Strict/);
    assert.equal((await fetch(admin("/status"), { headers: { cookie } })).status, 200);

    // Clients that open a request and never finish it hold only their own connections.
    const stuck = await Promise.all(Array.from({ length: 20 }, () => new Promise((resolve, reject) => {
      const socket = net.connect(cluster.adminPort, "127.0.0.1", () => {
        socket.write(`GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n`);
        resolve(socket);
      });
      socket.on("error", reject);
    })));
    try {
      const started = (await cluster.status()).workers.map((w) => w.pid);
      assert.ok((await scrape()).length > 0);
      const text = "after the stuck scrapers";
      assert.equal((await clients[0].ack("say", { text })).ok, true);
      await until("the line to reach worker 0's members", async () => clients.slice(0, 3).every((c) => c.received.some((m) => m.data?.text === text)));
      assert.deepEqual((await cluster.status()).workers.map((w) => w.pid), started);
    } finally {
      for (const socket of stuck) socket.destroy();
    }
  });

  test("the console in Chromium: a row per worker, charts that follow connections, a killed worker's restart", async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium is not installed at ${CHROMIUM}: run \`bash scripts/install-deps.sh --with-browser\``);
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    page.on("requestfailed", (request) => {
      if (!request.url().startsWith(admin(""))) errors.push(`external request ${request.url()}`);
    });
    // Without the token, the token form; with it, the console.
    await page.goto(admin("/"));
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    await page.locator("#workers").waitFor();
    const rows = page.locator("#workers tbody tr");
    await until("a row per worker", async () => (await rows.count()) === 2);

    const cellOf = (id, field) => page.locator(`#workers tbody tr[data-worker="${id}"] [data-field="${field}"]`);
    let status = await cluster.status();
    await until("the rows to show /status's counts", async () => {
      status = await cluster.status();
      for (const w of status.workers) {
        if ((await cellOf(w.id, "connections").innerText()) !== String(w.connections)) return false;
        if ((await cellOf(w.id, "pid").innerText()) !== String(w.pid)) return false;
        if ((await cellOf(w.id, "state").innerText()) !== w.state) return false;
      }
      return true;
    });
    assert.equal(await cellOf(1, "restarts").innerText(), "1");
    assert.equal(await cellOf(0, "redis").innerText(), "up");

    // The connections chart follows three new members of worker 0.
    const line = page.locator('#chart-connections polyline[data-worker="0"]');
    const lastPoint = async () => Number(await line.getAttribute("data-last"));
    const start = status.workers[0].connections;
    await until("the chart to show worker 0's connections", async () => (await lastPoint()) === start);
    for (let i = 0; i < 3; i++) await chatClient(cluster.url(0), { roomid: "ops-chart" }).connected_();
    await until("the chart to follow the new connections", async () => (await lastPoint()) === start + 3);
    await until("the busiest rooms to list the new room", async () =>
      (await page.locator('#rooms tbody tr[data-room="ops-chart"] td').nth(1).innerText().catch(() => "")) === "3");

    // A killed worker's row shows its restart and its new pid.
    const { pid } = (await cluster.status()).workers[0];
    process.kill(pid, "SIGKILL");
    await until(`worker 0 (pid ${pid}) to die`, () => !alive(pid));
    await until("worker 0's row to show its restart", async () =>
      (await cellOf(0, "restarts").innerText()) === "1" &&
      !["–", String(pid)].includes(await cellOf(0, "pid").innerText()) &&
      (await cellOf(0, "state").innerText()) === "ready");
    assert.deepEqual(errors, []);
    if (process.env.CONSOLE_SCREENSHOT) await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT, fullPage: true });
  });

  test("logs are JSON lines with timestamp, level, worker, message, fields, and quiet under traffic", async () => {
    assert.ok(logLines.length > 0);
    for (const text of logLines) {
      const line = JSON.parse(text);
      assert.match(line.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(["error", "warn", "info", "debug", "trace"].includes(line.level), text);
      assert.equal(typeof line.worker, "string");
      assert.equal(typeof line.message, "string");
      assert.equal(typeof line.fields, "object");
    }
    // Dozens of connections and events above; at info, only lifecycle lines (two kills, one
    // Redis outage): nothing per connection or per message.
    const loud = logLines.map((l) => JSON.parse(l)).filter((l) => l.level !== "debug" && l.level !== "trace");
    assert.ok(loud.length < 40, `${loud.length} lines at info or above:\n${loud.map((l) => l.message).join("\n")}`);
    assert.ok(!loud.some((l) => /connected$|disconnected|refused|say|join/.test(l.message) && !/redis/.test(l.message)), loud.map((l) => l.message).join("\n"));
    // Secrets never reach the logs.
    assert.ok(!logLines.some((l) => l.includes(TOKEN)));
  });

  test("deploy/: the systemd unit verifies and is hardened; the dashboard uses served families", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "chat-unit-"));
    const unit = readFileSync(path.join(repoRoot, "deploy/chat-cluster.service"), "utf8");
    assert.match(unit, /^LimitNOFILE=\d{6,}$/m);
    // verify checks that ExecStart exists: point it at the binary under test.
    const unitPath = path.join(dir, "chat-cluster.service");
    writeFileSync(unitPath, unit.replace("/usr/local/bin/chat-cluster", binary));
    const verify = spawnSync("systemd-analyze", ["verify", unitPath], { encoding: "utf8" });
    if (verify.error) throw new Error(`systemd-analyze is not installed: run \`bash scripts/install-deps.sh --with-browser\` (${verify.error.message})`);
    assert.equal(verify.status, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), "", "systemd-analyze verify printed warnings");
    const security = spawnSync("systemd-analyze", ["security", "--offline=true", "--no-pager", unitPath], { encoding: "utf8" });
    const exposure = Number(/Overall exposure level for .*: (\d+\.\d+)/.exec(security.stdout)?.[1]);
    assert.ok(exposure <= 2.0, `exposure ${exposure}:\n${security.stdout}`);

    const dashboard = JSON.parse(readFileSync(path.join(repoRoot, "deploy/grafana-dashboard.json"), "utf8"));
    const served = new Set((await scrape()).flatMap((f) => f.samples.map((s) => s.name)));
    const used = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/\b(?:chat|process)_[a-z_]+/g))));
    assert.ok(used.size >= 10);
    for (const name of used) assert.ok(served.has(name), `the dashboard queries ${name}, which /metrics does not serve`);
    const fixed = ["chat_connections", "chat_deliveries_total", "chat_dropped_total", "chat_redis_up", "chat_delivery_latency_seconds_bucket"];
    for (const name of fixed) assert.ok(used.has(name), `the dashboard shows ${name}`);
  });
});
