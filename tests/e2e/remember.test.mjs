// Rooms that remember (issue 13), on real workers, a real redis-server and the official
// socket.io-client: history on join, `history` paging, socket.io connection state recovery
// after a dropped transport and after a SIGKILLed worker, presence without ghosts, and the
// refusals (window over, gap no longer in history, forged pid or offset).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chatClient, cleanup, member, sleep, startCluster, startRedis, until, within } from "../support/harness.mjs";
import { pythonClient } from "../support/python.mjs";

/** The default --presence-grace-ms: a dead worker's members are gone within it. */
const GRACE_MS = 5000;
const FAST = ["--rate-per-sec", "500", "--rate-burst", "500"];

let serial = 0;
const roomName = (label) => `${label}-${process.pid}-${++serial}`;

/**
 * Says `label #0` .. `label #(n-1)`, one every `everyMs`, each acknowledged; resolves with the
 * time of each acknowledgement.
 */
async function talk(speaker, label, n, everyMs = 0) {
  const acked = [];
  for (let i = 0; i < n; i++) {
    const ack = await speaker.ack("say", { text: `${label} #${i}` });
    assert.equal(ack.ok, true, `say ${label} #${i}: ${JSON.stringify(ack)}`);
    acked.push(Date.now());
    if (everyMs) await sleep(everyMs);
  }
  return acked;
}

/** How many of `acked` fall inside `gap`. */
const during = (acked, gap) => acked.filter((t) => t > gap.from && t < gap.to).length;

/** The numbers of `label`'s messages a client got, history first, then live, in arrival order. */
function heard(client, label) {
  return [...client.history, ...client.received]
    .filter((m) => m.event === "broadcast_say" && m.data.text.startsWith(`${label} #`))
    .map((m) => Number(m.data.text.slice(label.length + 2)));
}

const range = (n) => Array.from({ length: n }, (_, i) => i);
const events = (client, event, username) => client.received.filter((m) => m.event === event && m.data.username === username);

describe("rooms that remember", () => {
  let redis;
  let cluster;
  let startedAt;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: FAST });
    startedAt = Date.now();
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("a newcomer on another worker gets the room's recent messages, oldest first, as they were sent", async () => {
    const room = roomName("hist");
    const ann = await member(cluster.url(0), room, "ann");
    await talk(ann, "ann", 5);
    await until("ann to hear her five messages", () => heard(ann, "ann").length === 5);
    const before = [...ann.received];
    const bob = await member(cluster.url(1), room, "bob");
    // The history event comes before the join's answer, once.
    assert.equal(bob.histories, 1);
    assert.deepEqual(bob.history, before, "the same objects (id, ts, event, data), in the same order");
    assert.equal(ann.received[0].event, "join");
    assert.deepEqual(heard(bob, "ann"), range(5));
    // Then live, with nothing of the history again.
    await ann.ack("say", { text: "ann #5" });
    await bob.next("ann #5", (m) => m.data?.text === "ann #5");
    assert.deepEqual(heard(bob, "ann"), range(6));
    const ids = [...bob.history, ...bob.received].map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, "no message twice");
    for (const c of [ann, bob]) c.disconnect();
  });

  test("joins during traffic from both workers get every message once, history then live, no gap", async () => {
    const room = roomName("busy");
    const N = 40;
    const left = await member(cluster.url(0), room, "left");
    const right = await member(cluster.url(1), room, "right");
    const traffic = Promise.all([talk(left, "left", N, 5), talk(right, "right", N, 5)]);
    // Joiners on both workers, while both speak.
    await until("the traffic to be under way", () => heard(left, "right").length >= 10);
    const joiners = await Promise.all([member(cluster.url(0), room, "j0"), member(cluster.url(1), room, "j1")]);
    await traffic;
    for (const joiner of joiners) {
      await until("every message to reach the joiner", () => heard(joiner, "left").length >= N && heard(joiner, "right").length >= N);
      // The history size (50) covers everything said before the join: each speaker's messages
      // are all there, once, in order, across the history/live boundary.
      assert.deepEqual(heard(joiner, "left"), range(N));
      assert.deepEqual(heard(joiner, "right"), range(N));
      const live = joiner.received.filter((m) => m.event === "broadcast_say").length;
      assert.ok(live > 0 && live < 2 * N, `the join fell inside the traffic: ${live} of ${2 * N} came live`);
    }
    for (const c of [left, right, ...joiners]) c.disconnect();
  });

  test("`history` pages back through the room; bad requests get error answers and no message", async () => {
    const room = roomName("pages");
    const ann = await member(cluster.url(0), room, "ann");
    await talk(ann, "p", 12);
    const newest = await ann.ack("history", { limit: 5 });
    assert.equal(newest.ok, true);
    assert.equal(newest.room, room);
    assert.deepEqual(newest.messages.map((m) => m.data.text), ["p #7", "p #8", "p #9", "p #10", "p #11"]);
    const older = await ann.ack("history", { before: newest.messages[0].id, limit: 5 });
    assert.deepEqual(older.messages.map((m) => m.data.text), ["p #2", "p #3", "p #4", "p #5", "p #6"]);
    const oldest = await ann.ack("history", { before: older.messages[0].id, limit: 5 });
    assert.deepEqual(oldest.messages.map((m) => m.event), ["join", "broadcast_say", "broadcast_say"]);
    assert.deepEqual((await ann.ack("history", { before: oldest.messages[0].id })).messages, []);
    // No payload: the newest page, up to --history-page-max.
    assert.equal((await ann.ack("history")).messages.length, 13);
    // Pages are the same objects the room received.
    const live = ann.received.filter((m) => m.event === "broadcast_say").slice(-5);
    assert.deepEqual(newest.messages, live);

    for (const bad of [{ limit: 0 }, { limit: 100_000 }, { limit: -1 }, { limit: "5" }, { before: "nope" }, { room: "elsewhere" }, "all", [1]]) {
      const answer = await ann.ack("history", bad);
      assert.equal(answer.ok, false, `history ${JSON.stringify(bad)}: ${JSON.stringify(answer)}`);
      assert.equal(answer.error.code, "invalid_payload", JSON.stringify(answer));
      assert.equal(answer.messages, undefined);
    }
    // Another room's member asking before one of this room's ids gets nothing of this room.
    const other = await member(cluster.url(1), roomName("pages-other"), "eve");
    const foreign = await other.ack("history", { before: newest.messages[4].id, limit: 100 });
    assert.equal(foreign.ok, true);
    assert.deepEqual(foreign.messages, []);
    const all = await other.ack("history");
    assert.ok(all.messages.every((m) => m.room === other.io.opts.query.roomid), JSON.stringify(all));
    // Before joining: refused.
    const stranger = chatClient(cluster.url(0), { roomid: room });
    await stranger.connected_();
    assert.equal((await stranger.ack("history")).error.code, "not_joined");
    assert.equal((await stranger.ack("members")).error.code, "not_joined");
    assert.deepEqual(stranger.received, []);
    for (const c of [ann, other, stranger]) c.disconnect();
  });

  test("presence: members from both workers, counts on join and quit", async () => {
    const room = roomName("who");
    const ann = await member(cluster.url(0), room, "ann");
    const bob = await member(cluster.url(1), room, "bob");
    const bobJoin = await ann.next("bob's join", (m) => m.event === "join" && m.data.username === "bob");
    assert.equal(bobJoin.count, 2);
    for (const asker of [ann, bob]) {
      assert.deepEqual(await asker.ack("members"), { ok: true, room, count: 2, members: ["ann", "bob"] });
    }
    const cid = await member(cluster.url(1), room, "cid");
    assert.equal((await ann.next("cid's join", (m) => m.event === "join" && m.data.username === "cid")).count, 3);
    // Leaving on purpose (`socket.disconnect()`): the quit goes out at once, with the new count.
    const leftAt = Date.now();
    cid.disconnect();
    const quit = await ann.next("cid's quit", (m) => m.event === "broadcast_quit" && m.data.username === "cid");
    assert.ok(Date.now() - leftAt < 1000, `the quit took ${Date.now() - leftAt} ms`);
    assert.equal(quit.count, 2);
    assert.deepEqual((await bob.ack("members")).members, ["ann", "bob"]);
    for (const c of [ann, bob]) c.disconnect();
  });

  test("a dropped transport recovers: same id, no join or quit, every missed message once, in order", async () => {
    const room = roomName("blip");
    const yan = await member(cluster.url(1), room, "yan");
    const xia = chatClient(cluster.url(0), { roomid: room, username: "xia", reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 });
    await until("xia to join", () => xia.joins === 1);
    // A client that takes no offsets (python-socketio) in the same room, unaffected.
    const py = pythonClient(cluster.url(0), room, "py");
    await py.until("the python client to join", () => py.lines.some((l) => l.event === "join_ack" && l.ack?.ok));
    const firstId = xia.id;
    const gap = { from: 0, to: 0 };
    xia.once("disconnect", () => (gap.from = Date.now()));
    const N = 40;
    const traffic = talk(yan, "yan", N, 15);
    await until("the traffic to reach xia", () => heard(xia, "yan").length >= 5);
    const cut = new Promise((resolve) => xia.once("disconnect", resolve));
    const back = new Promise((resolve) => cut.then(() => xia.once("connect", resolve)));
    xia.io.engine.close();
    await within("xia's disconnect", cut);
    await within("xia's reconnection", back);
    gap.to = Date.now();
    const acked = await traffic;
    // The fault happened: xia was away while yan spoke.
    assert.ok(during(acked, gap) >= 3, `${during(acked, gap)} messages said in the ${gap.to - gap.from} ms xia was away`);
    assert.equal(xia.recovered, true, "socket.recovered");
    assert.equal(xia.id, firstId, "the same socket id");
    assert.equal(xia.recoveries, 1);
    await until("every message to reach xia", () => heard(xia, "yan").length >= N);
    assert.deepEqual(heard(xia, "yan"), range(N), "every message once, in order");
    assert.equal(xia.histories, 1, "no second history");
    // The others saw nothing of the blip.
    await sleep(300);
    assert.equal(events(yan, "join", "xia").length, 1);
    assert.deepEqual(events(yan, "broadcast_quit", "xia"), []);
    assert.deepEqual((await yan.ack("members")).members, ["py", "xia", "yan"]);
    // She can still speak, with her name.
    await xia.ack("say", { text: "xia back" });
    assert.equal((await yan.next("xia back", (m) => m.data?.text === "xia back")).data.username, "xia");
    // python-socketio got everything once, without an offset argument it cannot take.
    await py.until("python to hear every message", () => py.lines.filter((l) => l.event === "message" && l.data?.data?.text?.startsWith("yan #")).length >= N);
    const pyTexts = py.lines.filter((l) => l.event === "message" && l.data?.data?.text?.startsWith("yan #")).map((l) => l.data.data.text);
    assert.deepEqual(pyTexts, range(N).map((i) => `yan #${i}`));
    py.stop();
    for (const c of [xia, yan]) c.disconnect();
  });

  test("a SIGKILLed worker: its client recovers on the other worker; one that never returns is reaped with one quit", async () => {
    const room = roomName("kill");
    const yan = await member(cluster.url(0), room, "yan");
    const kai = chatClient(cluster.url(1), { roomid: room, username: "kai", reconnectionDelay: 200, reconnectionDelayMax: 200, randomizationFactor: 0 });
    await until("kai to join", () => kai.joins === 1);
    const zoe = await member(cluster.url(1), room, "zoe", { reconnection: false });
    assert.deepEqual((await yan.ack("members")).members, ["kai", "yan", "zoe"]);
    const kaiId = kai.id;
    // As nginx would, kai's reconnection goes to the surviving worker.
    kai.once("disconnect", () => (kai.io.uri = cluster.url(0)));
    // The surviving worker reaps only after it has been healthy for twice the grace.
    await sleep(Math.max(0, startedAt + 2 * GRACE_MS + 1000 - Date.now()));

    const N = 30;
    const traffic = talk(yan, "yan", N, 20);
    await until("the traffic to reach kai", () => heard(kai, "yan").length >= 5);
    const victim = (await cluster.status()).workers[1].pid;
    const mark = cluster.lines.length;
    const gap = { from: 0, to: 0 };
    const back = new Promise((resolve) =>
      kai.once("disconnect", () => {
        gap.from = Date.now();
        kai.once("connect", () => resolve((gap.to = Date.now())));
      }),
    );
    process.kill(victim, "SIGKILL");
    const killedAt = Date.now();
    await cluster.waitLine("the worker's exit", (l) => l.event === "worker_exited" && l.pid === victim, { since: mark });
    await within("kai's reconnection", back);
    const acked = await traffic;
    assert.ok(during(acked, gap) >= 3, `${during(acked, gap)} messages said in the ${gap.to - gap.from} ms kai was away`);
    assert.equal(kai.recovered, true);
    assert.equal(kai.id, kaiId);
    await until("every message to reach kai", () => heard(kai, "yan").length >= N);
    assert.deepEqual(heard(kai, "yan"), range(N), "every message once, in order");

    // zoe never comes back: one quit, from the surviving worker, within the grace.
    const quit = await yan.next("zoe's quit", (m) => m.event === "broadcast_quit" && m.data.username === "zoe", 2 * GRACE_MS);
    const tookMs = Date.now() - killedAt;
    // The grace, plus a moment for the quit to travel on a loaded machine.
    assert.ok(tookMs <= GRACE_MS + 1000, `zoe's quit came ${tookMs} ms after the kill`);
    assert.equal(quit.count, 2);
    assert.deepEqual((await yan.ack("members")).members, ["kai", "yan"]);
    await sleep(1500);
    assert.equal(events(yan, "broadcast_quit", "zoe").length, 1, "exactly one quit");
    assert.deepEqual(events(yan, "broadcast_quit", "kai"), [], "no quit for a member that recovered");
    assert.equal(events(yan, "join", "kai").length, 1);
    assert.deepEqual(events(kai, "broadcast_quit", "zoe").map((m) => m.id), [quit.id]);
    for (const c of [yan, kai, zoe]) c.disconnect();
  });
});

describe("recovery refused: a normal new session, never a partial replay", () => {
  let redis;
  let cluster;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({
      workers: 2,
      redisUrl: redis.url,
      extraArgs: [...FAST, "--recovery-window-secs", "2", "--history-size", "5"],
    });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  /** A member that stays away until `comeBack()`: reconnection is held while it is away. */
  async function awayClient(url, room, username) {
    const client = chatClient(url, { roomid: room, username, reconnectionDelay: 100, reconnectionDelayMax: 100 });
    await until(`${username} to join`, () => client.joins === 1);
    return Object.assign(client, {
      async leave() {
        client.io.reconnection(false);
        client.io.engine.close();
        await until(`${username} to be cut`, () => !client.connected);
      },
      async comeBack() {
        client.io.reconnection(true);
        client.connect();
        await client.connected_();
      },
    });
  }

  test("after the recovery window", async () => {
    const room = roomName("late");
    const yan = await member(cluster.url(1), room, "yan");
    const ola = await awayClient(cluster.url(0), room, "ola");
    const oldId = ola.id;
    await ola.leave();
    await talk(yan, "gone", 2);
    await sleep(3000);
    await ola.comeBack();
    assert.equal(ola.recovered, false);
    assert.notEqual(ola.id, oldId);
    // A new session joins again, with the room's history; nothing was replayed as live.
    await until("ola to join again", () => ola.joins === 2);
    assert.deepEqual(ola.received.filter((m) => m.data?.text?.startsWith("gone")), []);
    assert.deepEqual(ola.history.filter((m) => m.data?.text?.startsWith("gone")).map((m) => m.data.text), ["gone #0", "gone #1"]);
    for (const c of [yan, ola]) c.disconnect();
  });

  test("when more was missed than the history holds", async () => {
    const room = roomName("gap");
    const yan = await member(cluster.url(1), room, "yan");
    const ola = await awayClient(cluster.url(0), room, "ola");
    await talk(yan, "gap", 2);
    await until("ola to hear the first two", () => heard(ola, "gap").length === 2);
    await ola.leave();
    await talk(yan, "missed", 8);
    await ola.comeBack();
    assert.equal(ola.recovered, false);
    await until("ola to join again", () => ola.joins === 2);
    assert.deepEqual(ola.received.filter((m) => m.data?.text?.startsWith("missed")), [], "no partial replay");
    for (const c of [yan, ola]) c.disconnect();
  });

  test("a forged pid, another room's pid, or an offset of another room", async () => {
    const room = roomName("forge");
    const other = roomName("forge-other");
    const yan = await member(cluster.url(1), room, "yan");
    const ola = await member(cluster.url(0), room, "ola");
    await talk(yan, "secret", 3);
    await until("ola to hear the secrets", () => heard(ola, "secret").length === 3);
    const stolen = { pid: ola._pid, offset: ola._lastOffset };
    assert.match(stolen.pid, /^[0-9a-f]{32}$/);
    assert.ok(stolen.offset, "room events carry an offset");

    const tries = [
      { roomid: other, auth: stolen },
      { roomid: room, auth: { pid: "0".repeat(32), offset: stolen.offset } },
      { roomid: room, auth: { pid: "not a pid", offset: "x" } },
      { roomid: room, auth: { pid: stolen.pid.toUpperCase(), offset: "garbage~1" } },
    ];
    for (const { roomid, auth } of tries) {
      const forger = chatClient(cluster.url(0), { roomid, auth });
      await forger.connected_();
      assert.equal(forger.recovered, false, JSON.stringify(auth));
      assert.notEqual(forger._pid, stolen.pid);
      // A normal new session: not in any room until it joins.
      assert.equal((await forger.ack("say", { text: "intruder" })).error.code, "not_joined");
      await sleep(100);
      assert.deepEqual([forger.received, forger.history], [[], []], JSON.stringify(auth));
      forger.disconnect();
    }

    // Its own pid, with an offset from another room's stream.
    const away = await awayClient(cluster.url(0), other, "oli");
    await away.leave();
    away._lastOffset = stolen.offset;
    await away.comeBack();
    assert.equal(away.recovered, false);
    await until("oli to join again", () => away.joins === 2);
    await sleep(100);
    assert.ok([...away.received, ...away.history].every((m) => m.room === other), JSON.stringify(away.received));
    assert.deepEqual(events(yan, "join", "intruder"), []);
    for (const c of [yan, ola, away]) c.disconnect();
  });
});
