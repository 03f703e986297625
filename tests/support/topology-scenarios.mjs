// What every Redis topology must carry, written once and run by the Redis Cluster and Sentinel
// test files (`e2e/redis-cluster.test.mjs`, `e2e/sentinel.test.mjs`) against supervisors of real
// workers:
// - functional scenarios across two workers: room chat, direct messages (stored and live),
//   device kick-out, the unread store with mark-read, the push API. Each takes a `redis`
//   accessor: `cmd(...args)` runs one command where the key lives (redis-cli -c on a Cluster,
//   the current master on Sentinel) and resolves with redis-cli's text output;
//   `publish(channel, message)` PUBLISHes a classic message;
// - `failoverRecovery`: occupied rooms and logged-in users on both workers and a same-worker room
//   ticking through a failover the caller brings about, measured from the promotion;
// - `dmsAcrossFailover` / `durabilityTests`: a lagging replica, direct messages, the master
//   SIGKILLed, and every acknowledged message counted at the recipient's login.

import assert from "node:assert/strict";
import { member, redisNames, said, until } from "./harness.mjs";
import { person } from "./people.mjs";
import { redisCli } from "./redis-topologies.mjs";

export const API_KEY = "topology-test-key";

export function api(url, path, body) {
  return fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
}

async function apiJson(url, path, body) {
  const response = await api(url, path, body);
  return { status: response.status, body: await response.json() };
}

const xlen = async (redis, key) => Number(await redis.cmd("XLEN", key));

/** Room chat crosses two workers both ways; every member gets the message with the sender's id. */
export async function roomChatAcrossWorkers(cluster, room) {
  const [a1, a2, b1] = [
    await member(cluster.url(0), room, "ann"),
    await member(cluster.url(0), room, "amy"),
    await member(cluster.url(1), room, "bob"),
  ];
  try {
    const fromA = await a1.ack("say", { text: `from worker 0 in ${room}` });
    assert.equal(fromA.ok, true, JSON.stringify(fromA));
    for (const client of [a2, b1]) assert.equal((await client.next("worker 0's message", said(`from worker 0 in ${room}`))).id, fromA.id);
    const fromB = await b1.ack("say", { text: `from worker 1 in ${room}` });
    assert.equal(fromB.ok, true, JSON.stringify(fromB));
    for (const client of [a1, a2]) assert.equal((await client.next("worker 1's message", said(`from worker 1 in ${room}`))).id, fromB.id);
  } finally {
    for (const client of [a1, a2, b1]) client.disconnect();
  }
}

/**
 * Direct messages: stored for an offline user (in its inbox stream, where the key lives) and
 * delivered at its login on the other worker in order with the senders' ids, removed by its
 * acks; then live to the user online on the other worker; a retried clientMsgId stores nothing.
 */
export async function directMessages(cluster, redis, { sender, recipient }) {
  const ann = person(cluster.url(0), sender, "phone");
  let bob;
  try {
    await ann.loggedIn();
    const texts = ["one", "two", "three"].map((t) => `${t} to ${recipient}`);
    const ids = [];
    for (const text of texts) {
      const answer = await ann.dm(recipient, text);
      assert.equal(answer.ok, true, JSON.stringify(answer));
      ids.push(answer.id);
    }
    assert.equal(await xlen(redis, redisNames.inbox(recipient)), 3, "stored in the recipient's inbox");
    bob = person(cluster.url(1), recipient, "laptop");
    assert.deepEqual((await bob.loggedIn()).pending, { chat: 3, notifications: 0 });
    assert.deepEqual(await bob.texts(3), texts);
    assert.deepEqual(bob.messages.map((m) => m.id), ids);
    await until("the acks to empty the inbox", async () => (await xlen(redis, redisNames.inbox(recipient))) === 0);

    const live = await ann.dm(recipient, "live", { clientMsgId: "live-1" });
    assert.equal(live.ok, true, JSON.stringify(live));
    await bob.until("the live message", () => bob.messages.some((m) => m.id === live.id));
    assert.deepEqual(await ann.dm(recipient, "live", { clientMsgId: "live-1" }), { ok: true, id: live.id, duplicate: true });
    await until("the live message's ack", async () => (await xlen(redis, redisNames.inbox(recipient))) === 0);
    assert.equal(bob.messages.length, 4);
  } finally {
    ann.disconnect();
    bob?.disconnect();
  }
}

/** `--device-policy single`: a login on worker 1 logs the device on worker 0 out, with notice. */
export async function deviceKickOut(cluster, user) {
  const phone = person(cluster.url(0), user, "phone", { reconnection: false });
  let laptop;
  try {
    await phone.loggedIn();
    laptop = person(cluster.url(1), user, "laptop", { reconnection: false });
    await laptop.loggedIn();
    await phone.until("the logout notice and the disconnect", () => phone.logouts.length === 1 && !phone.connected);
    assert.deepEqual(phone.logouts[0], { reason: "logged_in_elsewhere", deviceId: "laptop" });
    assert.ok(laptop.connected, "the newer login stays");
  } finally {
    phone.disconnect();
    laptop?.disconnect();
  }
}

/** Stored pushes wait in the unread store, come at login, are counted, and go with mark_read. */
export async function unreadAndMarkRead(cluster, redis, user) {
  const first = await apiJson(cluster.url(0), "/api/push", { users: [user], category: "mailbox", data: { n: 1 }, store: true });
  assert.deepEqual(first, { status: 200, body: { ok: true, online: 0, stored: 1 } });
  const second = await apiJson(cluster.url(1), "/api/push", { users: [user], category: "system", data: { n: 2 }, store: true });
  assert.deepEqual(second, { status: 200, body: { ok: true, online: 0, stored: 1 } });
  assert.equal(await xlen(redis, redisNames.unread(user)), 2, "kept in the user's unread store");
  const carol = person(cluster.url(1), user, "phone");
  try {
    assert.deepEqual((await carol.loggedIn()).pending, { chat: 0, notifications: 2 });
    await carol.until("push_message", () => carol.of("push_message").length === 1);
    const grouped = carol.of("push_message")[0];
    const ids = [grouped.mailbox[0].id, grouped.system[0].id];
    const count = await carol.ack_("unread_count");
    assert.equal(count.count, 2, JSON.stringify(count));
    assert.deepEqual(await carol.ack_("mark_read", { ids }), { ok: true, removed: 2 });
    assert.equal((await carol.ack_("unread_count")).count, 0);
    assert.equal(await xlen(redis, redisNames.unread(user)), 0);
  } finally {
    carol.disconnect();
  }
}

/**
 * The push API: to a user online on the other worker, to a room and to everyone (broadcast),
 * and the old `notification` channel (classic PUBLISH, handled by one worker).
 */
export async function pushApi(cluster, redis, { user, room }) {
  const dora = person(cluster.url(1), user, "phone");
  const inRoom = await member(cluster.url(0), room, "ann");
  try {
    await dora.loggedIn();
    const pushed = await apiJson(cluster.url(0), "/api/push", { users: [user], category: "remind", data: { post: 7 } });
    assert.deepEqual(pushed, { status: 200, body: { ok: true, online: 1, stored: 0 } });
    await dora.until("the pushed notification", () => dora.of("notification").length === 1);
    assert.deepEqual(dora.of("notification")[0].data, { post: 7 });

    const roomNotes = [];
    inRoom.on("notification", (n) => roomNotes.push(n));
    const toRoom = await apiJson(cluster.url(1), "/api/broadcast", { room, category: "announcement", data: { text: "room only" } });
    assert.equal(toRoom.status, 200, JSON.stringify(toRoom.body));
    await until("the room announcement", () => roomNotes.length === 1);
    const toAll = await apiJson(cluster.url(1), "/api/broadcast", { category: "announcement", data: { text: "everyone" } });
    assert.equal(toAll.status, 200, JSON.stringify(toAll.body));
    await until("the announcement to everyone", () => roomNotes.length === 2 && dora.of("notification").length === 2);

    await redis.publish("notification", JSON.stringify({ toWho: [user], title: "old channel" }));
    await dora.until("the old channel's notification", () => dora.of("notification").some((n) => n.data?.title === "old channel"));
  } finally {
    dora.disconnect();
    inRoom.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// Failover

/**
 * Resolves once the master on `masterPort` has a replica in sync: a write of a key tagged `tag`
 * (so it lives on that master in a Cluster) is confirmed by `WAIT 1`. A failover test starts
 * from there: a replica still resyncing after the previous test would take over without the
 * data the test relies on.
 */
export async function untilReplicated(masterPort, tag, timeoutMs = 30_000) {
  await until(
    `a replica of ${masterPort} in sync`,
    async () => {
      const reply = await redisCli(masterPort, [], { input: `SET ${tag}:sync-probe 1\nWAIT 1 500\n`, timeoutMs: 3000 });
      return reply.split("\n")[1] === "1";
    },
    { timeoutMs, everyMs: 200 },
  );
}

/** Loosened per-sender limits for failover tests, which send more than a person would. */
export const BUSY_SENDER_ARGS = ["--sender-rate-per-sec", "1000", "--sender-rate-burst", "1000", "--rate-per-sec", "1000", "--rate-burst", "1000"];

/** Resolves with the time (Date.now()) at which `isMaster()` first holds, polling every 20 ms. */
export function watchPromotion(isMaster, timeoutMs = 30_000) {
  return until(
    "the replica to say it is master",
    async () => ((await isMaster().catch(() => false)) ? Date.now() : 0),
    { timeoutMs, everyMs: 20 },
  );
}

/**
 * Two members on worker 0 in `room` say something every `everyMs` until `stop()`; `stop()`
 * resolves with every tick `{ n, sentAt, acked, heardAt }` once the last ones had time to arrive.
 * Same-worker delivery needs no Redis, so it must go on through any Redis failure.
 */
export async function localTicker(cluster, room, everyMs = 100) {
  const speaker = await member(cluster.url(0), room, "ticker");
  const listener = await member(cluster.url(0), room, "listener");
  const ticks = [];
  listener.on("message", (m) => {
    const tick = m.event === "broadcast_say" ? ticks[Number(m.data.text.split(" ")[1])] : undefined;
    if (tick && tick.heardAt === undefined) tick.heardAt = Date.now();
  });
  let running = true;
  const loop = (async () => {
    for (let n = 0; running; n++) {
      const tick = { n, sentAt: Date.now() };
      ticks.push(tick);
      speaker
        .ack("say", { text: `tick ${n}` }, 5000)
        .then((ack) => (tick.acked = ack?.ok === true), () => (tick.acked = false));
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    ticks,
    async stop() {
      running = false;
      await loop;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      speaker.disconnect();
      listener.disconnect();
      return ticks;
    },
  };
}

/**
 * Members of `rooms` on both workers and logged-in `users` (alternating workers); resolves once
 * every room crosses workers and every user receives a direct message live. `probe()` measures
 * the same again; `close()` disconnects everyone.
 */
export async function occupy(cluster, { rooms, users }) {
  const members = [];
  for (const room of rooms) {
    members.push({ room, on: [await member(cluster.url(0), room, `${room}-0`), await member(cluster.url(1), room, `${room}-1`)] });
  }
  const people = [];
  for (const [i, user] of users.entries()) {
    const p = person(cluster.url(i % 2), user, "phone");
    await p.loggedIn();
    people.push(p);
  }
  const senders = [person(cluster.url(0), "sender-0", "phone"), person(cluster.url(1), "sender-1", "phone")];
  await Promise.all(senders.map((s) => s.loggedIn()));
  let round = 0;

  /** One try: says in every room from both sides and DMs every user (from the other worker); true if all arrived within `waitMs`. */
  async function tryOnce(waitMs) {
    round += 1;
    const said_ = [];
    for (const { room, on } of members) {
      for (const [side, client] of on.entries()) {
        const text = `probe ${round} ${room} from ${side}`;
        const ack = await client.ack("say", { text }, 5000).catch(() => null);
        if (!ack?.ok) return false;
        said_.push(on[1 - side].next(text, said(text), waitMs).then(() => true, () => false));
      }
    }
    const sent = [];
    for (const [i, p] of people.entries()) {
      const answer = await senders[1 - (i % 2)].dm(users[i], `probe ${round}`, {}, 5000).catch(() => null);
      if (!answer?.ok) return false;
      sent.push(p.until("the probe", () => p.messages.some((m) => m.id === answer.id), waitMs).then(() => true, () => false));
    }
    return (await Promise.all([...said_, ...sent])).every(Boolean);
  }

  return {
    members,
    people,
    /** Resolves once one full probe round arrives everywhere (each try waits `waitMs`). */
    async probe(what, { timeoutMs = 20_000, waitMs = 500 } = {}) {
      await until(what, () => tryOnce(waitMs), { timeoutMs, everyMs: 0 });
      return Date.now();
    },
    close() {
      for (const { on } of members) for (const client of on) client.disconnect();
      for (const p of [...people, ...senders]) p.disconnect();
    },
  };
}

/**
 * Polls every worker's /ready every 20 ms from now on: `notReadySince` is when a worker first
 * answered anything but 200, `readyAgainAt(after)` resolves with the first time at or after
 * `after` from which every worker answered 200 (and still does when it resolves).
 */
export function readyWatcher(cluster) {
  const samples = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const statuses = await Promise.all(
        cluster.ports.map((p) => fetch(`http://127.0.0.1:${p}/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status, () => 0)),
      );
      samples.push({ at: Date.now(), ok: statuses.every((s) => s === 200) });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    get notReadySince() {
      return samples.find((s) => !s.ok)?.at;
    },
    async readyAgainAt(after, timeoutMs = 20_000) {
      await until("every worker's /ready to answer 200", () => samples.at(-1)?.at >= after && samples.at(-1).ok, { timeoutMs, everyMs: 20 });
      // The start of the run of 200s that the last sample ends.
      let i = samples.length - 1;
      while (i > 0 && samples[i - 1].ok && samples[i - 1].at >= after) i -= 1;
      return samples[i].at;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/**
 * Resolves with Date.now() once every channel in `expected` (name → subscriber count) has that
 * many subscribers where it lives now. `counter()` is called once per check and resolves with
 * `numsub(channel)`: PUBSUB SHARDNUMSUB on the node that serves the channel at that time.
 */
export async function untilSubscribed(counter, expected, what, timeoutMs = 20_000) {
  let missing;
  try {
    return await until(
      what,
      async () => {
        const numsub = await counter();
        const short = [];
        for (const [channel, count] of Object.entries(expected)) {
          const actual = await numsub(channel);
          if (actual !== count) short.push(`${channel}: ${actual} of ${count}`);
        }
        missing = short;
        return short.length === 0 ? Date.now() : 0;
      },
      { timeoutMs, everyMs: 50 },
    );
  } catch (err) {
    throw new Error(`${err.message}; still missing: ${missing?.join(", ")}`);
  }
}

/** Within this of the promotion, every worker is back (issue 12 point 4). */
export const RECOVERY_BOUND_MS = 10_000;

/**
 * A failover under two workers that have `rooms` occupied on both and `users` logged in, with a
 * same-worker room ticking every 100 ms throughout. `failover()` makes it happen (confirming
 * the fault) and resolves with `{ startedAt, promotedAt }`; `counter` is as for
 * `untilSubscribed`; `inSync()`, if given, resolves once the master to fail has a replica in
 * sync (`untilReplicated`). Checks that within RECOVERY_BOUND_MS of the promotion every worker
 * answers /ready 200, every topic is subscribed where it lives now, and every room and user is
 * reached across workers; and that every same-worker tick was acknowledged and heard. Resolves with
 * when each happened: `{ promotedAt, readyAt, subscribedAt, reachedAt }`.
 */
export async function failoverRecovery(t, start, { rooms, users, counter, failover, inSync }) {
  const expected = Object.fromEntries([...rooms.map((r) => [redisNames.room(r), 2]), ...users.map((u) => [redisNames.user(u), 1])]);
  // Acknowledgements are not what this is about (`dmsAcrossFailover` is): the promoted master
  // has no replica until the old one is back, which `replicated` would refuse.
  const workers = await start(["--durability", "local", ...BUSY_SENDER_ARGS]);
  let occupied;
  let ticker;
  let ready;
  try {
    occupied = await occupy(workers, { rooms, users });
    await occupied.probe("every room and user reached before the failover");
    await untilSubscribed(counter, expected, "every topic subscribed before the failover");
    await inSync?.();
    ticker = await localTicker(workers, "ticking");
    await until("the same-worker room to tick", () => ticker.ticks.filter((tick) => tick.heardAt !== undefined).length >= 3);
    ready = readyWatcher(workers);

    const { startedAt, promotedAt } = await failover();
    const readyAt = await ready.readyAgainAt(promotedAt);
    const subscribedAt = await untilSubscribed(counter, expected, "every topic subscribed where it lives after the failover");
    const reachedAt = await occupied.probe("every room and user reached after the failover");
    const ticks = await ticker.stop();

    const since = (at) => Math.max(0, at - promotedAt);
    t.diagnostic(
      `promotion ${promotedAt - startedAt} ms after the failover began; after it: /ready 200 at +${since(readyAt)} ms ` +
        `(a 503 seen: ${ready.notReadySince !== undefined}), every topic subscribed at +${since(subscribedAt)} ms, ` +
        `every room and user reached at +${since(reachedAt)} ms`,
    );
    for (const [what, at] of [["/ready 200", readyAt], ["every topic subscribed", subscribedAt], ["every room and user reached", reachedAt]]) {
      assert.ok(since(at) <= RECOVERY_BOUND_MS, `${what} ${since(at)} ms after the promotion`);
    }
    const missed = ticks.filter((tick) => !tick.acked || tick.heardAt === undefined);
    assert.deepEqual(missed, [], "every same-worker tick acknowledged and heard");
    // The ticker's own timer may be late on a loaded machine, but it must have kept ticking
    // from before the fault until after the promotion.
    const widestGap = Math.max(...ticks.slice(1).map((tick, i) => tick.sentAt - ticks[i].sentAt));
    assert.ok(
      ticks[0].sentAt < startedAt && ticks.at(-1).sentAt > promotedAt && widestGap < 1000,
      `the ticks spanned the failover: ${ticks.length} ticks from ${ticks[0].sentAt - startedAt} ms after its start ` +
        `to ${ticks.at(-1).sentAt - promotedAt} ms after the promotion, at most ${widestGap} ms apart`,
    );
    const slowest = Math.max(...ticks.map((tick) => tick.heardAt - tick.sentAt));
    t.diagnostic(`same-worker room: ${ticks.length} ticks, one every 100 ms over the failover, every one heard; slowest ${slowest} ms`);
    return { promotedAt, readyAt, subscribedAt, reachedAt };
  } finally {
    await ticker?.stop();
    await ready?.stop();
    occupied?.close();
    await workers.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Acknowledged direct messages across a failover

/** How long the replica is held back: long enough to send during the lag and kill the master
 * before it wakes. */
const LAG_MS = 5000;
/** Replica confirmation wait of the durability tests' workers. */
export const REPLICA_ACK_TIMEOUT_MS = 250;

/**
 * Direct messages to an offline `recipient` from two senders (one per worker) while the replica
 * of the recipient's master is made to lag, then that master SIGKILLed, its replica promoted and
 * the old master restarted as a replica. Messages refused with `unavailable` are retried with
 * their clientMsgId after the failover, as the refusal asks. Then the recipient logs in and
 * receives its inbox. Resolves with `{ acked, delivered, lost, refused }` (ids; `lost`: acked but
 * not delivered) for the caller to judge by durability.
 *
 * `topo`: `masterOfKey(key)`, `replicaOf(masterPort)`, `lag(replicaPort, ms)` (resolves with
 * `{ awake }`), `kill(port)`, `waitForPromotion(oldMasterPort)` (resolves with the new master's
 * port), `restart(port)`, `cli(port, ...args)`.
 */
export async function dmsAcrossFailover(t, cluster, topo, { recipient, durability }) {
  const inbox = redisNames.inbox(recipient);
  const master = await topo.masterOfKey(inbox);
  await untilReplicated(master, redisNames.user(recipient));
  const replica = await topo.replicaOf(master);
  const senders = [person(cluster.url(0), `${recipient}-friend-0`, "phone"), person(cluster.url(1), `${recipient}-friend-1`, "phone")];
  let reader;
  try {
    await Promise.all(senders.map((s) => s.loggedIn()));
    const acked = [];
    const refused = [];
    const send = async (sender, text) => {
      const clientMsgId = text.replace(/[^A-Za-z0-9]+/g, "-");
      const answer = await sender.dm(recipient, text, { clientMsgId });
      if (answer.ok) acked.push({ id: answer.id, text });
      else {
        assert.equal(answer.error?.code, "unavailable", JSON.stringify(answer));
        refused.push({ sender, text, clientMsgId, answer });
      }
    };
    const round = (label, count) =>
      Promise.all(
        senders.map(async (sender, s) => {
          for (let i = 0; i < count; i++) await send(sender, `${label} ${s}.${i}`);
        }),
      );

    await round("before the lag", 2);
    assert.equal(refused.length, 0, `every message before the lag acknowledged: ${JSON.stringify(refused.map((r) => r.answer))}`);
    const lag = await topo.lag(replica, LAG_MS);
    await round("during the lag", 3);
    const onMaster = Number(await topo.cli(master, "XLEN", inbox));
    // The fault: the master holds every message, the replica is still asleep when the master dies.
    assert.equal(onMaster, 10, "the master stored all 10 messages");
    await assert.rejects(redisCli(replica, ["PING"], { timeoutMs: 200 }), /no answer/, "the replica still lags when the master is killed");
    await topo.kill(master);
    await assert.rejects(topo.cli(master, "PING"), "the master is dead");
    const promoted = await topo.waitForPromotion(master);
    assert.equal(promoted, replica, "the lagging replica took over");
    await lag.awake;

    if (durability === "replicated" && refused.length > 0) {
      // The promoted master has no replica yet: a retry is refused again, honestly.
      const early = refused[0];
      const again = await early.sender.dm(recipient, early.text, { clientMsgId: early.clientMsgId });
      assert.equal(again.error?.code, "unavailable", `no replica, no acknowledgement: ${JSON.stringify(again)}`);
    }
    await topo.restart(master);
    // The retries promise nothing until the old master, now a replica, has caught up.
    if (durability === "replicated") await untilReplicated(promoted, redisNames.user(recipient));
    const retries = refused.splice(0);
    for (const { sender, text, clientMsgId } of retries) {
      const answer = await sender.dm(recipient, text, { clientMsgId });
      assert.equal(answer.ok, true, `the retry after the failover: ${JSON.stringify(answer)}`);
      acked.push({ id: answer.id, text, retried: true });
    }

    reader = person(cluster.url(1), recipient, "phone");
    const { pending } = await reader.loggedIn();
    await reader.until(`the ${pending.chat} waiting messages`, () => reader.messages.length >= pending.chat);
    const delivered = reader.messages.map((m) => m.id);
    const lost = acked.filter((a) => !delivered.includes(a.id));
    t.diagnostic(
      `--durability ${durability}: ${acked.length - retries.length} acknowledged at once, ${retries.length} refused (unavailable) and acknowledged on retry after the failover; ` +
        `${delivered.length} delivered after the failover; ${lost.length} acknowledged but lost: ${JSON.stringify(lost.map((l) => l.text))}`,
    );
    return { acked, delivered, lost, retried: retries.length };
  } finally {
    for (const s of senders) s.disconnect();
    reader?.disconnect();
  }
}

/** Workers for `dmsAcrossFailover` under `durability`. */
export function durabilityArgs(durability) {
  return ["--durability", durability, "--replica-ack-timeout-ms", String(REPLICA_ACK_TIMEOUT_MS), ...BUSY_SENDER_ARGS];
}

/** The two durability tests of a topology file: nothing acknowledged lost under `replicated`, a
 * loss shown under `local`. `start(args)` starts two workers on the topology. */
export function durabilityTests(test, start, topo) {
  test("--durability replicated: every acknowledged direct message is delivered after a failover onto a lagging replica", async (t) => {
    const workers = await start(durabilityArgs("replicated"));
    try {
      const { acked, lost, retried } = await dmsAcrossFailover(t, workers, topo, { recipient: "rita", durability: "replicated" });
      assert.deepEqual(lost, [], "no acknowledged message lost");
      assert.ok(retried > 0, "sends during the lag were refused, not acknowledged");
      assert.equal(acked.length, 10, "every message acknowledged, at once or on retry");
    } finally {
      await workers.stop();
    }
  });

  test("--durability local: messages acknowledged while the replica lagged are lost with the master", async (t) => {
    const workers = await start(durabilityArgs("local"));
    try {
      const { acked, lost, retried } = await dmsAcrossFailover(t, workers, topo, { recipient: "lars", durability: "local" });
      assert.equal(retried, 0, "every send acknowledged at once");
      assert.equal(acked.length, 10);
      assert.ok(lost.length > 0, "some acknowledged messages are lost: the window --durability replicated closes");
      assert.ok(lost.every((l) => l.text.startsWith("during the lag")), `only those of the lag: ${JSON.stringify(lost)}`);
    } finally {
      await workers.stop();
    }
  });
}
