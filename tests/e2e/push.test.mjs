// Push notifications and authentication with real workers, a real Redis and real HTTP: the push
// API, the old `notification` channel, the unread store, handshake JWTs and browser origins.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { chatClient, cleanup, member, redisCommand, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";
import { person } from "../support/people.mjs";

const API_KEY = "test-key-0123456789";
const JWT_SECRET = "test-jwt-secret-abcdef-0123456789ab"; // at least 32 bytes (HS256)
const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

async function redisInt(port, ...args) {
  const reply = await redisCommand(port, ...args);
  return Number(reply.slice(1).trim());
}

function api(url, path, body, { key = API_KEY, raw, headers = {} } = {}) {
  return fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: raw ?? JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
}

async function apiJson(url, path, body, options) {
  const response = await api(url, path, body, options);
  return { status: response.status, body: await response.json() };
}

const base64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT, signed here with node's crypto. */
function jwt(claims, secret = JWT_SECRET) {
  const head = `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url(claims)}`;
  return `${head}.${crypto.createHmac("sha256", secret).update(head).digest("base64url")}`;
}

const now = () => Math.floor(Date.now() / 1000);

describe("push and auth", () => {
  after(cleanup);

  test("a push reaches a user on another worker; the old API delivers receive_message", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY } });
    const bob = person(cluster.url(1), "bob", "phone");
    await bob.loggedIn();

    const pushed = await apiJson(cluster.url(0), "/api/push", { users: ["bob", "nobody"], category: "remind", data: { post: 42 } });
    assert.equal(pushed.status, 200);
    assert.deepEqual(pushed.body, { ok: true, online: 1, stored: 0 });
    await bob.until("the notification", () => bob.of("notification").length === 1);
    const [note] = bob.of("notification");
    assert.equal(note.category, "remind");
    assert.deepEqual(note.data, { post: 42 });
    assert.equal(typeof note.ts, "number");
    assert.equal(note.id, undefined, "not stored, so no id");

    const custom = await apiJson(cluster.url(0), "/api/push", { users: [ "bob" ], category: "publish", event: "like", data: { by: "ann" } });
    assert.equal(custom.status, 200);
    await bob.until("the custom event", () => bob.of("like").length === 1);

    const legacy = await apiJson(cluster.url(0), "/api", { tokens: ["bob"], data: { msg: "old style" } });
    assert.deepEqual(legacy.body, { ok: true, online: 1, stored: 0 });
    await bob.until("receive_message", () => bob.of("receive_message").length === 1);
    assert.deepEqual(bob.of("receive_message")[0], { data: { msg: "old style" } });
    // The old service's own example posts a string as `data` (and any JSON value is data).
    const example = await apiJson(cluster.url(1), "/api", { tokens: ["bob", "2"], data: "You shall not pass!!!" });
    assert.equal(example.status, 200, JSON.stringify(example.body));
    assert.deepEqual(example.body, { ok: true, online: 1, stored: 0 });
    const typed = await apiJson(cluster.url(0), "/api", { tokens: ["bob"], entityType: "like", data: [1, null] });
    assert.equal(typed.status, 200, JSON.stringify(typed.body));
    await bob.until("two more receive_message", () => bob.of("receive_message").length === 3);
    assert.deepEqual(bob.of("receive_message").slice(1), [{ data: "You shall not pass!!!" }, { entityType: "like", data: [1, null] }]);
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.unread("bob")), 0);
    bob.disconnect();
    await cluster.stop();
  });

  test("a stored push waits for the next login, is counted, and is gone after mark_read", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY } });
    const first = await apiJson(cluster.url(0), "/api/push", { users: ["carol"], category: "mailbox", data: { from: "ann" }, store: true });
    assert.deepEqual(first.body, { ok: true, online: 0, stored: 1 });
    await apiJson(cluster.url(1), "/api/push", { users: ["carol"], category: "system", data: { n: 2 }, store: true });

    const carol = person(cluster.url(1), "carol", "phone");
    const login = await carol.loggedIn();
    assert.deepEqual(login.pending, { chat: 0, notifications: 2 });
    await carol.until("push_message", () => carol.of("push_message").length === 1);
    const grouped = carol.of("push_message")[0];
    assert.deepEqual(Object.keys(grouped).sort(), ["mailbox", "system"]);
    assert.deepEqual(grouped.mailbox[0].data, { from: "ann" });
    const ids = [grouped.mailbox[0].id, grouped.system[0].id];

    const count = await carol.ack_("unread_count");
    assert.equal(count.count, 2);
    assert.equal(count.byCategory.mailbox, 1);
    assert.equal(count.byCategory.remind, 0);
    assert.equal((await carol.ack_("mark_read", { ids: ["not-an-id"] })).error.code, "invalid_payload");
    assert.deepEqual(await carol.ack_("mark_read", { ids }), { ok: true, removed: 2 });
    assert.equal((await carol.ack_("unread_count")).count, 0);
    carol.disconnect();

    const again = person(cluster.url(0), "carol", "phone");
    assert.deepEqual((await again.loggedIn()).pending, { chat: 0, notifications: 0 });
    await settle();
    assert.equal(again.of("push_message").length, 0, "nothing unread any more");
    again.disconnect();
    await cluster.stop();
  });

  test("the notification channel: without needStore online users get it; with needStore it is kept until acked", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const bob = person(cluster.url(0), "bob", "phone");
    const erin = person(cluster.url(1), "erin", "phone");
    await Promise.all([bob.loggedIn(), erin.loggedIn()]);

    await redisCommand(redis.port, "PUBLISH", "notification", JSON.stringify({ toWho: ["bob"], title: "hello" }));
    await bob.until("the channel notification", () => bob.of("notification").length === 1);
    const [plain] = bob.of("notification");
    assert.deepEqual(plain.data, { toWho: ["bob"], title: "hello" });
    assert.equal(plain.category, "system");
    await settle();
    assert.equal(bob.of("notification").length, 1, "handled by one worker only");
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.unread("bob")), 0, "not stored");

    await redisCommand(redis.port, "PUBLISH", "notification", JSON.stringify({ toWho: ["erin", "dave"], needStore: true, category: "remind", title: "kept" }));
    await erin.until("the stored notification", () => erin.of("notification").length === 1);
    assert.equal(erin.seen.find((e) => e.event === "notification").acked, true, "sent with an ack");
    assert.ok(erin.of("notification")[0].id, "stored, so it has an id");
    await until("erin's ack to remove it", async () => (await redisInt(redis.port, "XLEN", redisNames.unread("erin"))) === 0);
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.unread("dave")), 1, "kept for the offline user");

    const dave = person(cluster.url(1), "dave", "phone");
    assert.deepEqual((await dave.loggedIn()).pending, { chat: 0, notifications: 1 });
    await dave.until("push_message", () => dave.of("push_message").length === 1);
    assert.equal(dave.of("push_message")[0].remind[0].data.title, "kept");
    for (const c of [bob, erin, dave]) c.disconnect();
    await cluster.stop();
  });

  test("bad key, bad JSON, oversized or incomplete bodies are refused with no side effect", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY }, extraArgs: ["--max-api-body-bytes", "1024"] });
    const bob = person(cluster.url(0), "bob", "phone");
    await bob.loggedIn();
    const good = { users: ["bob"], category: "system", data: { x: 1 }, store: true };
    const cases = [
      ["no key", "/api/push", { key: null }, 401, "unauthorized"],
      ["wrong key", "/api/push", { key: "wrong" }, 401, "unauthorized"],
      ["bad JSON", "/api/push", { raw: "{not json" }, 400, "invalid_json"],
      ["missing field", "/api/push", { raw: JSON.stringify({ users: ["bob"], data: 1 }) }, 400, "invalid_json"],
      ["unknown category", "/api/push", { raw: JSON.stringify({ ...good, category: "spam" }) }, 400, "invalid_json"],
      ["empty users", "/api/push", { raw: JSON.stringify({ ...good, users: [] }) }, 400, "invalid_payload"],
      ["bad user", "/api/push", { raw: JSON.stringify({ ...good, users: ["a b"] }) }, 400, "invalid_user"],
      ["reserved event", "/api/push", { raw: JSON.stringify({ ...good, event: "disconnect" }) }, 400, "invalid_payload"],
      ["oversized", "/api/push", { raw: JSON.stringify({ ...good, data: "x".repeat(2000) }) }, 413, "payload_too_large"],
      ["bad room", "/api/broadcast", { raw: JSON.stringify({ room: "a/b", category: "system", data: 1 }) }, 400, "invalid_room"],
      ["legacy without tokens", "/api", { raw: JSON.stringify({ data: {} }) }, 400, "invalid_json"],
    ];
    for (const [what, path, options, status, code] of cases) {
      const response = await api(cluster.url(0), path, good, options);
      const body = await response.json();
      assert.equal(response.status, status, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.ok, false, what);
      assert.equal(body.error.code, code, `${what}: ${JSON.stringify(body)}`);
    }
    await settle();
    assert.equal(bob.of("notification").length, 0, "no refused request was delivered");
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.unread("bob")), 0, "no refused request was stored");
    assert.equal((await api(cluster.url(0), "/api/push", good)).status, 200, "a good request still works");
    bob.disconnect();
    await cluster.stop();

    const keyless = await startCluster({ workers: 1, redisUrl: redis.url });
    const disabled = await apiJson(keyless.url(0), "/api/push", good);
    assert.equal(disabled.status, 503);
    assert.equal(disabled.body.error.code, "disabled");
    await keyless.stop();
  });

  test("broadcast reaches every socket, or only one room's members", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY } });
    const inLobby = await member(cluster.url(0), "lobby", "ann");
    const elsewhere = await member(cluster.url(1), "other", "bob");
    const notes = (client) => {
      const seen = [];
      client.on("notification", (n) => seen.push(n));
      return seen;
    };
    const lobbyNotes = notes(inLobby);
    const otherNotes = notes(elsewhere);
    const toRoom = await apiJson(cluster.url(1), "/api/broadcast", { room: "lobby", category: "announcement", data: { text: "lobby only" } });
    assert.deepEqual(toRoom.body, { ok: true, workers: 2 });
    await until("the room announcement", () => lobbyNotes.length === 1);
    const toAll = await apiJson(cluster.url(0), "/api/broadcast", { category: "announcement", data: { text: "everyone" } });
    assert.equal(toAll.status, 200);
    await until("the announcement to all", () => lobbyNotes.length === 2 && otherNotes.length === 1);
    assert.deepEqual(otherNotes.map((n) => n.data.text), ["everyone"]);
    assert.equal(lobbyNotes[0].category, "announcement");
    inLobby.disconnect();
    elsewhere.disconnect();
    await cluster.stop();
  });

  test("jwt mode refuses missing, forged and expired tokens and accepts a good one, by auth payload or cookie", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, extraArgs: ["--auth", "jwt"], env: { CHAT_JWT_SECRET: JWT_SECRET } });
    const refusal = async (options) => {
      const client = chatClient(cluster.url(0), { reconnection: false, ...options });
      const error = await new Promise((resolve) => client.once("connect_error", resolve));
      client.disconnect();
      return error.message;
    };
    assert.match(await refusal({}), /authentication required/);
    assert.match(await refusal({ auth: { token: jwt({ sub: "ann", exp: now() + 60 }, "forged-secret") } }), /signature/);
    assert.match(await refusal({ auth: { token: jwt({ sub: "ann", exp: now() - 60 }) } }), /expired/);
    assert.match(await refusal({ auth: { token: "not.a.token" } }), /invalid token/);
    assert.match(await refusal({ auth: { token: jwt({ sub: "ann" }) } }), /invalid token/, "a token without exp is refused");

    const ann = person(cluster.url(0), undefined, "phone", { auth: { token: jwt({ sub: "ann", exp: now() + 60 }) } });
    const login = await ann.loggedIn();
    assert.equal(login.userId, "ann", "the identity is the token's subject");
    const bob = person(cluster.url(0), "ann", "laptop", {
      reconnection: false,
      extraHeaders: { cookie: `chat_token=${jwt({ sub: "bob", exp: now() + 60 })}` },
    });
    await bob.until("the refused login", () => bob.logins.length === 1);
    assert.equal(bob.logins[0].error.code, "forbidden", "a token for bob cannot log in as ann");
    assert.equal((await bob.ack_("login", { deviceId: "laptop" })).userId, "bob");
    assert.equal((await bob.dm("ann", "signed by bob", { from: "ann" })).ok, true);
    await ann.until("bob's message", () => ann.messages.length === 1);
    assert.equal(ann.messages[0].from, "bob");
    ann.disconnect();
    bob.disconnect();
    await cluster.stop();
  });

  test("browser origins: the page's own and listed origins pass, others are refused", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, env: { CHAT_API_KEY: API_KEY }, extraArgs: ["--allowed-origins", "https://app.example.com"] });
    const url = cluster.url(0);
    const refused = chatClient(url, { reconnection: false, extraHeaders: { origin: "http://evil.example" } });
    const error = await new Promise((resolve) => refused.once("connect_error", resolve));
    assert.ok(error, "a socket from another origin is refused");
    refused.disconnect();

    const same = chatClient(url, { reconnection: false, extraHeaders: { origin: url } });
    await same.connected_();
    same.disconnect();
    const listed = chatClient(url, { reconnection: false, extraHeaders: { origin: "https://app.example.com" } });
    await listed.connected_();
    listed.disconnect();

    const preflight = await fetch(`${url}/api/push`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST" },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example.com");
    const foreign = await api(url, "/api/push", { users: ["bob"], category: "system", data: 1, store: true }, { headers: { origin: "http://evil.example" } });
    assert.equal(foreign.status, 403);
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.unread("bob")), 0);
    await cluster.stop();
  });
});
