// A socket that is connected misses nothing published afterwards, even when its worker reaches
// Redis over a slow link: a room's first member on a worker, and a login's user channel, wait
// until Redis has confirmed the subscription (issue 15, point 1).

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRedis, startWorker, member, said, until, cleanup } from "../support/harness.mjs";
import { startDelayProxy } from "../support/delay-proxy.mjs";
import { person } from "../support/people.mjs";

const DELAY_MS = 300;
const ROUNDS = 5;

/** A worker whose Redis bus is connected (`/ready`), so its subscriptions can be confirmed. */
async function readyWorker(redisUrl) {
  const worker = await startWorker({ redisUrl });
  await until(`the worker on port ${worker.port} to be ready`, async () => (await fetch(`${worker.url}/ready`)).ok);
  return worker;
}

describe("subscriptions are confirmed before a socket relies on them", () => {
  let redis;
  after(async () => {
    await cleanup();
  });
  before(async () => {
    redis = await startRedis();
  });

  test("a room's first member on a worker behind a slow link receives what is said right after its join", async () => {
    const proxy = await startDelayProxy(redis.port, { delayMs: DELAY_MS, delayed: "all" });
    const near = await readyWorker(redis.url);
    const far = await readyWorker(proxy.url);
    for (let round = 0; round < ROUNDS; round++) {
      const room = `slow-${round}`;
      const speaker = await member(near.url, room, "ann");
      // A new room on `far` each round: the listener is its first member there. Its join is
      // acknowledged once it is in the room.
      const listener = await member(far.url, room, "bob");
      const text = `said at once ${round}`;
      const ack = await speaker.ack("say", { text });
      assert.equal(ack.ok, true);
      const heard = await listener.next(`"${text}" on the far worker`, said(text), 5000);
      assert.equal(heard.room, room);
      speaker.disconnect();
      listener.disconnect();
    }
  });

  test("a direct message sent right after a login on a worker with a slow subscriber link arrives live", async () => {
    const proxy = await startDelayProxy(redis.port, { delayMs: DELAY_MS, delayed: "subscriber" });
    const near = await readyWorker(redis.url);
    const far = await readyWorker(proxy.url);
    const ann = person(near.url, "ann", "phone");
    await ann.loggedIn();
    for (let round = 0; round < ROUNDS; round++) {
      const user = `bob${round}`;
      // One message waits for the login: once it arrives, the login's inbox catch-up is over,
      // and what is sent next can only come live, through the user's channel.
      assert.equal((await ann.dm(user, `waiting ${round}`)).ok, true);
      const bob = person(far.url, user, "phone");
      await bob.loggedIn();
      await bob.until("the waiting message", () => bob.messages.some((m) => m.text === `waiting ${round}`));
      const text = `right after your login ${round}`;
      const sent = await ann.dm(user, text);
      assert.equal(sent.ok, true, JSON.stringify(sent));
      await bob.until(`"${text}" delivered live`, () => bob.messages.some((m) => m.text === text), 5000);
      bob.disconnect();
    }
  });

  test("when Redis cannot confirm in time, the first member still connects, local delivery works, and it is logged", async () => {
    // Each way slower than the worker waits for a confirmation (1 s).
    const proxy = await startDelayProxy(redis.port, { delayMs: 1500, delayed: "subscriber" });
    const far = await readyWorker(proxy.url);
    const started = Date.now();
    const first = await member(far.url, "unconfirmed", "ann");
    const waited = Date.now() - started;
    assert.ok(waited >= 900, `the first member waited for the confirmation (${waited} ms)`);
    const second = await member(far.url, "unconfirmed", "bob");
    await second.ack("say", { text: "local only" });
    await first.next("the local say", said("local only"), 2000);
    await until("the worker to log the unconfirmed subscription", async () => far.child.stderrTail.includes("did not confirm a subscription in time"));
  });
});
