// What one sender can put in Redis is bounded, and no sender can collide with another
// (issue 19, points 6 and 7): a per-sender share of each inbox, a send rate counted across every
// socket and worker, and retry markers that cannot be forged by choosing ids with separators.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisCommand, redisNames, startCluster, startRedis, until } from "../support/harness.mjs";
import { person } from "../support/people.mjs";

/** Integer reply of a RESP command (`:<n>`). */
async function redisInt(port, ...args) {
  return Number((await redisCommand(port, ...args)).slice(1).trim());
}

describe("what one sender can put in Redis", () => {
  let redis;
  let cluster;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({
      workers: 2,
      redisUrl: redis.url,
      extraArgs: [
        "--inbox-max-messages", "10",
        "--inbox-max-per-sender", "3",
        "--sender-rate-per-sec", "2",
        "--sender-rate-burst", "6",
        "--device-policy", "multi",
        // The per-socket limit out of the way: these tests are about the per-sender ones.
        "--rate-per-sec", "1000",
        "--rate-burst", "1000",
      ],
    });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("one sender cannot fill another user's inbox against everyone else", async () => {
    const mallory = person(cluster.url(0), "mallory", "m");
    const others = ["alice", "bob", "carl"].map((name, i) => person(cluster.url(i % 2), name, "d"));
    await Promise.all([mallory, ...others].map((p) => p.loggedIn()));
    for (let i = 0; i < 3; i++) assert.equal((await mallory.dm("vic", `spam ${i}`)).ok, true);
    const refused = await mallory.dm("vic", "spam 3");
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "inbox_full");
    assert.match(refused.error.message, /3 of your messages/);
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("vic")), 3, "the refused one was not stored");
    for (const other of others) {
      const sent = await other.dm("vic", `hello from ${other.logins[0].userId}`);
      assert.equal(sent.ok, true, `another sender still gets through: ${JSON.stringify(sent)}`);
    }

    // Once vic has read them, mallory's share is free again.
    const vic = person(cluster.url(1), "vic", "phone");
    await vic.texts(6);
    await until("vic's acks to empty the inbox", async () => (await redisInt(redis.port, "XLEN", redisNames.inbox("vic"))) === 0);
    assert.equal(await redisInt(redis.port, "HLEN", redisNames.senders("vic")), 0, "every sender's count went back to zero");
    assert.equal((await mallory.dm("vic", "again")).ok, true);
    for (const p of [mallory, vic, ...others]) p.disconnect();
  });

  test("a sender's rate is counted across its sockets on every worker", async () => {
    const phone = person(cluster.url(0), "eve", "phone");
    const laptop = person(cluster.url(1), "eve", "laptop");
    await Promise.all([phone.loggedIn(), laptop.loggedIn()]);
    const started = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => [phone.dm(`r${i}`, "burst"), laptop.dm(`s${i}`, "burst")]).flat(),
    );
    const seconds = (Date.now() - started) / 1000;
    const accepted = answers.filter((a) => a.ok).length;
    const limited = answers.filter((a) => !a.ok && a.error.code === "rate_limited");
    // The burst of 6, plus what the sustained 2/s refilled while the sends ran.
    assert.ok(accepted >= 6, `the burst passes: ${accepted} accepted`);
    assert.ok(accepted <= 6 + Math.ceil(seconds * 2) + 1, `${accepted} accepted from 20 sends in ${seconds} s over two workers`);
    assert.equal(accepted + limited.length, answers.length, `every refusal is rate_limited: ${JSON.stringify(answers.filter((a) => !a.ok && a.error.code !== "rate_limited"))}`);
    assert.match(limited[0].error.message, /retry in \d+ ms/);
    phone.disconnect();
    laptop.disconnect();
  });

  test("a retry marker cannot be forged by ids that contain the separator", async () => {
    // With one flat key `sent:<from>:<clientMsgId>`, acme sending "bob:1" and acme:bob sending
    // "1" were the same marker: the second message was answered duplicate and never stored.
    const acme = person(cluster.url(0), "acme", "d");
    const acmeBob = person(cluster.url(1), "acme:bob", "d");
    await Promise.all([acme.loggedIn(), acmeBob.loggedIn()]);
    const first = await acme.dm("carol", "from acme", { clientMsgId: "bob:1" });
    const second = await acmeBob.dm("carol", "from acme:bob", { clientMsgId: "1" });
    assert.equal(first.ok, true);
    assert.equal(second.ok, true);
    assert.ok(!second.duplicate, `acme:bob's message is its own: ${JSON.stringify(second)}`);
    assert.notEqual(first.id, second.id);
    assert.equal(await redisInt(redis.port, "XLEN", redisNames.inbox("carol")), 2);
    // A real retry is still recognised.
    const retry = await acmeBob.dm("carol", "from acme:bob", { clientMsgId: "1" });
    assert.deepEqual([retry.ok, retry.duplicate, retry.id], [true, true, second.id]);
    acme.disconnect();
    acmeBob.disconnect();
  });
});
