// Rooms across workers with the official socket.io client: delivery, isolation, order, bad input.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chatClient, cleanup, member, said, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";

describe("rooms across workers", () => {
  let redis;
  let cluster;
  before(async () => {
    redis = await startRedis();
    // The order test sends a burst of 200, far above the default rate limit.
    cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--rate-burst", "1000"] });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("members on different workers see each other's join and say; another room sees nothing", async () => {
    const ann = await member(cluster.url(0), "lobby", "ann");
    const bob = await member(cluster.url(1), "lobby", "bob");
    const eve = await member(cluster.url(1), "kitchen", "eve");
    await until("both workers to subscribe to lobby", async () => {
      const status = await cluster.status();
      return status.workers.every((w) => w.rooms >= 1) && (await redis.channels()).includes(redisNames.room("lobby"));
    });

    const bobJoined = await ann.next("bob's join", (m) => m.event === "join" && m.data.username === "bob");
    assert.equal(bobJoined.room, "lobby");

    const ack = await ann.ack("say", { text: "hello from worker 1" });
    assert.equal(ack.ok, true);
    assert.equal(typeof ack.id, "string");
    const heard = await bob.next("ann's say on the other worker", said("hello from worker 1"));
    assert.deepEqual(heard.data, { username: "ann", text: "hello from worker 1" });
    assert.equal(heard.id, ack.id);
    assert.equal(typeof heard.ts, "number");

    await bob.ack("say", { text: "hello from worker 2" });
    await ann.next("bob's say", said("hello from worker 2"));

    // Barrier: eve's own message went through the same worker after the lobby's; anything
    // of the lobby addressed to her would have arrived first.
    await eve.ack("say", { text: "kitchen barrier" });
    await eve.next("eve's own message", said("kitchen barrier"));
    const foreign = eve.received.filter((m) => m.room !== "kitchen");
    assert.deepEqual(foreign, [], "a client received messages of a room it is not in");

    bob.disconnect();
    const quit = await ann.next("bob's quit", (m) => m.event === "broadcast_quit");
    assert.equal(quit.data.username, "bob");
    for (const c of [ann, eve]) c.disconnect();
  });

  test("one sender's 200 messages arrive in order on the other worker", async () => {
    const sender = await member(cluster.url(0), "ordered", "sender");
    const receiver = await member(cluster.url(1), "ordered", "receiver");
    await until("the receiver's worker to subscribe", async () => (await redis.channels()).includes(redisNames.room("ordered")));
    await until("the sender's worker to count the room", async () => (await cluster.status()).workers[0].rooms >= 1);
    for (let i = 0; i < 200; i++) sender.emit("say", { text: `m${i}` });
    await receiver.next("the last message", said("m199"));
    const texts = receiver.received.filter((m) => m.event === "broadcast_say").map((m) => m.data.text);
    assert.deepEqual(texts, Array.from({ length: 200 }, (_, i) => `m${i}`));
    sender.disconnect();
    receiver.disconnect();
  });

  test("bad input gets clear errors and the worker keeps serving", async () => {
    const refused = chatClient(cluster.url(0), { roomid: "no spaces allowed", reconnection: false });
    const error = await new Promise((resolve) => refused.once("connect_error", resolve));
    assert.match(error.message, /invalid room id/);
    refused.close();

    const roomless = chatClient(cluster.url(0));
    await roomless.connected_();
    assert.equal((await roomless.ack("join", { username: "x" })).error.code, "no_room");
    roomless.disconnect();

    const client = chatClient(cluster.url(0), { roomid: "errors" });
    await client.connected_();
    assert.equal((await client.ack("say", { text: "too early" })).error.code, "not_joined");
    for (const [payload, code] of [
      [42, "invalid_payload"],
      [null, "invalid_payload"],
      [[1, 2], "invalid_payload"],
      [{ name: "missing username" }, "invalid_payload"],
      [{ username: "" }, "invalid_username"],
      [{ username: "x".repeat(33) }, "invalid_username"],
    ]) {
      const ack = await client.ack("join", payload);
      assert.equal(ack.ok, false);
      assert.equal(ack.error.code, code, `join ${JSON.stringify(payload)}`);
      assert.equal(typeof ack.error.message, "string");
    }
    assert.equal((await client.ack("join", { username: "valid" })).ok, true);
    for (const [payload, code] of [
      [{ text: "" }, "invalid_text"],
      [{ text: "x".repeat(2001) }, "invalid_text"],
      [{ text: 12 }, "invalid_payload"],
      [[], "invalid_payload"],
    ]) {
      assert.equal((await client.ack("say", payload)).error.code, code, `say ${JSON.stringify(payload)}`);
    }
    const ok = await client.ack("say", { text: "still serving" });
    assert.equal(ok.ok, true);
    await client.next("the valid message", said("still serving"));
    client.disconnect();
  });

  test("/status counts connections per worker", async () => {
    // The earlier tests' clients have all disconnected; wait until the workers reported it.
    await until("earlier clients to be counted gone", async () => (await cluster.status()).total_connections === 0);
    const baseline = 0;
    const clients = [
      await member(cluster.url(0), "counted", "a"),
      await member(cluster.url(1), "counted", "b"),
      await member(cluster.url(1), "counted", "c"),
    ];
    await until("/status to count three more connections", async () => (await cluster.status()).total_connections === baseline + 3, {
      everyMs: 100,
    });
    const status = await until("/status to count one connection on worker 0 and two on worker 1", async () => {
      const s = await cluster.status();
      return s.workers[0].connections === 1 && s.workers[1].connections === 2 && s;
    }, { everyMs: 100 });
    assert.deepEqual(
      status.workers.map((w) => [w.id, w.port, w.state, w.restarts]),
      cluster.ports.map((port, id) => [id, port, "ready", 0]),
      "workers listed in port order, ready, never restarted",
    );
    for (const w of status.workers) {
      assert.equal(typeof w.pid, "number");
      assert.ok(w.rooms >= 1, `worker ${w.id} counts the room "counted": ${JSON.stringify(w)}`);
      assert.ok(w.up_since !== undefined && w.up_since !== null, `worker ${w.id} has up_since`);
    }
    for (const c of clients) c.disconnect();
    await until("/status to count them gone", async () => (await cluster.status()).total_connections === baseline, { everyMs: 100 });
  });
});
