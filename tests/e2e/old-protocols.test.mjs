// Old protocol versions and the other packet parser (issue 14, point 4): the official
// socket.io-client 2.x (engine.io protocol 3, as many shipped mobile apps) with --allow-eio3,
// over websocket and long-polling, for every feature (rooms, login, chat, push, the old apps'
// dialects); clients built with socket.io-msgpack-parser with --parser msgpack; and a client of
// the other parser, which must get a clear connect_error instead of reconnecting forever.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import ioV2 from "socket.io-client-v2";
import msgpackParser from "socket.io-msgpack-parser";
import { cleanup, sleep, startCluster, startRedis, trackClient } from "../support/harness.mjs";
import { subscribe } from "../support/people.mjs";
import { ask, chatApp, serviceClient } from "../support/old-apps.mjs";

const API_KEY = "test-key-0123456789";

async function api(url, path, body) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: response.status, body: await response.json() };
}

/**
 * A room member on any client library: records `message` events (and how many arguments each
 * had: a client that takes offsets gets one more), and the `history` event; resolves once
 * joined.
 */
async function roomMember(ioFn, url, room, username, options = {}) {
  const socket = trackClient(ioFn(url, { forceNew: true, reconnectionDelay: 100, transports: ["websocket"], query: { roomid: room }, ...options }));
  socket.received = [];
  socket.argCounts = [];
  socket.histories = [];
  socket.on("message", (...args) => {
    socket.received.push(args[0]);
    socket.argCounts.push(args.length);
  });
  socket.on("history", (h) => socket.histories.push(h));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${username} did not connect to ${url}`)), 10_000);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const joined = await ask(socket, "join", { username });
  assert.equal(joined.ok, true, JSON.stringify(joined));
  return socket;
}

async function waitFor(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Counts a client's connection attempts for `ms`: connects, connect_errors, reconnect attempts. */
function watchAttempts(socket) {
  const seen = { connects: 0, errors: [], attempts: 0 };
  socket.on("connect", () => (seen.connects += 1));
  socket.on("connect_error", (err) => seen.errors.push(err.message));
  socket.io.on("reconnect_attempt", () => (seen.attempts += 1));
  return seen;
}

describe("old protocols and parsers", () => {
  after(cleanup);

  test("without --allow-eio3, socket.io 2.x clients are refused as node refuses them", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url });
    const response = await fetch(`${cluster.url(0)}/socket.io/?EIO=3&transport=polling`);
    assert.equal(response.status, 400);
    assert.deepEqual(await response.json(), { code: 5, message: "Unsupported protocol version" });
    const old = trackClient(ioV2(cluster.url(0), { forceNew: true, transports: ["polling"], reconnection: false }));
    const refused = await new Promise((resolve) => {
      old.once("connect", () => resolve("connected"));
      old.once("connect_error", (err) => resolve(err.message));
    });
    assert.notEqual(refused, "connected");
    const current = await roomMember(io, cluster.url(0), "lobby", "new");
    assert.ok(current.connected, "engine.io 4 clients are served");
    for (const c of [old, current]) c.disconnect();
    await cluster.stop();
  });

  for (const transport of ["websocket", "polling"]) {
    test(`socket.io-client 2.x over ${transport} with --allow-eio3: rooms, login, chat, push and the old apps`, async () => {
      const redis = await startRedis();
      const hooks = await subscribe(redis.port, "login_message_channel");
      // A long presence grace: a member that could recover would stay in the room that long.
      const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--allow-eio3", "--presence-grace-ms", "60000"], env: { CHAT_API_KEY: API_KEY } });
      const v2 = { transports: [transport] };

      // Rooms: a 2.x member and a current one on another worker hear each other.
      const oldMember = await roomMember(ioV2, cluster.url(0), "lobby", "old-app", v2);
      const newMember = await roomMember(io, cluster.url(1), "lobby", "new-app");
      const said = await ask(oldMember, "say", { text: "from 2.x" });
      assert.equal(said.ok, true);
      await waitFor("the 2.x say on the other worker", () => newMember.received.some((m) => m.data?.text === "from 2.x"));
      await ask(newMember, "say", { text: "to 2.x" });
      await waitFor("the reply at the 2.x member", () => oldMember.received.some((m) => m.data?.text === "to 2.x"));
      // A 2.x client cannot recover (no pid in its protocol's CONNECT answer): its room events
      // carry no offset argument; the current client's carry one.
      assert.ok(oldMember.argCounts.length >= 2 && oldMember.argCounts.every((n) => n === 1), `2.x arguments: ${oldMember.argCounts}`);
      assert.ok(newMember.argCounts.length >= 1 && newMember.argCounts.every((n) => n === 2), `4.x arguments: ${newMember.argCounts}`);

      // Login and direct messages (today's protocol) over 2.x.
      const ann = trackClient(ioV2(cluster.url(0), { forceNew: true, ...v2 }));
      ann.chats = [];
      ann.on("chat", (payload, ack) => {
        ann.chats.push(...(Array.isArray(payload) ? payload : [payload]));
        ack({ ok: true });
      });
      ann.notes = [];
      ann.on("notification", (note) => ann.notes.push(note));
      await new Promise((resolve) => ann.once("connect", resolve));
      const login = await ask(ann, "login", { userId: "ann", deviceId: "android-4" });
      assert.equal(login.ok, true, JSON.stringify(login));

      // The old chat app over 2.x, as the shipped apps are.
      const bob = chatApp(ioV2, cluster.url(1), "bob", "iphone-6", v2);
      await hooks.until("bob's login", () => hooks.messages.login_message_channel.some((h) => h.userId === "bob"));
      const toBob = await ask(ann, "chat", { to: "bob", text: "hello old app" });
      assert.equal(toBob.ok, true);
      await bob.until("ann's message", () => bob.messages().length === 1);
      assert.equal(bob.messages()[0].text, "hello old app");
      assert.equal((await ask(bob, "chat", { to: "ann", content: "hello back", type: 1 })).ok, true);
      await waitFor("bob's message at ann", () => ann.chats.length === 1);
      assert.equal(ann.chats[0].content, "hello back");
      assert.equal((await ask(bob, "hb", {})).ok, true);

      // Push: the API to a 2.x login, the old push service's client over 2.x.
      const pushed = await api(cluster.url(1), "/api/push", { users: ["ann"], category: "remind", data: { n: 1 } });
      assert.equal(pushed.body.online, 1);
      await waitFor("the notification at the 2.x client", () => ann.notes.length === 1);
      assert.deepEqual(ann.notes[0].data, { n: 1 });
      const tab = serviceClient(ioV2, cluster.url(0), "carol", { tokenId: "tok-1", ...v2 });
      await hooks.until("carol's login", () => hooks.messages.login_message_channel.some((h) => h.userId === "carol"));
      assert.equal((await api(cluster.url(1), "/api", { tokens: ["tok-1"], data: "You shall not pass!!!" })).body.online, 1);
      await tab.until("receive_message", () => tab.received.length === 1);
      assert.deepEqual(tab.received[0], { data: "You shall not pass!!!" });

      // The 2.x member's connection drops (no goodbye): it cannot come back as the same member,
      // so the room hears its quit at once, not after the presence grace.
      oldMember.io.engine.close();
      await waitFor("the 2.x member's quit", () => newMember.received.some((m) => m.event === "broadcast_quit" && m.data?.username === "old-app"));
      for (const c of [oldMember, newMember, ann, bob, tab]) c.disconnect();
      hooks.close();
      await cluster.stop();
    });
  }

  test("--parser msgpack serves msgpack clients; a JSON client gets a clear connect_error, once, not a reconnect loop", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--parser", "msgpack"], env: { CHAT_API_KEY: API_KEY } });
    const withParser = { parser: msgpackParser };
    const a = await roomMember(io, cluster.url(0), "lobby", "a", withParser);
    const b = await roomMember(io, cluster.url(1), "lobby", "b", { ...withParser, transports: ["polling"] });
    await ask(a, "say", { text: "packed" });
    await waitFor("the say across workers", () => b.received.some((m) => m.data?.text === "packed"));
    // Room events carry their offset as a second argument, a string, through msgpack too.
    assert.ok(a.argCounts.length >= 2 && a.argCounts.every((n) => n === 2), `arguments: ${a.argCounts}`);
    // A newcomer's history arrives through msgpack as the messages themselves.
    const c = await roomMember(io, cluster.url(1), "lobby", "c", withParser);
    assert.equal(c.histories.length, 1);
    assert.deepEqual(
      c.histories[0].messages.map((m) => m.data.text ?? m.event),
      ["join", "join", "packed"],
    );
    const login = await ask(b, "login", { userId: "bee", deviceId: "d" });
    assert.equal(login.ok, true);
    const aLogin = await ask(a, "login", { userId: "ay", deviceId: "d" });
    assert.equal(aLogin.ok, true);
    const got = [];
    b.on("chat", (payload, ack) => {
      got.push(...(Array.isArray(payload) ? payload : [payload]));
      ack({ ok: true });
    });
    assert.equal((await ask(a, "chat", { to: "bee", text: "msgpack dm" })).ok, true);
    await waitFor("the direct message", () => got.length === 1);
    assert.equal(got[0].text, "msgpack dm");
    const notes = [];
    b.on("notification", (note) => notes.push(note));
    assert.equal((await api(cluster.url(0), "/api/push", { users: ["bee"], category: "system", data: { packed: true } })).body.online, 1);
    await waitFor("the notification", () => notes.length === 1);
    assert.deepEqual(notes[0].data, { packed: true });

    for (const transport of ["websocket", "polling"]) {
      const json = trackClient(io(cluster.url(0), { forceNew: true, transports: [transport], reconnectionDelay: 50, reconnectionDelayMax: 50 }));
      const seen = watchAttempts(json);
      await sleep(1500);
      assert.equal(seen.connects, 0, transport);
      assert.deepEqual(seen.errors, ["this server uses socket.io's msgpack parser (socket.io-msgpack-parser); connect with it"], transport);
      assert.equal(seen.attempts, 0, `${transport}: no reconnection after the answer`);
      assert.equal(json.active, false);
      json.disconnect();
    }

    // Connection state recovery through msgpack: a's connection drops, b speaks meanwhile; a
    // comes back as the same socket and gets what it missed, once.
    const aId = a.id;
    const reconnected = new Promise((resolve) => a.io.once("reconnect", resolve));
    a.io.engine.close();
    await ask(b, "say", { text: "while a was away" });
    await reconnected;
    await waitFor("a to be connected", () => a.connected);
    assert.equal(a.recovered, true);
    assert.equal(a.id, aId);
    await waitFor("the missed message", () => a.received.some((m) => m.data?.text === "while a was away"));
    assert.equal(a.received.filter((m) => m.data?.text === "while a was away").length, 1);
    for (const member of [a, b, c]) member.disconnect();
    await cluster.stop();
  });

  test("a msgpack client of a JSON server gets a clear connect_error, once", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url });
    for (const transport of ["websocket", "polling"]) {
      const packed = trackClient(io(cluster.url(0), { forceNew: true, transports: [transport], parser: msgpackParser, reconnectionDelay: 50, reconnectionDelayMax: 50 }));
      const seen = watchAttempts(packed);
      await sleep(1500);
      assert.equal(seen.connects, 0, transport);
      assert.deepEqual(seen.errors, ["this server uses socket.io's default (JSON) parser; connect without socket.io-msgpack-parser"], transport);
      assert.equal(seen.attempts, 0, `${transport}: no reconnection after the answer`);
      packed.disconnect();
    }
    const json = await roomMember(io, cluster.url(0), "lobby", "fine");
    assert.ok(json.connected);
    json.disconnect();
    await cluster.stop();
  });
});
