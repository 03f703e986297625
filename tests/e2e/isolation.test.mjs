// Randomized room isolation across workers: many clients in many rooms, spread over both
// workers; every client must receive every message of its room exactly once, and nothing else;
// histories and recoveries hold nothing of another room.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, member, startCluster, startRedis, until, redisNames } from "../support/harness.mjs";

/** A small deterministic generator (mulberry32), so a failure can be replayed with its seed. */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("room isolation", () => {
  let cluster;
  let redis;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({ workers: 2, redisUrl: redis.url });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  const seed = Number(process.env.ISOLATION_SEED || Date.now() % 100000);
  test(`no message reaches a non-member (seed ${seed})`, async () => {
    const next = random(seed);
    const ROOMS = 8;
    const CLIENTS = 40;
    const MESSAGES_EACH = 3;
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) {
      const room = `iso-${Math.floor(next() * ROOMS)}`;
      const worker = Math.floor(next() * 2);
      const client = await member(cluster.url(worker), room, `u${i}`);
      clients.push({ client, room, name: `u${i}` });
    }
    const rooms = new Set(clients.map((c) => c.room));
    await until("every room's channel to be subscribed", async () => {
      const channels = await redis.channels();
      return [...rooms].every((room) => channels.includes(redisNames.room(room)));
    });
    // Let joins settle so that every expected message is sent after every member connected.
    for (const { client } of clients) client.received.length = 0;

    const sent = new Map([...rooms].map((room) => [room, []]));
    for (let round = 0; round < MESSAGES_EACH; round++) {
      for (const { client, room, name } of clients) {
        const text = `${name}#${round}`;
        const ack = await client.ack("say", { text });
        assert.equal(ack.ok, true);
        sent.get(room).push(text);
      }
    }
    // Messages from different senders may interleave across workers: wait (bounded) until a
    // member has as many messages as its room was sent, then compare exactly.
    const says = (client) => client.received.filter((m) => m.event === "broadcast_say");
    for (const { client, room, name } of clients) {
      const expected = sent.get(room);
      await until(`${name} to hear the ${expected.length} messages of ${room}`, () => says(client).length >= expected.length);
      const got = says(client);
      const foreign = got.filter((m) => m.room !== room);
      assert.deepEqual(foreign, [], `${name} in ${room} received another room's messages`);
      assert.deepEqual(
        got.map((m) => m.data.text).sort(),
        [...expected].sort(),
        `${name} in ${room} must receive each message of its room once`,
      );
    }
    for (const { client } of clients) client.disconnect();
  });

  test(`histories and recoveries hold only their own room (seed ${seed})`, async () => {
    const next = random(seed + 1);
    const ROOMS = 6;
    const clients = [];
    for (let i = 0; i < 24; i++) {
      const room = `mem-${Math.floor(next() * ROOMS)}`;
      const client = await member(cluster.url(Math.floor(next() * 2)), room, `m${i}`, { reconnectionDelay: 100, reconnectionDelayMax: 100 });
      clients.push({ client, room });
    }
    // Every third client's transport drops while the others talk; it recovers, with what it
    // missed of its own room.
    const blips = clients.filter((_, i) => i % 3 === 0);
    const back = blips.map(({ client }) => new Promise((resolve) => client.once("disconnect", () => client.once("connect", resolve))));
    for (const { client } of blips) client.io.engine.close();
    for (const [i, { client }] of clients.entries()) {
      if (i % 3 !== 0) assert.equal((await client.ack("say", { text: `said by m${i}` })).ok, true);
    }
    await Promise.all(back);
    assert.ok(blips.every(({ client }) => client.recovered), "every dropped client recovered");
    // Newcomers, one per room and worker, get histories.
    const rooms = [...new Set(clients.map((c) => c.room))];
    const newcomers = [];
    for (const room of rooms) {
      for (const worker of [0, 1]) newcomers.push({ client: await member(cluster.url(worker), room, `new-${room}-${worker}`), room });
    }
    for (const { client, room } of [...clients, ...newcomers]) {
      const foreign = [...client.history, ...client.received].filter((m) => m.room !== room);
      assert.deepEqual(foreign, [], `a member of ${room} got another room's messages`);
    }
    for (const { client, room } of newcomers) {
      const expected = clients.flatMap((c, i) => (c.room === room && i % 3 !== 0 ? [`said by m${i}`] : []));
      const got = client.history.filter((m) => m.event === "broadcast_say").map((m) => m.data.text);
      assert.deepEqual(got.sort(), expected.sort(), `the history of ${room}`);
    }
    for (const { client } of [...clients, ...newcomers]) client.disconnect();
  });
});
