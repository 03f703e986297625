// Faults with real processes: a worker SIGKILLed, Redis restarted, the supervisor stopped.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { alive, cleanup, member, said, startCluster, startRedis, until, untilCrosses, within, redisNames } from "../support/harness.mjs";

describe("faults", () => {
  after(cleanup);

  test("a SIGKILLed worker is respawned on its port and its clients come back and chat", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = await member(cluster.url(0), "survive", "ann");
    const bob = await member(cluster.url(1), "survive", "bob");
    await until("/status to count both", async () => (await cluster.status()).total_connections === 2);

    const before = (await cluster.status()).workers[0];
    const mark = cluster.lines.length;
    process.kill(before.pid, "SIGKILL");
    const exited = await cluster.waitLine(`worker_exited of pid ${before.pid}`, (l) => l.event === "worker_exited" && l.pid === before.pid, {
      since: mark,
    });
    assert.equal(exited.id, 0);
    assert.equal(exited.port, before.port);
    assert.equal(alive(before.pid), false, "the killed worker is gone");
    const ready = await cluster.waitLine("worker_ready after respawn", (l) => l.event === "worker_ready" && l.id === 0, { since: mark });
    assert.notEqual(ready.pid, before.pid);
    assert.equal(ready.port, before.port);

    // socket.io-client reconnects by itself; the harness re-joins on connect, as the page does.
    await until("ann to reconnect", () => ann.connected);
    await until("/status to count ann again on the new worker", async () => {
      const status = await cluster.status();
      return status.workers[0].pid === ready.pid && status.workers[0].connections === 1 && status.workers[0].restarts === 1;
    });
    await untilCrosses(ann, bob, "from the respawned worker");
    await untilCrosses(bob, ann, "to the respawned worker");
    ann.disconnect();
    bob.disconnect();
    await cluster.stop();
  });

  test("a dead worker's connections and rooms stop counting at once, before its successor starts", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    // A worker that dies within 5 s of its start is respawned after a 250 ms backoff (the
    // supervisor takes it for a crash loop): the window in which /status shows the dead slot.
    // Kill worker 0 once so that its successor's start time is known here.
    let mark = cluster.lines.length;
    process.kill((await cluster.status()).workers[0].pid, "SIGKILL");
    const started = await cluster.waitLine("worker 0's successor", (l) => l.event === "worker_ready" && l.id === 0, { since: mark });
    const startedAt = Date.now();
    const victims = await Promise.all(["c1", "c2", "c3"].map((name, i) => member(cluster.url(0), `gone${i % 2}`, name, { reconnection: false })));
    const bob = await member(cluster.url(1), "gone0", "bob", { reconnection: false });
    await until("/status to count three clients in two rooms on worker 0", async () => {
      const [zero, one] = (await cluster.status()).workers;
      return zero.connections === 3 && zero.rooms === 2 && one.connections === 1;
    });
    const cut = victims.map((c) => new Promise((resolve) => c.once("disconnect", resolve)));
    mark = cluster.lines.length;
    const ranFor = Date.now() - startedAt;
    assert.ok(ranFor < 4000, `worker 0 ran ${ranFor} ms before the kill; the backoff window needs under 5 s`);
    process.kill(started.pid, "SIGKILL");
    await cluster.waitLine(`worker_exited of pid ${started.pid}`, (l) => l.event === "worker_exited" && l.pid === started.pid, { since: mark });
    const right = await cluster.status();
    // The fault happened: the process is gone and its clients were cut.
    assert.equal(alive(started.pid), false);
    await within("the victims' connections to be cut", Promise.all(cut));
    const { id, pid, port, connections, rooms, restarts, state } = right.workers[0];
    assert.deepEqual(
      { id, pid, port, connections, rooms, restarts, state },
      { id: 0, pid: 0, port: cluster.ports[0], connections: 0, rooms: 0, restarts: 1, state: "down" },
      "the dead worker's slot right after worker_exited, before the respawn",
    );
    assert.equal(right.total_connections, 1, "only bob, on the other worker");
    // Its successor starts from zero too (the victims do not reconnect).
    const next = await cluster.waitLine("worker 0's next successor", (l) => l.event === "worker_ready" && l.id === 0, { since: mark });
    const after = (await cluster.status()).workers[0];
    assert.equal(after.pid, next.pid);
    assert.equal(after.connections, 0);
    assert.equal(after.rooms, 0);
    bob.disconnect();
    await cluster.stop();
  });

  test("after a Redis restart, rooms span workers again; local delivery never stopped", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = await member(cluster.url(0), "outage", "ann");
    const amy = await member(cluster.url(0), "outage", "amy");
    const bob = await member(cluster.url(1), "outage", "bob");
    await until("subscriptions", async () => (await redis.channels()).includes(redisNames.room("outage")));

    await redis.stop();
    await until("worker 0 to report degraded", async () => (await fetch(`${cluster.url(0)}/ready`)).status === 503);
    assert.equal((await ann.ack("say", { text: "while redis is away" })).ok, true);
    await amy.next("same-worker delivery during the outage", said("while redis is away"));

    await redis.restart();
    await untilCrosses(ann, bob, "after the restart, 1 to 2");
    await untilCrosses(bob, ann, "after the restart, 2 to 1");
    for (const c of [ann, amy, bob]) c.disconnect();
    await cluster.stop();
  });

  test("a worker stopped with SIGTERM (rolling restart): its clients recover their sessions, with no quit and no join for the blip", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = await member(cluster.url(0), "rolling", "ann");
    const bob = await member(cluster.url(1), "rolling", "bob");
    await untilCrosses(ann, bob, "before the restart");
    const sid = ann.id;
    const victim = (await cluster.status()).workers[0].pid;
    const mark = bob.received.length;
    process.kill(victim, "SIGTERM");
    // The fault: the worker is gone (a new one serves the port).
    await until("the drained worker to exit and its successor to serve", async () => {
      const now = (await cluster.status()).workers[0];
      return !alive(victim) && now.pid !== victim && now.state === "ready";
    });
    // ann's client recovers on the new worker: same socket id, still in the room.
    await until("ann to recover", () => ann.recovered && ann.connected);
    assert.equal(ann.id, sid, "the session's socket id came back");
    await untilCrosses(ann, bob, "after the restart");
    const presence = bob.received.slice(mark).filter((m) => m.event !== "broadcast_say");
    assert.deepEqual(presence, [], "no quit and no join of ann for the blip");
    ann.disconnect();
    bob.disconnect();
    await cluster.stop();
  });

  test("a worker stopped with SIGTERM, recovery off: other workers see its members quit, and they come back", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--recovery-window-secs", "0"] });
    const ann = await member(cluster.url(0), "rolling-plain", "ann");
    const bob = await member(cluster.url(1), "rolling-plain", "bob");
    await untilCrosses(ann, bob, "before the restart");
    const victim = (await cluster.status()).workers[0].pid;
    process.kill(victim, "SIGTERM");
    const quit = await bob.next("ann's quit from the draining worker", (m) => m.event === "broadcast_quit" && m.data?.username === "ann");
    assert.equal(quit.room, "rolling-plain");
    assert.equal(quit.count, 1, "bob alone is left");
    // The supervisor starts a new worker on the port; ann's client reconnects and joins again.
    await bob.next("ann's join after the restart", (m) => m.event === "join" && m.data?.username === "ann" && m.ts > quit.ts);
    await untilCrosses(ann, bob, "after the restart");
    ann.disconnect();
    bob.disconnect();
    await cluster.stop();
  });

  test("SIGTERM: clients are closed, the supervisor exits 0, no worker is left", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = await member(cluster.url(0), "bye", "ann", { reconnection: false });
    const bob = await member(cluster.url(1), "bye", "bob", { reconnection: false });
    const pids = (await cluster.status()).workers.map((w) => w.pid);
    const disconnects = [ann, bob].map((c) => new Promise((resolve) => c.once("disconnect", resolve)));

    const mark = cluster.lines.length;
    const stopping = Date.now();
    const { code, signal } = await cluster.stop();
    const took = Date.now() - stopping;
    assert.equal(signal, null);
    assert.equal(code, 0);
    // A clean drain, not the SIGKILL fallback after the grace period (2000 ms, plus a 2 s
    // margin): both workers exited by themselves with code 0, sooner than the grace.
    const exits = cluster.lines.slice(mark).filter((l) => l.event === "worker_exited");
    assert.deepEqual(exits.map((l) => l.status), ["exit code 0", "exit code 0"]);
    assert.ok(took < 2000, `the stop took ${took} ms, not less than the 2000 ms grace`);
    await within("both clients to be disconnected", Promise.all(disconnects));
    assert.ok(cluster.lines.some((l) => l.event === "stopped"), "the supervisor printed stopped");
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} outlived the supervisor`);
  });
});
