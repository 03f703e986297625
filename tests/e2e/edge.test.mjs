// Hostile clients at the edge (issue 19) and field reports about it (issue 15), against the real
// binary: binary attachments, header sizes, per-address and per-connection limits, timeouts of
// every phase, flooding sockets, log floods, origins and hosts, JWT details, refusal messages.
// Settings go through CHAT_* variables so that a binary without them runs the same test (and
// fails it) instead of refusing an unknown flag.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import net from "node:net";
import { spawn } from "node:child_process";
import readline from "node:readline";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import WebSocket from "ws";
import { binary, repoRoot, chatClient, cleanup, freePort, freePortRange, member, sleep, startNginx, startRedis, startWorker, trackClient, until, within } from "../support/harness.mjs";

const JWT_SECRET = "edge-test-secret-0123456789abcdefghij";
const base64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
function jwt(claims, secret = JWT_SECRET) {
  const head = `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url(claims)}`;
  return `${head}.${crypto.createHmac("sha256", secret).update(head).digest("base64url")}`;
}
const now = () => Math.floor(Date.now() / 1000);

/** A raw engine.io websocket: `packets` collects text frames, `closed` resolves at close. */
function rawSocket(port, query = "", { headers = {} } = {}) {
  const ws = trackClient(new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket${query}`, { headers }));
  const packets = [];
  let wake = () => {};
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    if (text === "2") ws.send("3");
    packets.push(text);
    wake();
  });
  ws.on("error", () => {});
  const closed = new Promise((resolve) => ws.once("close", resolve));
  const opened = new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
    ws.once("unexpected-response", (_, response) => reject(new Error(`answered ${response.statusCode}`)));
  });
  return Object.assign(ws, {
    packets,
    closed,
    opened,
    async next(what, predicate, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const index = packets.findIndex(predicate);
        if (index >= 0) return packets.splice(index, 1)[0];
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(packets.slice(-5))}`);
        await new Promise((resolve) => {
          wake = resolve;
          setTimeout(resolve, 50);
        });
      }
    },
  });
}

/** Whether `promise` settles within `ms` (true) or not (false). */
const settlesWithin = (promise, ms) => Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);

/** A raw TCP connection: `data` accumulates, `closed` resolves when the server closes it. */
function rawTcp(port) {
  const socket = trackClient(net.connect(port, "127.0.0.1"));
  socket.data = "";
  socket.on("data", (chunk) => {
    socket.data += chunk.toString("latin1");
  });
  socket.on("error", () => {});
  socket.gone = new Promise((resolve) => socket.once("close", resolve));
  socket.ready = new Promise((resolve) => socket.once("connect", resolve));
  return socket;
}

/** One HTTP/1.1 request on a fresh connection: resolves with the status code. */
async function statusOf(port, request) {
  const socket = rawTcp(port);
  await socket.ready;
  socket.write(request);
  await until("an HTTP answer", () => /^HTTP\/1\.1 \d{3}/.test(socket.data), { timeoutMs: 5000, everyMs: 20 });
  socket.destroy();
  return Number(socket.data.slice(9, 12));
}

describe("hostile clients at the edge", () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(cleanup);

  test("binary attachments are refused on websocket and long-polling alike", async () => {
    const worker = await startWorker({ redisUrl: redis.url, env: { CHAT_PING_INTERVAL_MS: "1000" } });
    const ws = rawSocket(worker.port, "&roomid=bin");
    await ws.opened;
    ws.send("40");
    await ws.next("the CONNECT answer", (p) => p.startsWith("40"));
    ws.send('451-["say",{"_placeholder":true,"num":0}]');
    ws.send(Buffer.alloc(16_000, 7));
    assert.ok(await settlesWithin(ws.closed, 3000), "a packet announcing an attachment closes the websocket");

    // Long-polling: the same packet in a POST ends the session.
    const url = `${worker.url}/socket.io/?EIO=4&transport=polling`;
    const open = await (await fetch(url)).text();
    const sid = JSON.parse(open.slice(1)).sid;
    await fetch(`${url}&sid=${sid}`, { method: "POST", body: "40" });
    await fetch(`${url}&sid=${sid}`); // the CONNECT answer
    await fetch(`${url}&sid=${sid}`, { method: "POST", body: '451-["say",{"_placeholder":true,"num":0}]' });
    const poll = await fetch(`${url}&sid=${sid}`, { signal: AbortSignal.timeout(5000) });
    const body = await poll.text();
    assert.ok(poll.status === 400 || body.includes("1"), `the polling session is closed (got ${poll.status} ${JSON.stringify(body)})`);
    const again = await fetch(`${url}&sid=${sid}`, { signal: AbortSignal.timeout(5000) });
    assert.equal(again.status, 400, "and gone");
  });

  test("request heads are capped, and a handshake keeps nothing it does not use", async () => {
    const worker = await startWorker({ redisUrl: redis.url });
    const huge = `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ${"j".repeat(100_000)}\r\n\r\n`;
    assert.equal(await statusOf(worker.port, huge), 431, "a 100 KB head is refused");
    const normal = `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ${"j".repeat(4000)}\r\n\r\n`;
    assert.equal(await statusOf(worker.port, normal), 200, "a browser-sized head passes");
  });

  test("one keep-alive connection cannot open sockets without bound", async () => {
    const worker = await startWorker({ redisUrl: redis.url, env: { CHAT_TRUSTED_PROXIES: "192.0.2.1" } });
    const socket = rawTcp(worker.port);
    await socket.ready;
    const answers = () => [...socket.data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    for (let i = 0; i < 20; i++) {
      socket.write(`GET /socket.io/?EIO=4&transport=polling&t=${i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      await until(`answer ${i + 1}`, () => answers().length === i + 1, { timeoutMs: 5000, everyMs: 10 });
    }
    const statuses = answers();
    assert.deepEqual(statuses.slice(0, 16), Array(16).fill(200), "16 sockets per connection by default");
    assert.deepEqual(statuses.slice(16), Array(4).fill(429), "then refused");
  });

  test("sockets per client address are bounded, X-Forwarded-For believed only from trusted proxies", async () => {
    const limited = { CHAT_MAX_CONNECTIONS_PER_IP: "3" };
    // Loopback is not a trusted proxy here: the header is the client's invention.
    const direct = await startWorker({ redisUrl: redis.url, env: { ...limited, CHAT_TRUSTED_PROXIES: "192.0.2.1" } });
    const held = [];
    for (let i = 0; i < 3; i++) {
      const ws = rawSocket(direct.port, "", { headers: { "x-forwarded-for": `203.0.113.${i}` } });
      await ws.opened;
      ws.send("40");
      await ws.next("the CONNECT answer", (p) => p.startsWith("40"));
      held.push(ws);
    }
    const fourth = rawSocket(direct.port, "", { headers: { "x-forwarded-for": "203.0.113.99" } });
    await assert.rejects(fourth.opened, "a fourth from the same address is refused, whatever it claims");
    held.pop().close();
    await until("a slot to come back", async () => {
      const ws = rawSocket(direct.port);
      try {
        await ws.opened;
        held.push(ws);
        return true;
      } catch {
        return false;
      }
    });

    // Behind the generated nginx (a trusted proxy by default), each client counts for itself,
    // and a header a client sends through nginx is replaced by its real address.
    const proxied = await startWorker({ redisUrl: redis.url, env: limited });
    const nginx = await startNginx({ upstreams: [`127.0.0.1:${proxied.port}`] });
    const viaNginx = [];
    for (let i = 0; i < 3; i++) {
      const ws = rawSocket(nginx.port, "", { headers: { "x-forwarded-for": `198.51.100.${i}` } });
      await ws.opened;
      viaNginx.push(ws);
    }
    const spoofed = rawSocket(nginx.port, "", { headers: { "x-forwarded-for": "198.51.100.200" } });
    await assert.rejects(spoofed.opened, "made-up X-Forwarded-For through nginx does not buy more sockets");
    // Directly from a trusted proxy, distinct forwarded clients each have their own count.
    for (let i = 0; i < 3; i++) {
      const ws = rawSocket(proxied.port, "", { headers: { "x-forwarded-for": `192.0.2.${50 + i}` } });
      await ws.opened;
      viaNginx.push(ws);
    }
    await nginx.stop();
  });

  test("silent, slowloris and trickled-body connections are closed", async () => {
    const worker = await startWorker({
      redisUrl: redis.url,
      env: { CHAT_HEADER_READ_TIMEOUT_MS: "1000", CHAT_BODY_READ_TIMEOUT_MS: "1000" },
    });
    const silent = [];
    for (let i = 0; i < 50; i++) silent.push(rawTcp(worker.port));
    await Promise.all(silent.map((s) => s.ready));
    const slowloris = rawTcp(worker.port);
    await slowloris.ready;
    const trickle = setInterval(() => slowloris.write("X"), 200);
    slowloris.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    const body = rawTcp(worker.port);
    await body.ready;
    body.write("POST /api/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{");
    const bodyTrickle = setInterval(() => body.write(" "), 200);
    try {
      const closedSilent = await Promise.all(silent.map((s) => settlesWithin(s.gone, 4000)));
      assert.equal(closedSilent.filter(Boolean).length, 50, "every silent connection is closed");
      assert.ok(await settlesWithin(slowloris.gone, 4000), "a head trickled past the timeout is cut");
      assert.ok(await settlesWithin(body.gone, 4000), "a body trickled past the timeout is cut");
    } finally {
      clearInterval(trickle);
      clearInterval(bodyTrickle);
    }
    // The worker still serves.
    assert.equal((await fetch(`${worker.url}/monitor`)).status, 200);
  });

  test("a socket that keeps breaking the rate limit is disconnected", async () => {
    const worker = await startWorker({
      redisUrl: redis.url,
      extraArgs: ["--rate-per-sec", "1", "--rate-burst", "5"],
      env: { CHAT_MAX_REFUSALS: "20", CHAT_REFUSAL_WINDOW_MS: "10000" },
    });
    const ws = rawSocket(worker.port, "&roomid=flood");
    await ws.opened;
    ws.send("40");
    await ws.next("the CONNECT answer", (p) => p.startsWith("40"));
    for (let i = 0; i < 200 && ws.readyState === WebSocket.OPEN; i++) ws.send(`42${i}["hb"]`);
    // The socket may be cut before its writer flushed the refusals (a loaded machine): the cut
    // is what counts, the refusals' acks are seen when they make it out first.
    const refused = ws.next("a rate_limited answer", (p) => p.includes("rate_limited")).then(() => true, () => false);
    assert.ok(await settlesWithin(ws.closed, 5000), "the flooding socket is cut");
    await refused;
    // A polite client on the same worker is served.
    const polite = await member(worker.url, "flood", "polite");
    assert.equal((await polite.ack("say", { text: "still here" })).ok, true);
  });

  test("a client cannot flood the logs", async () => {
    const worker = await startWorker({ redisUrl: redis.url });
    let loud = 0;
    worker.child.stderr.on("data", (chunk) => {
      loud += (chunk.toString().match(/\b(WARN|ERROR)\b/g) ?? []).length;
    });
    const ws = rawSocket(worker.port);
    await ws.opened;
    // Never reads: its queue fills and every answer to an unknown namespace fails.
    ws.pause();
    for (let i = 0; i < 20_000; i++) ws.send(`40/n${i},`);
    await sleep(2000);
    assert.ok(loud < 10, `at most a few warn/error lines, got ${loud}`);
  });

  test("the wildcard origin allows no credentials, never null, and cookies do not authenticate through it", async () => {
    const worker = await startWorker({
      redisUrl: redis.url,
      extraArgs: ["--auth", "jwt", "--allowed-origins", "*"],
      env: { CHAT_JWT_SECRET: JWT_SECRET },
    });
    const evil = await fetch(`${worker.url}/monitor`, { headers: { origin: "http://evil.example" } });
    assert.equal(evil.status, 200);
    assert.equal(evil.headers.get("access-control-allow-credentials"), null, "no credentials for the wildcard");
    assert.equal((await fetch(`${worker.url}/monitor`, { headers: { origin: "null" } })).status, 403, "null is never allowed by *");
    const cookie = `chat_token=${jwt({ sub: "ann", exp: now() + 60 })}`;
    const stolen = chatClient(worker.url, { reconnection: false, extraHeaders: { origin: "http://evil.example", cookie } });
    const refused = await within("a connect_error", new Promise((resolve) => stolen.once("connect_error", resolve)));
    assert.match(refused.message, /authentication required/, "the cookie of a wildcard origin is not used");
    const own = chatClient(worker.url, { reconnection: false, extraHeaders: { origin: worker.url, cookie } });
    await own.connected_();
  });

  test("hosts: DNS rebinding names are refused, addresses, localhost and configured names pass", async () => {
    const worker = await startWorker({ redisUrl: redis.url, env: { CHAT_ALLOWED_HOSTS: "chat.example.com" } });
    const get = (host) => statusOf(worker.port, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    assert.equal(await get(`rebind.attacker.example:${worker.port}`), 403);
    assert.equal(await get(`127.0.0.1:${worker.port}`), 200);
    assert.equal(await get(`localhost:${worker.port}`), 200);
    assert.equal(await get("chat.example.com"), 200);
  });

  test("under --auth jwt: nbf, aud and iss are checked, and refusals are in words", async () => {
    const worker = await startWorker({
      redisUrl: redis.url,
      extraArgs: ["--auth", "jwt"],
      env: { CHAT_JWT_SECRET: JWT_SECRET, CHAT_JWT_LEEWAY_SECS: "0", CHAT_JWT_AUDIENCE: "chat", CHAT_JWT_ISSUER: "https://id.example" },
    });
    const claims = (sub, extra = {}) => ({ sub, exp: now() + 60, aud: "chat", iss: "https://id.example", ...extra });
    const refusal = async (token) => {
      const client = chatClient(worker.url, { reconnection: false, auth: { token } });
      return (await within("a connect_error", new Promise((resolve) => client.once("connect_error", resolve)))).message;
    };
    assert.match(await refusal(jwt(claims("ann", { nbf: now() + 30 }))), /not valid yet/);
    assert.match(await refusal(jwt(claims("ann", { aud: "billing" }))), /aud/);
    assert.match(await refusal(jwt(claims("ann", { iss: "https://evil.example" }))), /iss/);
    for (const garbage of ["x", "a.b.c", `${base64url({ alg: "HS256" })}.!!.x`]) {
      const reason = await refusal(garbage);
      assert.match(reason, /^invalid token: /);
      assert.doesNotMatch(reason, /InvalidToken|Base64|InvalidLength|Json\(/, `no Rust in ${reason}`);
    }
  });

  const jwtWorker = () =>
    startWorker({ redisUrl: redis.url, extraArgs: ["--auth", "jwt"], env: { CHAT_JWT_SECRET: JWT_SECRET, CHAT_JWT_LEEWAY_SECS: "0" } });
  const token = (sub, exp = now() + 60) => jwt({ sub, exp });

  test("under --auth jwt every room message carries the sender's authenticated id", async () => {
    const worker = await jwtWorker();
    const ann = await member(worker.url, "jwt-room", "Ann", { auth: { token: token("u-ann") } });
    const impostor = await member(worker.url, "jwt-room", "Ann", { auth: { token: token("u-eve") } });
    await impostor.ack("say", { text: "I am Ann" });
    const heard = await ann.next("the impostor's message", (m) => m.data?.text === "I am Ann");
    assert.equal(heard.data.userId, "u-eve", "the authenticated id tells the two Anns apart");
  });

  test("a socket ends when its token expires", async () => {
    const worker = await jwtWorker();
    const brief = chatClient(worker.url, { query: { roomid: "jwt-room" }, reconnection: false, auth: { token: token("u-brief", now() + 2) } });
    await brief.connected_();
    const ended = new Promise((resolve) => brief.once("logout", resolve));
    const gone = new Promise((resolve) => brief.once("disconnect", resolve));
    assert.deepEqual(await within("the expiry notice", ended, 6000), { reason: "token_expired" });
    assert.equal(await within("the disconnect at expiry", gone, 3000), "io server disconnect");
  });

  test("a JWT secret shorter than 32 bytes is refused at start, in one line", async () => {
    const port = await freePort();
    const child = spawn(binary, ["worker", "--port", String(port), "--redis-url", redis.url, "--auth", "jwt"], {
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "CHAT_WORKER_SETTINGS")), CHAT_JWT_SECRET: "too-short-secret" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const exit = await within("the worker to exit", new Promise((resolve) => child.once("exit", resolve)), 5000).catch((err) => {
      child.kill("SIGKILL");
      throw err;
    });
    assert.notEqual(exit, 0);
    const lines = stderr.split("\n").filter((line) => line.trim() !== "");
    assert.equal(lines.length, 1, `one line: ${stderr}`);
    assert.match(lines[0], /the JWT secret in CHAT_JWT_SECRET is 16 bytes; HS256 needs at least 32/);
  });

  test("a lone surrogate is answered as what it is", async () => {
    const worker = await startWorker({ redisUrl: redis.url });
    const ws = rawSocket(worker.port, "&roomid=utf16");
    await ws.opened;
    ws.send("40");
    await ws.next("the CONNECT answer", (p) => p.startsWith("40"));
    ws.send('421["join",{"username":"ann"}]');
    await ws.next("the join ack", (p) => p.startsWith("431"));
    ws.send('422["say",{"text":"\\ud83d"}]');
    const ack = JSON.parse((await ws.next("the say ack", (p) => p.startsWith("432"))).slice(3))[0];
    assert.equal(ack.error.code, "invalid_payload");
    assert.match(ack.error.message, /surrogate/);
  });

  test("silent connections to the admin port cannot stop the supervisor from respawning", async () => {
    const basePort = await freePortRange(1);
    const adminPort = await freePort();
    // 256 descriptors, as in the report; the header timeout is long so that only the bound on
    // admin connections can save the supervisor.
    const child = spawn(
      "bash",
      ["-c", 'ulimit -n 256 && exec "$@"', "bash", binary, "supervise", "--workers", "1", "--base-port", String(basePort), "--admin-port", String(adminPort), "--redis-url", redis.url, "--shutdown-grace-ms", "1000"],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "CHAT_WORKER_SETTINGS")), CHAT_HEADER_READ_TIMEOUT_MS: "60000" },
      },
    );
    trackClient({ close: () => child.kill("SIGKILL") });
    const lines = [];
    readline.createInterface({ input: child.stdout }).on("line", (text) => {
      try {
        lines.push(JSON.parse(text));
      } catch {
        // Not a console line.
      }
    });
    const ready = await until("the worker to be ready", () => lines.find((l) => l.event === "worker_ready"));
    const silent = [];
    for (let i = 0; i < 240; i++) silent.push(rawTcp(adminPort));
    // Those beyond what the supervisor serves and the kernel queues wait for SYN retries.
    await sleep(1500);
    process.kill(ready.pid, "SIGKILL");
    const respawned = await until(
      "the killed worker to be respawned",
      () => lines.find((l) => l.event === "worker_ready" && l.pid !== ready.pid),
      { timeoutMs: 10_000 },
    );
    assert.notEqual(respawned.pid, ready.pid);
    for (const s of silent) s.destroy();
    const status = await until("/status to answer again", async () => (await fetch(`http://127.0.0.1:${adminPort}/status`, { signal: AbortSignal.timeout(2000) })).ok);
    assert.ok(status);
    child.kill("SIGTERM");
  });

  test("a text within --max-text-chars fits the transport however a JSON encoder escapes it (python-socketio)", async () => {
    const python = path.join(repoRoot, "tests/.venv/bin/python");
    if (!existsSync(python)) {
      throw new Error("the Python client is not installed: run `bash scripts/test.sh` (it makes tests/.venv from tests/requirements.txt)");
    }
    const worker = await startWorker({ redisUrl: redis.url });
    for (const transport of ["websocket", "polling"]) {
      const output = await new Promise((resolve, reject) => {
        const child = spawn(python, [path.join(repoRoot, "tests/python/escaped_text.py"), worker.url, transport, "1400"], { stdio: ["ignore", "pipe", "pipe"] });
        trackClient({ close: () => child.kill("SIGKILL") });
        let out = "";
        let err = "";
        child.stdout.on("data", (chunk) => (out += chunk));
        child.stderr.on("data", (chunk) => (err += chunk));
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`python exited ${code}: ${err}`))));
      });
      const report = JSON.parse(output.trim().split("\n").pop());
      assert.ok(report.wire_bytes > 16_384, `the escaped say is ${report.wire_bytes} bytes, over the old 16 KiB cap`);
      assert.equal(report.join?.ok, true, JSON.stringify(report));
      assert.equal(report.say?.ok, true, `${transport}: ${JSON.stringify(report)}`);
      assert.equal(report.echo, true, `${transport}: the room received the text`);
    }
  });

  test("limits that contradict each other are refused at start, with the numbers", () => {
    let message = "";
    try {
      execFileSync(binary, ["check-config"], {
        env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "CHAT_WORKER_SETTINGS")), CHAT_MAX_MESSAGE_BYTES: "16384" },
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      message = err.stderr.toString();
    }
    assert.match(message, /--max-message-bytes 16384 is too small for --max-text-chars 2000/);
  });

  test("other refusals are sentences, not a library's messages or Rust's debug output", async () => {
    const worker = await startWorker({ redisUrl: redis.url, env: { CHAT_API_KEY: "edge-api-key" } });
    const response = await fetch(`${worker.url}/api/push`, {
      method: "POST",
      headers: { authorization: "Bearer edge-api-key", "content-type": "application/json" },
      body: JSON.stringify({ users: ["bob"], data: 1 }),
    });
    const { error } = await response.json();
    assert.equal(error.code, "invalid_json");
    assert.doesNotMatch(error.message, /`|missing field|at line \d+ column/, `serde's own words: ${error.message}`);
    const room = chatClient(worker.url, { reconnection: false, query: { roomid: "café" } });
    const refused = await within("a connect_error", new Promise((resolve) => room.once("connect_error", resolve)));
    assert.match(refused.message, /'é' \(U\+00E9\) is not allowed/);
  });

  test("a socket keeps none of the junk its handshake carried", async () => {
    const worker = await startWorker({ redisUrl: redis.url });
    const rss = () => Number(readFileSync(`/proc/${worker.child.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) * 1024;
    const open = async (count, headers) => {
      const sockets = [];
      for (let i = 0; i < count; i++) {
        const ws = rawSocket(worker.port, "&roomid=junk", { headers });
        await ws.opened;
        ws.send("40");
        await ws.next("the CONNECT answer", (p) => p.startsWith("40"));
        sockets.push(ws);
      }
      return sockets;
    };
    // A first batch warms the heap up; the second and third differ only in 12 KB of headers each.
    await open(100, {});
    await sleep(300);
    const start = rss();
    await open(200, {});
    await sleep(300);
    const plain = rss() - start;
    await open(200, { "x-junk": "j".repeat(12_000), cookie: `tracking=${"t".repeat(2_000)}` });
    await sleep(300);
    const junk = rss() - start - plain;
    // Kept, the headers alone would be 200 x 14 KB = 2.8 MB.
    assert.ok(junk - plain < 1_000_000, `200 sockets with 14 KB of junk headers cost ${junk} bytes, without ${plain}`);
  });
});
