// Old clients and their backends, served unchanged (issue 14, points 1-3): the chat + push app
// (seed 000), the push service (003) and the notices service (004), with clients written the way
// those apps wrote them (event names, payloads, acks from the seeds' code), over real workers,
// a real Redis and the official socket.io-client. Where an old server trusted the client (a
// `from`, a `myAuraId`, a `socketId`), the tests check that the client cannot act as another
// user.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { io } from "socket.io-client";
import { cleanup, redisCommand, sleep, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";
import { person, subscribe } from "../support/people.mjs";
import { ask, chatApp, serviceClient } from "../support/old-apps.mjs";

const API_KEY = "test-key-0123456789";

async function redisInt(port, ...args) {
  const reply = await redisCommand(port, ...args);
  return Number(reply.slice(1).trim());
}

async function api(url, path, body) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: response.status, body: await response.json() };
}

/** Resolves once the login hook channel has seen `count` logins of `user`: the old apps' logins
 * have no ack, and the old backends learn of them from that channel. */
function loggedIn(hooks, user, count = 1) {
  return hooks.until(`${count} login(s) of ${user}`, () => hooks.messages.login_message_channel.filter((h) => h.event === "login" && h.userId === user).length >= count);
}

describe("old clients", () => {
  after(cleanup);

  test("chat app: login with myAuraId, free-form chat kept whole, delivered as a JSON string, the ack's count removes that many", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = chatApp(io, cluster.url(0), "ann", "ann-phone", { extra: { pushToken: "apns-1" } });
    await loggedIn(hooks, "ann");
    const login = hooks.messages.login_message_channel.find((h) => h.userId === "ann");
    assert.equal(login.myAuraId, "ann", "the hook keeps the app's login object, which old backends read");
    assert.equal(login.deviceId, "ann-phone");
    assert.equal(login.pushToken, "apns-1");

    const sent = [];
    for (let i = 0; i < 3; i++) {
      const answer = await ask(ann, "chat", { to: "bob", from: "mallory", content: `hello ${i}`, type: 1, time: 1700000000000 + i, extra: { nested: [i] } });
      assert.equal(answer.ok, true, JSON.stringify(answer));
      sent.push(answer.id);
    }
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 3, "stored while bob is offline");

    // Bob's app handles two messages of the first list, then everything.
    let first = true;
    const bob = chatApp(io, cluster.url(1), "bob", "bob-phone", {
      handle: (list) => {
        if (!first) return list.length;
        first = false;
        return 2;
      },
    });
    await bob.until("the waiting messages", () => bob.lists.length === 1);
    assert.equal(typeof bob.raw[0], "string", "chat carries a JSON string, as the old server sent it");
    const [list] = bob.lists;
    assert.deepEqual(list.map((m) => m.content), ["hello 0", "hello 1", "hello 2"], "in order");
    assert.deepEqual(list.map((m) => m.id), sent);
    for (const [i, m] of list.entries()) {
      assert.equal(m.from, "ann", "from is the sender's login, never the payload's");
      assert.equal(m.to, "bob");
      assert.equal(m.type, 1);
      assert.equal(m.time, 1700000000000 + i);
      assert.deepEqual(m.extra, { nested: [i] });
      assert.equal(typeof m.ts, "number");
    }
    await until("the first two to leave the inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 1);
    await sleep(300);
    assert.equal(bob.lists.length, 1, "the unhandled one waits for the next delivery");

    const live = await ask(ann, "chat", { to: "bob", content: "live", type: 2 });
    assert.equal(live.ok, true);
    await bob.until("the next list", () => bob.lists.length === 2);
    assert.deepEqual(bob.lists[1].map((m) => m.content), ["hello 2", "live"], "the unhandled one comes again, first");
    await until("the inbox to empty", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);

    // hb is acked; geo goes to the old channel as {geo, time}, with the login's user.
    const geoHooks = await subscribe(redis.port, "geo");
    assert.equal((await ask(bob, "hb", {})).ok, true);
    assert.deepEqual(await ask(bob, "geo", { myAuraId: "bob", lat: 48.85, lng: 2.35 }), { ok: true });
    assert.deepEqual(await ask(bob, "geo", { lat: 1, lng: 2 }), { ok: true });
    await geoHooks.until("two geo messages", () => geoHooks.messages.geo.length === 2);
    assert.deepEqual(geoHooks.messages.geo[0].geo, { myAuraId: "bob", lat: 48.85, lng: 2.35 });
    assert.equal(typeof geoHooks.messages.geo[0].time, "number");
    assert.equal(geoHooks.messages.geo[1].geo.myAuraId, "bob", "the user is the login's, filled in");
    const forged = await ask(bob, "geo", { myAuraId: "ann", lat: 0 });
    assert.equal(forged.error.code, "forbidden");

    bob.disconnect();
    await sleep(300);
    assert.equal(
      hooks.messages.login_message_channel.filter((h) => h.userId === "bob" && h.event === "logout").length,
      0,
      "no logout hook for the old app: old backends take every message there for a login",
    );
    const again = chatApp(io, cluster.url(0), "bob", "bob-phone");
    await loggedIn(hooks, "bob", 2);
    await sleep(300);
    assert.equal(again.lists.length, 0, "nothing comes again after the count acks");
    for (const c of [ann, again]) c.disconnect();
    geoHooks.close();
    hooks.close();
    await cluster.stop();
  });

  test("chat app: a login from another device gets logout then disconnect; old and new clients talk", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const phone = chatApp(io, cluster.url(0), "carol", "phone");
    await loggedIn(hooks, "carol");
    phone.io.reconnection(false);
    const tablet = chatApp(io, cluster.url(1), "carol", "tablet");
    await loggedIn(hooks, "carol", 2);
    await phone.until("logout, then the disconnect", () => phone.logouts === 1 && !phone.connected);
    assert.ok(tablet.connected);

    // A new-protocol client and the old app exchange messages.
    const dan = person(cluster.url(0), "dan", "web");
    await dan.loggedIn();
    assert.equal((await dan.dm("carol", "from a new client")).ok, true);
    await tablet.until("dan's message", () => tablet.messages().length === 1);
    assert.equal(tablet.messages()[0].text, "from a new client");
    assert.equal(tablet.messages()[0].from, "dan");
    assert.equal((await ask(tablet, "chat", { to: "dan", content: "from the old app" })).ok, true);
    await dan.until("carol's message", () => dan.messages.length === 1);
    assert.equal(dan.messages[0].content, "from the old app");
    assert.equal(dan.messages[0].from, "carol");
    for (const c of [tablet, dan]) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("chat app: chats and a todo sent right behind the login (which has no ack to wait for) are stored, in order", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url });
    const hasty = chatApp(io, cluster.url(0), "hal", "phone", { login: false });
    const answers = [];
    hasty.on("connect", () => {
      hasty.emit("login", { myAuraId: "hal", deviceId: "phone" });
      for (let i = 0; i < 3; i++) hasty.emit("chat", { to: "ida", content: `queued ${i}` }, (answer) => answers.push(answer));
    });
    await hasty.until("connected", () => hasty.connected);
    await until("three answers", () => answers.length === 3);
    assert.ok(answers.every((a) => a.ok), JSON.stringify(answers));
    const notices = serviceClient(io, cluster.url(0), "jo", { login: false });
    const todo = new Promise((resolve) => {
      notices.on("connect", () => {
        notices.emit("user_login", { userId: "jo", socketId: notices.id });
        notices.emit("todo", { receiver_id: "ida", title: "right behind" }, resolve);
      });
    });
    assert.deepEqual(await todo, { ok: true });
    const ida = chatApp(io, cluster.url(0), "ida", "phone");
    await ida.until("the queued messages", () => ida.messages().length === 3);
    assert.deepEqual(ida.messages().map((m) => m.content), ["queued 0", "queued 1", "queued 2"]);
    for (const c of [hasty, notices, ida]) c.disconnect();
    await cluster.stop();
  });

  test("chat app: notification is the published string; needStore is removed by the ack; stored ones come at login", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const erin = chatApp(io, cluster.url(0), "erin", "phone");
    await loggedIn(hooks, "erin");

    const plain = '{"toWho":["erin"], "title":"spaced  as published","n":1}';
    await redisCommand(redis.port, "PUBLISH", "notification", plain);
    await erin.until("the notification", () => erin.notifications.length === 1);
    assert.equal(erin.notifications[0].msg, plain, "byte for byte");
    assert.equal(erin.notifications[0].acked, false, "without needStore, no ack asked");

    const kept = JSON.stringify({ toWho: ["erin", "fred"], needStore: true, title: "kept" });
    await redisCommand(redis.port, "PUBLISH", "notification", kept);
    await erin.until("the stored notification", () => erin.notifications.length === 2);
    assert.equal(erin.notifications[1].msg, kept);
    assert.equal(erin.notifications[1].acked, true);
    await until("erin's ack to remove it", async () => (await redisInt(redis.port, "XLEN", redisNames.unread("erin"))) === 0);
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.unread("fred")), 1, "kept for the offline user");

    const fred = chatApp(io, cluster.url(1), "fred", "phone");
    await fred.until("the stored notification at login", () => fred.notifications.length === 1);
    assert.equal(fred.notifications[0].msg, kept);
    await until("fred's ack to remove it", async () => (await redisInt(redis.port, "XLEN", redisNames.unread("fred"))) === 0);
    for (const c of [erin, fred]) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("chat app: bad payloads are refused with error acks, or logged where the event had no ack; nothing acts as another user", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, extraArgs: ["--max-object-bytes", "1024", "--rate-per-sec", "2", "--rate-burst", "12"] });
    // A login with a bad id (no ack, as the app sends it) logs nobody in.
    const bad = chatApp(io, cluster.url(0), "a b", "phone");
    await bad.until("connected", () => bad.connected);
    await sleep(300);
    const notLoggedIn = await ask(bad, "chat", { to: "bob", content: "x" });
    assert.equal(notLoggedIn.error.code, "not_logged_in", "refused login, so chat is refused");
    assert.equal(hooks.messages.login_message_channel.length, 0);

    const gus = chatApp(io, cluster.url(0), "gus", "phone");
    await loggedIn(hooks, "gus");
    const cases = [
      [{ content: "no recipient" }, "invalid_payload"],
      [{ to: "bob" }, "invalid_payload"],
      [{ to: "b b", content: "x" }, "invalid_user"],
      [{ to: "bob", content: "bell\u0007" }, "invalid_text"],
      [{ to: "bob", content: "x".repeat(1100) }, "invalid_payload"],
      ["just a string", "invalid_payload"],
    ];
    for (const [payload, code] of cases) {
      const answer = await ask(gus, "chat", payload);
      assert.equal(answer.ok, false, JSON.stringify(payload));
      assert.equal(answer.error.code, code, `${JSON.stringify(payload).slice(0, 40)}: ${JSON.stringify(answer)}`);
    }
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.inbox("bob")), 0, "nothing refused was stored");
    // A second login on the same socket, as someone else, is refused.
    const twice = await ask(gus, "login", { myAuraId: "mallory", deviceId: "phone" });
    assert.equal(twice.error.code, "already_logged_in");
    // The per-socket rate applies to the old events like to any other.
    const burst = await Promise.all(Array.from({ length: 15 }, () => ask(gus, "hb", {})));
    assert.ok(burst.some((a) => a.error?.code === "rate_limited"), JSON.stringify(burst));
    for (const c of [bad, gus]) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("chat app with --moderation: the filter gets the app's fields and hands them back, as with the old server", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const filter = await subscribe(redis.port, "chat_filter_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--moderation"] });
    const kim = chatApp(io, cluster.url(0), "kim", "phone");
    const lee = chatApp(io, cluster.url(1), "lee", "phone");
    await loggedIn(hooks, "kim");
    await loggedIn(hooks, "lee");
    const answer = await ask(kim, "chat", { to: "lee", from: "mallory", content: "darn it", type: 1 });
    assert.equal(answer.ok, true, JSON.stringify(answer));
    assert.equal(answer.moderation, true);
    await filter.until("the item at the filter", () => filter.messages.chat_filter_channel.length === 1);
    const item = filter.messages.chat_filter_channel[0];
    assert.deepEqual({ from: item.from, to: item.to, content: item.content, type: item.type, text: item.text }, { from: "kim", to: "lee", content: "darn it", type: 1, text: undefined });
    // An old filter publishes the object back with its edits.
    await redisCommand(redis.port, "PUBLISH", "snschat", JSON.stringify({ ...item, content: "d*rn it", from: "kim" }));
    await lee.until("the filtered message", () => lee.messages().length === 1);
    assert.deepEqual({ from: lee.messages()[0].from, content: lee.messages()[0].content, type: lee.messages()[0].type }, { from: "kim", content: "d*rn it", type: 1 });
    await sleep(300);
    assert.equal(lee.messages().length, 1, "stored once although every worker heard the filter");
    for (const c of [kim, lee]) c.disconnect();
    filter.close();
    hooks.close();
    await cluster.stop();
  });

  test("todo costs like a direct message: the sender's rate across the cluster", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--sender-rate-per-sec", "0.2", "--sender-rate-burst", "3"] });
    const tabs = [serviceClient(io, cluster.url(0), "boss"), serviceClient(io, cluster.url(1), "boss")];
    await loggedIn(hooks, "boss", 2);
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => ask(tabs[i % 2], "todo", { receiver_id: "worker", n: i })));
    const accepted = answers.filter((a) => a.ok).length;
    assert.equal(accepted, 3, JSON.stringify(answers));
    assert.ok(answers.filter((a) => !a.ok).every((a) => a.error.code === "rate_limited"), JSON.stringify(answers));
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.unread("worker")), 3, "nothing refused was stored");
    for (const c of tabs) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("push service: user_login binds several sockets per user; POST /api reaches them by tokenId or user id", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY } });
    const tabA = serviceClient(io, cluster.url(0), "1", { tokenId: "tok-a" });
    const tabB = serviceClient(io, cluster.url(1), "1", { tokenId: "tok-b" });
    const other = serviceClient(io, cluster.url(1), "2", { tokenId: "tok-c" });
    await loggedIn(hooks, "1", 2);
    await loggedIn(hooks, "2");

    const byToken = await api(cluster.url(0), "/api", { tokens: ["tok-a"], data: "You shall not pass!!!" });
    assert.equal(byToken.status, 200, JSON.stringify(byToken.body));
    assert.equal(byToken.body.online, 1);
    await tabA.until("the push", () => tabA.received.length === 1);
    assert.deepEqual(tabA.received[0], { data: "You shall not pass!!!" });

    const byUser = await api(cluster.url(1), "/api", { tokens: ["1", "2"], entityType: "like", data: { post: 7 } });
    assert.deepEqual(byUser.body, { ok: true, online: 2, stored: 0 });
    await tabB.until("the push by user id", () => tabB.received.length === 1);
    await other.until("the push by user id", () => other.received.length === 1);
    await tabA.until("the second push", () => tabA.received.length === 2);
    assert.deepEqual(tabB.received[0], { entityType: "like", data: { post: 7 } });
    await sleep(300);
    assert.deepEqual([tabA.received.length, tabB.received.length, other.received.length], [2, 1, 1], "each socket once");
    assert.ok(tabA.connected && tabB.connected && other.connected, "no login kicked another out");
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.inbox("1")), 0);
    for (const c of [tabA, tabB, other]) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("notices service: user_login pushes unread notices by category; todo is kept, delivered live or at the next user_login", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY } });
    const stored = await api(cluster.url(0), "/api/push", { users: ["n1"], category: "remind", data: { text: "meeting" }, store: true });
    assert.equal(stored.body.stored, 1);

    const n1 = serviceClient(io, cluster.url(0), "n1");
    await n1.until("push_message", () => n1.pushes.length === 1);
    assert.deepEqual(Object.keys(n1.pushes[0]), ["remind"]);
    assert.deepEqual(n1.pushes[0].remind[0].data, { text: "meeting" });

    const n2 = serviceClient(io, cluster.url(1), "n2");
    await loggedIn(hooks, "n2");
    const sent = await ask(n2, "todo", { receiver_id: "n1", title: "approve the invoice", amount: 12.5, from: "boss" });
    assert.deepEqual(sent, { ok: true });
    await n1.until("the live todo", () => n1.todos.length === 1);
    assert.deepEqual(n1.todos[0], { receiver_id: "n1", title: "approve the invoice", amount: 12.5, from: "n2" }, "as sent, from the sender's login");

    // The old notices client sends todo without an ack: an offline receiver gets it at login.
    n2.emit("todo", { receiver_id: "n3", title: "sign" });
    await until("the todo to be stored for n3", async () => (await redisInt(redis.port, "XLEN", redisNames.unread("n3"))) === 1);
    const n3 = serviceClient(io, cluster.url(1), "n3");
    await n3.until("push_message", () => n3.pushes.length === 1);
    assert.deepEqual(Object.keys(n3.pushes[0]), ["todo"]);
    assert.deepEqual(n3.pushes[0].todo[0].data, { receiver_id: "n3", title: "sign", from: "n2" });
    assert.equal(n3.pushes[0].todo[0].category, "todo");

    // todo needs a login and a valid receiver.
    const stranger = serviceClient(io, cluster.url(0), "ok", { login: false });
    await stranger.until("connected", () => stranger.connected);
    assert.equal((await ask(stranger, "todo", { receiver_id: "n1", title: "spam" })).error.code, "not_logged_in");
    assert.equal((await ask(n2, "todo", { title: "nobody" })).error.code, "invalid_payload");
    assert.equal((await ask(n2, "todo", { receiver_id: "a b" })).error.code, "invalid_user");
    assert.equal((await ask(n2, "todo", { receiver_id: "n1", note: "\u001b[31m" })).error.code, "invalid_text");
    await sleep(200);
    assert.equal(n1.todos.length, 1, "nothing refused was delivered");
    for (const c of [n1, n2, n3, stranger]) c.disconnect();
    hooks.close();
    await cluster.stop();
  });

  test("with --auth jwt, an old client's login can only be the token's user", async () => {
    const secret = "test-jwt-secret-abcdef-0123456789ab"; // at least 32 bytes (HS256)
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "ann", exp: Math.floor(Date.now() / 1000) + 600 })}`;
    const token = `${head}.${crypto.createHmac("sha256", secret).update(head).digest("base64url")}`;
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, extraArgs: ["--auth", "jwt"], env: { CHAT_JWT_SECRET: secret } });
    const socket = chatApp(io, cluster.url(0), "x", "d", { auth: { token }, login: false });
    await socket.until("connected", () => socket.connected);
    assert.equal((await ask(socket, "login", { myAuraId: "bob", deviceId: "d" })).error.code, "forbidden");
    assert.equal((await ask(socket, "user_login", { userId: "ann", tokenId: "bob" })).error.code, "forbidden");
    const ok = await ask(socket, "login", { myAuraId: "ann", deviceId: "d" });
    assert.equal(ok.ok, true, JSON.stringify(ok));
    socket.disconnect();
    await cluster.stop();
  });
});
