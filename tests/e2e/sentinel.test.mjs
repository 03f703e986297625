// The product on a real Redis Sentinel setup (a master, a replica and 3 sentinels from Debian's
// redis-server, started once for this file; issue 12 points 1 and 4), through a
// `redis-sentinel://` URL:
// - everything works across two workers: room chat, direct messages stored and live, device
//   kick-out, unread and mark-read, the push API and the old `notification` channel;
// - the master SIGKILLed, and a manual `SENTINEL FAILOVER`: within 10 s of the promotion every
//   worker answers /ready 200, has every occupied room and logged-in user channel subscribed on
//   the new master, and delivers across workers again, while same-worker room delivery never
//   stops; after a manual failover the workers move before the sentinels demote the old master;
// - the master SIGKILLed while its replica lags (the fixture's `lagReplica`): every direct
//   message acknowledged under `--durability replicated` is delivered after the failover; under
//   `local` some acknowledged ones are lost, which shows the test can tell.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, redisNames, startCluster, until } from "../support/harness.mjs";
import { redisCli, startRedisSentinel } from "../support/redis-topologies.mjs";
import * as scenarios from "../support/topology-scenarios.mjs";

describe("on Redis Sentinel (master, replica, 3 sentinels)", () => {
  let sentinel;
  let cluster;
  let redis;
  before(async () => {
    sentinel = await startRedisSentinel();
    redis = {
      cmd: async (...args) => redisCli(await sentinel.masterPort(), args),
      publish: async (channel, message) => redisCli(await sentinel.masterPort(), ["PUBLISH", channel, message]),
    };
    cluster = await startCluster({ workers: 2, redisUrl: sentinel.url, env: { CHAT_API_KEY: scenarios.API_KEY } });
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

  const start = (extraArgs) => startCluster({ workers: 2, redisUrl: sentinel.url, extraArgs });
  const rooms = ["room0", "room1", "room2"];
  const users = ["user0", "user1", "user2"];
  /** PUBSUB SHARDNUMSUB of a channel on the master the sentinels name now. */
  const counter = async () => {
    const master = await sentinel.masterPort();
    return async (channel) => Number((await redisCli(master, ["PUBSUB", "SHARDNUMSUB", channel])).split("\n")[1]);
  };
  const isMaster = (port) => async () => (await sentinel.role(port)) === "master";

  test("the master SIGKILLed: workers follow the promoted replica within 10 s, same-worker rooms never stop", async (t) => {
    const victim = await sentinel.masterPort();
    const replica = await sentinel.replicaPort();
    await scenarios.failoverRecovery(t, start, {
      rooms,
      users,
      counter,
      inSync: () => scenarios.untilReplicated(victim, redisNames.room("ticking")),
      async failover() {
        const startedAt = Date.now();
        assert.equal(await sentinel.killMaster(), victim);
        await assert.rejects(sentinel.cli(victim, "PING"), "the master is dead");
        const promotedAt = await scenarios.watchPromotion(isMaster(replica));
        assert.equal(await sentinel.waitForPromotion(victim), replica, "the sentinels name the replica");
        return { startedAt, promotedAt };
      },
    });
    await sentinel.restart(victim);
  });

  test("a manual failover (SENTINEL FAILOVER, as maintenance does): workers follow the sentinels' switch, not the old master's demotion", async (t) => {
    const victim = await sentinel.masterPort();
    const replica = await sentinel.replicaPort();
    let demoted;
    const { subscribedAt } = await scenarios.failoverRecovery(t, start, {
      rooms,
      users,
      counter,
      inSync: () => scenarios.untilReplicated(victim, redisNames.room("ticking")),
      async failover() {
        const startedAt = Date.now();
        await sentinel.cli(sentinel.sentinelPorts[0], "SENTINEL", "FAILOVER", sentinel.serviceName);
        const promotedAt = await scenarios.watchPromotion(isMaster(replica));
        assert.equal(await sentinel.waitForPromotion(victim), replica, "the sentinels name the replica");
        // The old master stays up, and says it is master, until the sentinels demote it (about
        // 10 s later, and then they cut its clients): writes sent to it meanwhile are lost.
        demoted = until("the old master's demotion", async () => ((await sentinel.role(victim)) === "slave" ? Date.now() : 0), { timeoutMs: 30_000 });
        demoted.catch(() => {});
        return { startedAt, promotedAt };
      },
    });
    const demotedAt = await demoted;
    t.diagnostic(`the old master was demoted ${demotedAt - subscribedAt} ms after every topic was subscribed on the new one`);
    assert.ok(subscribedAt < demotedAt, "the workers moved to the new master while the old one was still up and master");
  });

  scenarios.durabilityTests(test, start, {
    masterOfKey: () => sentinel.masterPort(),
    replicaOf: () => sentinel.replicaPort(),
    lag: (_replica, ms) => sentinel.lagReplica(ms),
    kill: async (port) => assert.equal(await sentinel.killMaster(), port),
    waitForPromotion: (port) => sentinel.waitForPromotion(port),
    restart: (port) => sentinel.restart(port),
    cli: (port, ...args) => sentinel.cli(port, ...args),
  });
});
