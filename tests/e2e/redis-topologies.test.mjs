// The Redis topology fixtures of tests/support/redis-topologies.mjs, tested on their own: a Redis
// Cluster of 3 masters + 3 replicas and a Sentinel setup (master, replica, 3 sentinels) start with
// the roles they claim, a killed master's replica is promoted, what was replicated before
// survives, and what was written while `lagReplica` held the replica back is lost with the
// master: the window that tests of replicated acknowledgements need to be real.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup } from "../support/harness.mjs";
import { redisCli, startRedisCluster, startRedisSentinel } from "../support/redis-topologies.mjs";

/** SET then WAIT on one connection (WAIT counts the replicas that have this connection's writes). */
async function setAndWait(port, key, value, waitMs) {
  const [set, replicas] = (await redisCli(port, [], { input: `SET ${key} ${value}\nWAIT 1 ${waitMs}\n` })).split("\n");
  assert.equal(set, "OK");
  return Number(replicas);
}

describe("Redis Cluster fixture", () => {
  let cluster;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("3 masters with every slot between them, each with one replica of its own", async () => {
    const nodes = await cluster.nodes();
    assert.equal(nodes.length, 6);
    const masters = nodes.filter((n) => n.role === "master");
    assert.equal(masters.length, 3);
    assert.equal(masters.reduce((sum, m) => sum + m.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0), 16384);
    const replicas = nodes.filter((n) => n.role === "replica");
    assert.deepEqual(replicas.map((r) => r.masterId).sort(), masters.map((m) => m.id).sort());
    // Every node says the same about itself (ROLE), whatever ports redis-cli made masters.
    for (const node of nodes) assert.equal((await cluster.cli(node.port, "ROLE")).split("\n")[0], node.role === "master" ? "master" : "slave");
    assert.match(cluster.url, /^redis-cluster:\/\/127\.0\.0\.1:\d+\?node=127\.0\.0\.1:\d+(&node=127\.0\.0\.1:\d+){4}$/);
  });

  test("a killed master's replica takes over: replicated data stays, data written while it lagged is lost", async () => {
    const master = await cluster.masterOfKey("{kept}");
    assert.equal((await cluster.masterOfKey("{lost}")).port, master.port, "both keys share one slot's master");
    const replica = await cluster.replicaOf(master.port);
    assert.ok(replica, `master ${master.port} has a live replica`);

    assert.equal(await setAndWait(master.port, "{kept}", "before", 2000), 1, "the replica confirms the write before the lag");
    const lag = await cluster.lagReplica(replica.port, 3000);
    assert.equal(await setAndWait(master.port, "{lost}", "during", 300), 0, "no replica confirms a write during the lag");
    assert.equal(await cluster.cli(master.port, "GET", "{lost}"), "during", "the master has it");

    await cluster.kill(master.port);
    await assert.rejects(cluster.cli(master.port, "PING"), "the master is dead");
    const promoted = await cluster.waitForPromotion(master.port);
    assert.equal(promoted.port, replica.port, "its own replica took over");
    await lag.awake;
    assert.equal((await cluster.cli(promoted.port, "ROLE")).split("\n")[0], "master");
    assert.equal(await cluster.cli(promoted.port, "GET", "{kept}"), "before");
    assert.equal(await cluster.cli(promoted.port, "GET", "{lost}"), "", "the write made during the lag is gone");

    // The old master comes back as a replica of the new one.
    await cluster.restart(master.port);
    const back = (await cluster.nodes()).find((n) => n.port === master.port);
    assert.equal(back.role, "replica");
    assert.equal(back.masterId, promoted.id);
  });
});

describe("Redis Sentinel fixture", () => {
  let sentinel;
  before(async () => {
    sentinel = await startRedisSentinel();
  });
  after(async () => {
    await sentinel?.stop();
    await cleanup();
  });

  test("the sentinels name the master; master and replica say so themselves", async () => {
    const [first, second] = sentinel.dataPorts;
    assert.equal(await sentinel.masterPort(), first);
    assert.equal(await sentinel.role(first), "master");
    assert.equal(await sentinel.role(second), "slave");
    assert.equal(await sentinel.replicaPort(), second);
    assert.match(sentinel.url, /^redis-sentinel:\/\/127\.0\.0\.1:\d+\/0\?sentinelServiceName=chat&node=127\.0\.0\.1:\d+&node=127\.0\.0\.1:\d+$/);
  });

  test("a killed master's replica is promoted: replicated data stays, data written while it lagged is lost", async () => {
    const master = await sentinel.masterPort();
    const replica = await sentinel.replicaPort();
    assert.equal(await setAndWait(master, "kept", "before", 2000), 1, "the replica confirms the write before the lag");
    const lag = await sentinel.lagReplica(3000);
    assert.equal(await setAndWait(master, "lost", "during", 300), 0, "no replica confirms a write during the lag");

    assert.equal(await sentinel.killMaster(), master);
    await assert.rejects(sentinel.cli(master, "PING"), "the master is dead");
    const promoted = await sentinel.waitForPromotion(master);
    assert.equal(promoted, replica);
    await lag.awake;
    assert.equal(await sentinel.role(promoted), "master");
    assert.equal(await sentinel.cli(promoted, "GET", "kept"), "before");
    assert.equal(await sentinel.cli(promoted, "GET", "lost"), "", "the write made during the lag is gone");

    // The old master comes back as a replica of the new one.
    await sentinel.restart(master);
    assert.equal(await sentinel.role(master), "slave");
    assert.equal(await sentinel.replicaPort(), master);
  });
});
