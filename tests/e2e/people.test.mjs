// People across real workers and a real Redis: login, direct messages stored while offline and
// delivered with acks, device kick-out, hooks, bounds, and a worker killed mid-delivery.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisCommand, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";
import { person, subscribe } from "../support/people.mjs";

const disconnectAll = (...clients) => clients.forEach((c) => c.disconnect());

/** Integer reply of a RESP command (`:<n>`). */
async function redisInt(port, ...args) {
  const reply = await redisCommand(port, ...args);
  return Number(reply.slice(1).trim());
}

describe("people", () => {
  after(cleanup);

  test("messages to an offline user wait, arrive in order once at login on another worker, and are gone after the ack", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "chat_message_channel", "chat_message_history_channel", "login_message_channel");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = person(cluster.url(0), "ann", "phone");
    assert.deepEqual((await ann.loggedIn()).pending, { chat: 0, notifications: 0 });

    const texts = Array.from({ length: 7 }, (_, i) => `offline ${i}`);
    const ids = [];
    for (const text of texts) {
      const answer = await ann.dm("bob", text, { from: "mallory" });
      assert.equal(answer.ok, true, JSON.stringify(answer));
      ids.push(answer.id);
    }
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), texts.length, "stored before bob exists anywhere");
    await hooks.until("offline and history hooks", () => hooks.messages.chat_message_channel.length === texts.length && hooks.messages.chat_message_history_channel.length === texts.length);
    assert.deepEqual(hooks.messages.chat_message_channel.map((m) => m.text), texts);

    const bob = person(cluster.url(1), "bob", "laptop");
    assert.deepEqual((await bob.loggedIn()).pending, { chat: texts.length, notifications: 0 });
    assert.deepEqual(await bob.texts(texts.length), texts, "in order");
    assert.deepEqual(bob.messages.map((m) => m.id), ids, "the ids the senders' acks gave");
    for (const m of bob.messages) {
      assert.equal(m.from, "ann", "the server sets from; a forged one has no effect");
      assert.equal(m.to, "bob");
      assert.equal(typeof m.ts, "number");
    }
    assert.ok(bob.batches >= 1, "waiting messages come in batches (arrays)");
    await until("acked messages to leave the inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);
    await hooks.until("login hooks", () => hooks.messages.login_message_channel.some((h) => h.event === "login" && h.userId === "bob" && h.deviceId === "laptop"));
    bob.disconnect();

    const again = person(cluster.url(0), "bob", "laptop");
    assert.deepEqual((await again.loggedIn()).pending, { chat: 0, notifications: 0 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(again.messages.length, 0, "nothing comes twice after the ack");
    await hooks.until("a logout hook for the closed socket", () => hooks.messages.login_message_channel.some((h) => h.event === "logout" && h.userId === "bob"));
    disconnectAll(ann, again);
    hooks.close();
    await cluster.stop();
  });

  test("a message to a user online on another worker arrives at once, and heartbeats answer", async () => {
    const redis = await startRedis();
    const hooks = await subscribe(redis.port, "chat_message_channel", "geo");
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = person(cluster.url(0), "ann", "phone");
    const bob = person(cluster.url(1), "bob", "phone");
    await Promise.all([ann.loggedIn(), bob.loggedIn()]);
    const started = Date.now();
    const answer = await ann.dm("bob", "live hello", { clientMsgId: "c-1" });
    assert.equal(answer.ok, true);
    await bob.until("the live message", () => bob.messages.length === 1, 2000);
    assert.ok(Date.now() - started < 2000);
    assert.deepEqual(
      { id: bob.messages[0].id, from: bob.messages[0].from, text: bob.messages[0].text, clientMsgId: bob.messages[0].clientMsgId },
      { id: answer.id, from: "ann", text: "live hello", clientMsgId: "c-1" },
    );
    // A retry with the same clientMsgId is answered with the first id and stores nothing.
    const retry = await ann.dm("bob", "live hello", { clientMsgId: "c-1" });
    assert.deepEqual(retry, { ok: true, id: answer.id, duplicate: true });
    await until("bob's ack to empty his inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);
    assert.equal(hooks.messages.chat_message_channel.length, 0, "no offline push for an online user");
    assert.equal(bob.messages.length, 1);

    const hb = await bob.ack_("hb");
    assert.equal(hb.ok, true);
    assert.equal(typeof hb.ts, "number");
    assert.deepEqual(await bob.ack_("geo", { lat: 1.5, lng: 2 }), { ok: true });
    await hooks.until("the geo hook", () => hooks.messages.geo.length === 1);
    assert.deepEqual(hooks.messages.geo[0].data, { lat: 1.5, lng: 2 });
    assert.equal(hooks.messages.geo[0].userId, "bob");
    disconnectAll(ann, bob);
    hooks.close();
    await cluster.stop();
  });

  test("bad people input gets clear errors and changes nothing", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url });
    const stranger = person(cluster.url(0), "a b", "phone");
    await stranger.until("the refused login", () => stranger.logins.length === 1);
    assert.equal(stranger.logins[0].error.code, "invalid_user");
    const refused = await stranger.dm("bob", "hi");
    assert.equal(refused.error.code, "not_logged_in");

    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    const cases = [
      ["login", { userId: "ann", deviceId: "other" }, "already_logged_in"],
      ["chat", { to: "bob" }, "invalid_payload"],
      ["chat", { to: "bob", text: "" }, "invalid_text"],
      ["chat", { to: "b/b", text: "x" }, "invalid_user"],
      ["chat", { to: "bob", text: "x".repeat(2001) }, "invalid_text"],
      ["chat", "just a string", "invalid_payload"],
      ["geo", [1, 2], "invalid_payload"],
    ];
    for (const [event, payload, code] of cases) {
      const answer = await ann.ack_(event, payload);
      assert.equal(answer.ok, false, `${event} ${JSON.stringify(payload)}`);
      assert.equal(answer.error.code, code, `${event} ${JSON.stringify(payload)}: ${JSON.stringify(answer)}`);
    }
    assert.equal(await redisInt(redis.port, "EXISTS", redisNames.inbox("bob")), 0, "no refused message was stored");
    assert.equal((await ann.dm("bob", "still fine")).ok, true);
    disconnectAll(stranger, ann);
    await cluster.stop();
  });

  test("single device policy: a login elsewhere logs the old device out across workers; the same device is replaced quietly", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const phone = person(cluster.url(0), "bob", "phone", { reconnection: false });
    await phone.loggedIn();
    const laptop = person(cluster.url(1), "bob", "laptop", { reconnection: false });
    await laptop.loggedIn();
    await phone.until("the logout notice and disconnect", () => phone.logouts.length === 1 && !phone.connected);
    assert.deepEqual(phone.logouts[0], { reason: "logged_in_elsewhere", deviceId: "laptop" });
    assert.equal(phone.lastDisconnect, "io server disconnect");

    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    assert.equal((await ann.dm("bob", "to the laptop")).ok, true);
    await laptop.until("delivery to the device that stayed", () => laptop.messages.length === 1);

    const laptop2 = person(cluster.url(0), "bob", "laptop", { reconnection: false });
    await laptop2.loggedIn();
    await laptop.until("the quiet replacement", () => !laptop.connected);
    assert.equal(laptop.logouts.length, 0, "the same device gets no logout notice");
    assert.ok(laptop2.connected);
    disconnectAll(ann, laptop2);
    await cluster.stop();
  });

  test("multi device policy: every device stays and receives the user's messages", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--device-policy", "multi"] });
    const phone = person(cluster.url(0), "bob", "phone");
    const laptop = person(cluster.url(1), "bob", "laptop");
    await Promise.all([phone.loggedIn(), laptop.loggedIn()]);
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    assert.equal((await ann.dm("bob", "to both")).ok, true);
    await phone.until("the phone's copy", () => phone.messages.length === 1);
    await laptop.until("the laptop's copy", () => laptop.messages.length === 1);
    assert.ok(phone.connected && laptop.connected);
    assert.equal(phone.logouts.length + laptop.logouts.length, 0);
    disconnectAll(ann, phone, laptop);
    await cluster.stop();
  });

  test("a full inbox answers inbox_full and stores nothing more; acks make room", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, extraArgs: ["--inbox-max-messages", "5"] });
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    for (let i = 0; i < 5; i++) assert.equal((await ann.dm("bob", `fits ${i}`)).ok, true);
    const full = await ann.dm("bob", "one too many");
    assert.equal(full.ok, false);
    assert.equal(full.error.code, "inbox_full");
    assert.match(full.error.message, /5 messages waiting/);
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 5);

    const bob = person(cluster.url(0), "bob", "phone");
    assert.deepEqual(await bob.texts(5), [0, 1, 2, 3, 4].map((i) => `fits ${i}`));
    await until("the acks to empty the inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);
    bob.disconnect();
    assert.equal((await ann.dm("bob", "room again")).ok, true);
    ann.disconnect();
    await cluster.stop();
  });

  test("concurrent senders to one inbox lose nothing", async () => {
    const redis = await startRedis();
    // Limits out of the way: this is about concurrency, not rates or shares.
    const cluster = await startCluster({
      workers: 2,
      redisUrl: redis.url,
      extraArgs: ["--rate-per-sec", "1000", "--rate-burst", "1000", "--sender-rate-burst", "1000", "--inbox-max-per-sender", "1000"],
    });
    const senders = Array.from({ length: 8 }, (_, i) => person(cluster.url(i % 2), `sender${i}`, "d"));
    await Promise.all(senders.map((s) => s.loggedIn()));
    const perSender = 50;
    const answers = await Promise.all(
      senders.map(async (s, i) => {
        const sent = [];
        // Each sender pipelines its messages: all emitted at once, acks awaited together.
        const acks = await Promise.all(Array.from({ length: perSender }, (_, n) => s.dm("carol", `${i}:${n}`)));
        for (const a of acks) sent.push(a);
        return sent;
      }),
    );
    const all = answers.flat();
    assert.equal(all.length, senders.length * perSender);
    assert.ok(all.every((a) => a.ok), JSON.stringify(all.find((a) => !a.ok)));
    assert.equal(new Set(all.map((a) => a.id)).size, all.length, "every message has its own id");
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("carol")), all.length);

    const carol = person(cluster.url(1), "carol", "phone");
    await carol.texts(all.length);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(carol.messages.length, all.length, "each message exactly once");
    assert.deepEqual(new Set(carol.messages.map((m) => m.id)), new Set(all.map((a) => a.id)));
    for (let i = 0; i < senders.length; i++) {
      const mine = carol.messages.filter((m) => m.from === `sender${i}`).map((m) => Number(m.text.split(":")[1]));
      assert.deepEqual(mine, [...mine].sort((a, b) => a - b), `sender${i}'s messages in the order sent`);
    }
    disconnectAll(carol, ...senders);
    await cluster.stop();
  });

  test("the worker holding the recipient is SIGKILLed mid-delivery: nothing is lost", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = person(cluster.url(0), "ann", "phone");
    // Bob receives but does not ack yet: the messages are delivered, not settled.
    const bob = person(cluster.url(1), "bob", "phone", { ack: "hold" });
    await Promise.all([ann.loggedIn(), bob.loggedIn()]);
    const before = Array.from({ length: 10 }, (_, i) => `before ${i}`);
    for (const text of before) assert.equal((await ann.dm("bob", text)).ok, true);
    await bob.until("the unacked deliveries", () => bob.messages.length === before.length);

    const victim = (await cluster.status()).workers[1].pid;
    const mark = cluster.lines.length;
    process.kill(victim, "SIGKILL");
    await cluster.waitLine("worker 1 to exit", (l) => l.event === "worker_exited" && l.pid === victim, { since: mark });
    const during = Array.from({ length: 5 }, (_, i) => `during ${i}`);
    for (const text of during) assert.equal((await ann.dm("bob", text)).ok, true);

    // Bob's client reconnects to the respawned worker and logs in again; this time it acks.
    bob.ackMode = "auto";
    await bob.loggedIn(2);
    const everything = [...before, ...during];
    await bob.until("every message after the reconnection", () => everything.every((t) => bob.messages.slice(before.length).some((m) => m.text === t)));
    const second = bob.messages.slice(before.length).map((m) => m.text);
    assert.deepEqual(second, everything, "redelivered in order, none missing");
    await until("the acks to empty the inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);
    disconnectAll(ann, bob);
    await cluster.stop();
  });

  test("with Redis persistence on, stored messages survive a Redis restart; sends during the outage are refused, not lost", async () => {
    const redis = await startRedis({ persistent: true });
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    const texts = Array.from({ length: 5 }, (_, i) => `kept ${i}`);
    for (const text of texts) assert.equal((await ann.dm("bob", text)).ok, true);

    await redis.stop();
    const refused = await ann.dm("bob", "while redis is away");
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "unavailable", JSON.stringify(refused));
    await redis.restart();
    await until("worker 1 to be connected to Redis again", async () => (await fetch(`${cluster.url(1)}/ready`)).ok);

    const bob = person(cluster.url(1), "bob", "phone");
    await bob.loggedIn();
    assert.deepEqual(await bob.texts(texts.length), texts);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(bob.messages.length, texts.length, "the refused message was not stored");
    disconnectAll(ann, bob);
    await cluster.stop();
  });

  test("moderation: messages wait for the filter and are delivered as it hands them back", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--moderation"] });
    const ann = person(cluster.url(0), "ann", "phone");
    const bob = person(cluster.url(1), "bob", "phone");
    await Promise.all([ann.loggedIn(), bob.loggedIn()]);
    const noFilter = await ann.dm("bob", "nobody filters");
    assert.equal(noFilter.ok, false);
    assert.equal(noFilter.error.code, "unavailable");

    const filter = await subscribe(redis.port, "chat_filter_channel");
    const answer = await ann.dm("bob", "darn it");
    assert.deepEqual(answer, { ok: true, id: answer.id, moderation: true });
    await filter.until("the message at the filter", () => filter.messages.chat_filter_channel.length === 1);
    const item = filter.messages.chat_filter_channel[0];
    assert.equal(item.mid, answer.id);
    assert.equal(item.from, "ann");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(bob.messages.length, 0, "nothing is delivered before the filter answers");
    await redisCommand(redis.port, "PUBLISH", "snschat", JSON.stringify({ ...item, text: "d*rn it" }));
    await bob.until("the filtered message", () => bob.messages.length === 1);
    assert.equal(bob.messages[0].text, "d*rn it");
    assert.equal(bob.messages[0].from, "ann");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(bob.messages.length, 1, "stored once although every worker heard the filter");
    filter.close();
    disconnectAll(ann, bob);
    await cluster.stop();
  });
});
