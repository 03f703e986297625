// The product on a real Redis Cluster (3 masters + 3 replicas from Debian's redis-server, started
// once for this file; issue 12 points 2 and 4), through a `redis-cluster://` URL:
// - everything works across two workers: room chat, direct messages stored and live, device
//   kick-out, unread and mark-read, the push API and the old `notification` channel;
// - a shard's master SIGKILLed, and a manual `CLUSTER FAILOVER`: within 10 s of the promotion
//   every worker answers /ready 200, has every occupied room and logged-in user channel
//   subscribed on the master that serves it now, and delivers across workers again, while
//   same-worker room delivery never stops;
// - a master SIGKILLed while its replica lags (the fixture's `lagReplica`): every direct message
//   acknowledged under `--durability replicated` is delivered after the failover; under `local`
//   some acknowledged ones are lost, which shows the test can tell.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisNames, startCluster } from "../support/harness.mjs";
import { redisCli, startRedisCluster } from "../support/redis-topologies.mjs";
import * as scenarios from "../support/topology-scenarios.mjs";

describe("on a Redis Cluster (3 masters + 3 replicas)", () => {
  let redisCluster;
  let cluster;
  let redis;
  before(async () => {
    redisCluster = await startRedisCluster();
    const live = async () => (await redisCluster.masters())[0].port;
    redis = {
      cmd: async (...args) => redisCli(await live(), ["-c", ...args]),
      publish: async (channel, message) => redisCli(await live(), ["PUBLISH", channel, message]),
    };
    cluster = await startCluster({ workers: 2, redisUrl: redisCluster.url, env: { CHAT_API_KEY: scenarios.API_KEY } });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("room chat crosses workers", () => scenarios.roomChatAcrossWorkers(cluster, "hall"));
  test("direct messages are stored for an offline user and delivered live to an online one", () =>
    scenarios.directMessages(cluster, redis, { sender: "ann", recipient: "bob" }));
  test("a login on another worker logs the older device out", () => scenarios.deviceKickOut(cluster, "erin"));
  test("stored pushes are counted and removed by mark_read", () => scenarios.unreadAndMarkRead(cluster, redis, "carol"));
  test("the push API reaches users, rooms and everyone; the notification channel works", () =>
    scenarios.pushApi(cluster, redis, { user: "dora", room: "news" }));

  const start = (extraArgs) => startCluster({ workers: 2, redisUrl: redisCluster.url, extraArgs });
  const slotOf = async (name) => Number(await redisCli(redisCluster.ports[0], ["CLUSTER", "KEYSLOT", name]));
  /** The master serving `name`'s slot, among `masters` (CLUSTER NODES as read at one time). */
  const serving = async (masters, name) => {
    const slot = await slotOf(name);
    return masters.find((m) => m.slots.some(([a, b]) => slot >= a && slot <= b))?.port;
  };
  /** PUBSUB SHARDNUMSUB of a channel on the master serving it now. */
  const counter = async () => {
    const masters = await redisCluster.masters();
    return async (channel) => Number((await redisCli(await serving(masters, channel), ["PUBSUB", "SHARDNUMSUB", channel])).split("\n")[1]);
  };
  /** The master of the ticking room's channel, and rooms and users: three each on it, three elsewhere. */
  async function aroundVictim() {
    const masters = await redisCluster.masters();
    const victim = await serving(masters, redisNames.room("ticking"));
    const pick = async (kind, channel) => {
      const on = [];
      const off = [];
      for (let i = 0; on.length < 3 || off.length < 3; i++) {
        const name = `${kind}${i}`;
        const list = (await serving(masters, channel(name))) === victim ? on : off;
        if (list.length < 3) list.push(name);
      }
      return [...on, ...off];
    };
    return { victim, replica: (await redisCluster.replicaOf(victim)).port, rooms: await pick("room", redisNames.room), users: await pick("user", redisNames.user) };
  }
  const isMaster = (port) => async () => (await redisCluster.cli(port, "ROLE")).startsWith("master");

  test("a master SIGKILLed: workers follow its replica within 10 s, same-worker rooms never stop", async (t) => {
    const { victim, replica, rooms, users } = await aroundVictim();
    await scenarios.failoverRecovery(t, start, {
      rooms,
      users,
      counter,
      inSync: () => scenarios.untilReplicated(victim, redisNames.room("ticking")),
      async failover() {
        const startedAt = Date.now();
        await redisCluster.kill(victim);
        await assert.rejects(redisCluster.cli(victim, "PING"), "the master is dead");
        const promotedAt = await scenarios.watchPromotion(isMaster(replica));
        assert.equal((await redisCluster.waitForPromotion(victim)).port, replica, "its replica took over");
        return { startedAt, promotedAt };
      },
    });
    await redisCluster.restart(victim);
  });

  test("a manual failover (CLUSTER FAILOVER, as maintenance does): workers follow within 10 s", async (t) => {
    const { victim, replica, rooms, users } = await aroundVictim();
    await scenarios.failoverRecovery(t, start, {
      rooms,
      users,
      counter,
      inSync: () => scenarios.untilReplicated(victim, redisNames.room("ticking")),
      async failover() {
        const startedAt = Date.now();
        await redisCluster.cli(replica, "CLUSTER", "FAILOVER");
        const promotedAt = await scenarios.watchPromotion(isMaster(replica));
        await redisCluster.untilHealthy("the cluster to be healthy after the manual failover");
        assert.equal((await redisCluster.cli(victim, "ROLE")).split("\n")[0], "slave", "the old master is a replica now");
        return { startedAt, promotedAt };
      },
    });
  });

  scenarios.durabilityTests(test, start, {
    masterOfKey: async (key) => (await redisCluster.masterOfKey(key)).port,
    replicaOf: async (port) => (await redisCluster.replicaOf(port)).port,
    lag: (replica, ms) => redisCluster.lagReplica(replica, ms),
    kill: (port) => redisCluster.kill(port),
    waitForPromotion: async (port) => (await redisCluster.waitForPromotion(port)).port,
    restart: (port) => redisCluster.restart(port),
    cli: (port, ...args) => redisCluster.cli(port, ...args),
  });
});
