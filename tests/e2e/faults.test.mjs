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
    // The dead worker's connections stop counting at once: right after worker_exited, worker 0
    // is either still the dead pid with no connections and not ready, or already its successor.
    const right = await cluster.status();
    const slot = right.workers[0];
    if (slot.pid === before.pid) {
      assert.equal(slot.connections, 0, `the killed worker still counts connections: ${JSON.stringify(slot)}`);
      assert.notEqual(slot.state, "ready", `the killed worker is still shown ready: ${JSON.stringify(slot)}`);
    }
    assert.ok(slot.connections <= 1, `worker 0 counts more than ann: ${JSON.stringify(slot)}`);
    assert.equal(right.total_connections, right.workers.reduce((sum, w) => sum + w.connections, 0));
    assert.equal(right.workers[1].connections, 1, "bob on the other worker is still counted");
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

  test("a worker stopped with SIGTERM says goodbye: other workers see its members quit, and they come back", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const ann = await member(cluster.url(0), "rolling", "ann");
    const bob = await member(cluster.url(1), "rolling", "bob");
    await untilCrosses(ann, bob, "before the restart");
    const victim = (await cluster.status()).workers[0].pid;
    process.kill(victim, "SIGTERM");
    const quit = await bob.next("ann's quit from the draining worker", (m) => m.event === "broadcast_quit" && m.data?.username === "ann");
    assert.equal(quit.room, "rolling");
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

    const { code, signal } = await cluster.stop();
    assert.equal(signal, null);
    assert.equal(code, 0);
    await within("both clients to be disconnected", Promise.all(disconnects));
    assert.ok(cluster.lines.some((l) => l.event === "stopped"), "the supervisor printed stopped");
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} outlived the supervisor`);
  });
});
