// Clients that cannot acknowledge (issue 14, point 5): some socket.io libraries (rust_socketio
// 0.6) never answer the server's acks. Their waiting messages must not stall their live ones,
// `chat_ack {ids}` acknowledges by id, and what is in flight to one socket is bounded by
// --delivery-window. Real workers, real Redis, the official JavaScript client that never calls
// its ack callbacks, and python-socketio acknowledging with chat_ack.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisCommand, sleep, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";
import { person } from "../support/people.mjs";
import { pythonPerson } from "../support/python.mjs";

/** Limits out of the way of filling an inbox fast; acks time out only after two minutes, so a
 * stall behind an unacknowledged batch would outlast every wait of these tests. */
const FAST = [
  "--rate-per-sec", "1000", "--rate-burst", "1000",
  "--sender-rate-per-sec", "1000", "--sender-rate-burst", "1000",
  "--inbox-max-per-sender", "1000",
  "--delivery-ack-timeout-ms", "120000",
];

async function redisInt(port, ...args) {
  const reply = await redisCommand(port, ...args);
  return Number(reply.slice(1).trim());
}

/** `count` direct messages from `sender` to `to`, sent together; resolves with their ids. */
async function send(sender, to, count, prefix) {
  const answers = await Promise.all(Array.from({ length: count }, (_, i) => sender.dm(to, `${prefix} ${i}`)));
  assert.ok(answers.every((a) => a.ok), JSON.stringify(answers.find((a) => !a.ok)));
  return answers.map((a) => a.id);
}

describe("clients that cannot acknowledge", () => {
  after(cleanup);

  test("a client that never answers acks gets every waiting message, then live ones at once; chat_ack removes them", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: FAST });
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    const waitingIds = await send(ann, "bob", 120, "waiting");

    const bob = person(cluster.url(1), "bob", "phone", { ack: "hold" });
    assert.deepEqual((await bob.loggedIn()).pending, { chat: 120, notifications: 0 });
    await bob.texts(120);
    assert.ok(bob.chatEvents >= 3, "in batches of --delivery-batch (50)");
    assert.equal(bob.held.length, bob.chatEvents, "every event asked for an ack, none was answered");

    const live = await ann.dm("bob", "live while the batches are unacknowledged");
    assert.equal(live.ok, true);
    await bob.until("the live message", () => bob.messages.some((m) => m.id === live.id));
    assert.deepEqual(bob.messages.map((m) => m.id), [...waitingIds, live.id], "in order, once each");

    const refused = [
      [{ ids: ["not-an-id"] }, "invalid_payload"],
      [{ ids: [] }, "invalid_payload"],
      [{ nope: 1 }, "invalid_payload"],
      ["ids", "invalid_payload"],
    ];
    for (const [payload, code] of refused) {
      const answer = await bob.ack_("chat_ack", payload);
      assert.equal(answer.ok, false, JSON.stringify(payload));
      assert.equal(answer.error.code, code, JSON.stringify(answer));
    }
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 121, "refused acks removed nothing");
    // Someone else's ids name only entries of the acknowledger's own inbox: ann's ack of
    // bob's messages removes nothing from bob's.
    assert.deepEqual(await ann.ack_("chat_ack", { ids: waitingIds.slice(0, 5) }), { ok: true, removed: 0 });
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 121);

    const ids = bob.messages.map((m) => m.id);
    assert.deepEqual(await bob.ack_("chat_ack", { ids }), { ok: true, removed: 121 });
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 0);
    assert.deepEqual(await bob.ack_("chat_ack", { ids: ids.slice(0, 3) }), { ok: true, removed: 0 }, "acking twice is harmless");
    bob.disconnect();

    const again = person(cluster.url(0), "bob", "phone", { ack: "hold" });
    assert.deepEqual((await again.loggedIn()).pending, { chat: 0, notifications: 0 }, "nothing comes again at the next login");
    const stranger = person(cluster.url(0), undefined, "d");
    stranger.off("connect");
    const notLoggedIn = await stranger.timeout(5000).emitWithAck("chat_ack", { ids });
    assert.equal(notLoggedIn.error.code, "not_logged_in");
    for (const c of [ann, again, stranger]) c.disconnect();
    await cluster.stop();
  });

  test("--delivery-window bounds the messages in flight; chat_ack frees it and the rest follows", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 1, redisUrl: redis.url, extraArgs: [...FAST, "--delivery-window", "60"] });
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();
    await send(ann, "carol", 130, "waiting");

    const carol = person(cluster.url(0), "carol", "phone", { ack: "hold" });
    await carol.texts(60);
    await sleep(500);
    assert.equal(carol.messages.length, 60, "no more than the window in flight");
    const live = await ann.dm("carol", "live behind a full window");
    assert.equal(live.ok, true);
    await sleep(300);
    assert.equal(carol.messages.length, 60, "a full window holds live messages too (in the inbox, in order)");

    const first = carol.messages.map((m) => m.id);
    assert.deepEqual(await carol.ack_("chat_ack", { ids: first }), { ok: true, removed: 60 });
    await carol.texts(120);
    await sleep(300);
    assert.equal(carol.messages.length, 120, "acknowledging 60 made room for 60");
    assert.deepEqual(await carol.ack_("chat_ack", { ids: carol.messages.slice(60).map((m) => m.id) }), { ok: true, removed: 60 });
    await carol.until("the last waiting ones and the live one", () => carol.messages.length === 131);
    assert.equal(carol.messages.at(-1).id, live.id, "the live message after every older one");
    assert.equal(new Set(carol.messages.map((m) => m.id)).size, 131, "nothing twice");
    for (const c of [ann, carol]) c.disconnect();
    await cluster.stop();
  });

  for (const transport of ["websocket", "polling"]) {
    test(`python-socketio acknowledges with chat_ack over ${transport}`, async () => {
      const redis = await startRedis();
      const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: FAST });
      const ann = person(cluster.url(0), "ann", "phone");
      await ann.loggedIn();
      const waiting = await send(ann, "dave", 3, "waiting");

      const dave = pythonPerson(cluster.url(1), "dave", "py", { transport });
      await dave.until("the login", () => dave.of("login").length === 1);
      assert.equal(dave.of("login")[0].ack.ok, true, JSON.stringify(dave.of("login")));
      await dave.until("chat_ack answers for the waiting messages", () => dave.of("chat_ack").flatMap((l) => l.ids).length === 3);
      assert.deepEqual(dave.of("chat_ack").flatMap((l) => l.ids), waiting);
      for (const line of dave.of("chat_ack")) assert.equal(line.answer.ok, true, JSON.stringify(line));
      const live = await ann.dm("dave", "live");
      await dave.until("the live message's chat_ack", () => dave.of("chat_ack").some((l) => l.ids.includes(live.id)));
      await until("dave's inbox to be empty", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("dave"))) === 0);
      dave.stop();
      ann.disconnect();
      await cluster.stop();
    });
  }
});
