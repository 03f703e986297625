// What an acknowledgement promises (issue 19 point 8, issue 12 point 3): a refusal says "nothing
// was stored" only when that is certain, retries never store twice, and under
// `--durability replicated` a write is acknowledged only once a replica has it.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisCommand, redisNames, startCluster, startRedis, until } from "../support/harness.mjs";
import { startDelayProxy } from "../support/delay-proxy.mjs";
import { person } from "../support/people.mjs";

const API_KEY = "durability-test-key";

async function redisInt(port, ...args) {
  return Number((await redisCommand(port, ...args)).slice(1).trim());
}

function pushRequest(url, body, idempotencyKey) {
  return fetch(`${url}/api/push`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", "idempotency-key": idempotencyKey },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
}

describe("a write Redis answered late", () => {
  after(cleanup);

  test("is answered 'may have been stored', and the retry the answer asks for stores it once", async () => {
    const redis = await startRedis();
    // The next script that stores (it XADDs) once `armed` reaches Redis 3 s late: past the
    // worker's 2 s timeout. Retries go through at once.
    let armed = false;
    const lateOnce = (text) => {
      if (!armed || !text.includes("XADD")) return false;
      armed = false;
      return true;
    };
    const proxy = await startDelayProxy(redis.port, { delayMs: 3000, delayed: lateOnce });
    const cluster = await startCluster({ workers: 1, redisUrl: proxy.url, env: { CHAT_API_KEY: API_KEY } });
    const ann = person(cluster.url(0), "ann", "phone");
    await ann.loggedIn();

    armed = true;
    const late = await ann.dm("bob", "hi", { clientMsgId: "c-1" });
    assert.equal(late.ok, false);
    assert.equal(late.error.code, "unavailable");
    assert.match(late.error.message, /may or may not have been stored/);
    assert.match(late.error.message, /same clientMsgId/);
    assert.doesNotMatch(late.error.message, /nothing was (changed|stored)/);
    // The fault: the script did run, after the answer.
    await until("the late script to store the message", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 1);
    const retry = await ann.dm("bob", "hi", { clientMsgId: "c-1" });
    assert.deepEqual([retry.ok, retry.duplicate], [true, true], JSON.stringify(retry));
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("bob")), 1, "stored once");

    armed = true;
    const answer = await pushRequest(cluster.url(0), { users: ["bob"], category: "remind", data: { n: 1 }, store: true }, "k-1");
    assert.equal(answer.status, 503);
    const refusal = await answer.json();
    assert.match(refusal.error.message, /may or may not have been delivered or stored/);
    assert.match(refusal.error.message, /same Idempotency-Key/);
    await until("the late store script to keep the notification", async () => (await redisInt(redis.port, "XLEN", redisNames.unread("bob"))) === 1);
    const again = await pushRequest(cluster.url(0), { users: ["bob"], category: "remind", data: { n: 1 }, store: true }, "k-1");
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { ok: true, online: 0, stored: 0, duplicates: 1 });
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.unread("bob")), 1, "stored once");

    const bob = person(cluster.url(0), "bob", "phone");
    await bob.texts(1);
    await until("bob's ack", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("bob"))) === 0);
    assert.deepEqual(bob.messages.map((m) => m.text), ["hi"]);
    ann.disconnect();
    bob.disconnect();
    await cluster.stop();
  });
});

describe("--durability replicated", () => {
  let master;
  let replica;
  let replicated;
  let local;
  const inSync = async () => (await redisCommand(replica.port, "INFO", "replication")).includes("master_link_status:up");
  before(async () => {
    master = await startRedis();
    replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
    await until("the replica to sync", inSync);
    const common = { workers: 1, redisUrl: master.url, env: { CHAT_API_KEY: API_KEY } };
    replicated = await startCluster({ ...common, extraArgs: ["--durability", "replicated", "--replica-ack-timeout-ms", "300"] });
    local = await startCluster({ ...common, extraArgs: ["--durability", "local"] });
  });
  after(async () => {
    await replicated?.stop();
    await local?.stop();
    await cleanup();
  });

  test("acknowledges a message only once a replica has it, and says so when none does", async () => {
    const ann = person(replicated.url(0), "ann", "phone");
    await ann.loggedIn();
    const first = await ann.dm("bob", "one", { clientMsgId: "c-1" });
    assert.equal(first.ok, true, JSON.stringify(first));
    assert.equal(await redisInt(replica.port, "XLEN", redisNames.inbox("bob")), 1, "the replica had it when the ack came");

    await replica.stop();
    await until("the master to see its replica gone", async () => (await redisCommand(master.port, "INFO", "replication")).includes("connected_slaves:0"));
    const unconfirmed = await ann.dm("bob", "two", { clientMsgId: "c-2" });
    assert.equal(unconfirmed.ok, false);
    assert.equal(unconfirmed.error.code, "unavailable");
    assert.match(unconfirmed.error.message, /no Redis replica confirmed it within 300 ms/);
    assert.equal(await redisInt(master.port, "XLEN", redisNames.inbox("bob")), 2, "stored on the master all the same");
    const stored = await pushRequest(replicated.url(0), { users: ["bob"], category: "remind", data: { n: 2 }, store: true }, "k-2");
    assert.equal(stored.status, 503);
    assert.match((await stored.json()).error.message, /no Redis replica confirmed it/);

    // Under --durability local the same master acknowledges at once.
    const carl = person(local.url(0), "carl", "phone");
    await carl.loggedIn();
    assert.equal((await carl.dm("bob", "local")).ok, true);

    await replica.restart();
    await until("the replica to sync again", inSync);
    const retry = await ann.dm("bob", "two", { clientMsgId: "c-2" });
    assert.deepEqual([retry.ok, retry.duplicate], [true, true], JSON.stringify(retry));
    assert.equal(await redisInt(replica.port, "XLEN", redisNames.inbox("bob")), 3, "the replica has every message now");
    const retried = await pushRequest(replicated.url(0), { users: ["bob"], category: "remind", data: { n: 2 }, store: true }, "k-2");
    assert.equal(retried.status, 200);
    assert.equal((await retried.json()).duplicates, 1);
    ann.disconnect();
    carl.disconnect();
  });
});
