// Faults under load, with every part real: clients through nginx spread over both workers,
// steady room traffic and direct messages, then a worker SIGKILLed and Redis restarted mid-load.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { alive, cleanup, member, redisCommand, redisNames, said, sleep, startCluster, startNginx, startRedis, until, untilCrosses } from "../support/harness.mjs";
import { person } from "../support/people.mjs";

const ROOMS = ["north", "south", "east"];
const CLIENTS = 30;

/** Room members, member n connecting to `urlOf(n)` from 127.0.N.1 (through nginx, ip_hash
 * spreads them over the workers). */
async function crowd(urlOf) {
  return Promise.all(
    Array.from({ length: CLIENTS }, (_, n) =>
      member(urlOf(n), ROOMS[n % ROOMS.length], `m${n}`, { localAddress: `127.0.${n + 1}.1` }),
    ),
  );
}

/**
 * Steady traffic until `stop()`: every 100 ms a third of the crowd says something (errors from
 * clients that are reconnecting are expected and counted), and ann, while logged in, sends bob
 * a direct message. Each direct message ends up in exactly one of: `stored` (acked, its id),
 * `refusals` (answered with an error, by code), `cut` (no answer, and ann's connection was cut
 * meanwhile) or `timeouts` (no answer on a connection that stayed up: never acceptable).
 */
function load(members, ann) {
  const state = { said: 0, refused: 0, dms: 0, stored: [], refusals: {}, cut: 0, timeouts: 0, annCuts: 0, running: true };
  // ann sends only once logged in on her current connection (a send between a reconnection
  // and its login would be refused not_logged_in, which is not what these tests are about).
  let annReady = true;
  let loginsAtCut = 0;
  ann.on("disconnect", () => {
    state.annCuts += 1;
    annReady = false;
    loginsAtCut = ann.logins.length;
  });
  let tick = 0;
  const timer = setInterval(() => {
    tick += 1;
    members.filter((_, i) => i % 3 === tick % 3).forEach((m) => {
      if (!m.connected) return;
      m.ack("say", { text: `load ${tick}` }, 2000).then(
        (a) => (a.ok ? (state.said += 1) : (state.refused += 1)),
        () => (state.refused += 1),
      );
    });
    if (!annReady && ann.connected && ann.logins.length > loginsAtCut && ann.logins.at(-1)?.ok) annReady = true;
    if (annReady && ann.connected) {
      state.dms += 1;
      const cutsAtSend = state.annCuts;
      ann.dm("bob", `dm ${tick}`, {}, 4000).then(
        (a) => {
          if (a.ok) state.stored.push(a.id);
          else state.refusals[a.error?.code] = (state.refusals[a.error?.code] ?? 0) + 1;
        },
        () => (state.annCuts !== cutsAtSend ? (state.cut += 1) : (state.timeouts += 1)),
      );
    }
  }, 100);
  state.stop = async () => {
    clearInterval(timer);
    state.running = false;
    await sleep(4500); // every answer in flight arrives or times out
  };
  /** Every send accounted for, none timed out on a live connection, every refusal `unavailable`. */
  state.check = (assert) => {
    const refused = Object.values(state.refusals).reduce((a, b) => a + b, 0);
    const summary = JSON.stringify({ dms: state.dms, stored: state.stored.length, refusals: state.refusals, cut: state.cut, timeouts: state.timeouts });
    assert.equal(state.timeouts, 0, `direct messages unanswered on a live connection: ${summary}`);
    assert.deepEqual(Object.keys(state.refusals).filter((code) => code !== "unavailable"), [], `refusals other than unavailable: ${summary}`);
    assert.equal(state.stored.length + refused + state.cut, state.dms, `every send accounted for: ${summary}`);
    return summary;
  };
  // Bounded whatever happens: no test runs the load longer than 60 s.
  setTimeout(() => clearInterval(timer), 60_000).unref();
  return state;
}

describe("faults under load", () => {
  after(cleanup);

  test("a worker SIGKILLed under load: respawned, clients back through nginx, counts right within 2 s, no stored message lost", async () => {
    const redis = await startRedis({ persistent: true });
    // The direct-message stream runs above the default per-sender rate on purpose.
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--sender-rate-per-sec", "1000", "--sender-rate-burst", "1000"] });
    const nginx = await startNginx({ upstreams: cluster.ports.map((p) => `127.0.0.1:${p}`) });
    const members = await crowd(() => nginx.url);
    await until("the supervisor to count the crowd", async () => (await cluster.status()).total_connections === CLIENTS);
    const perWorker = (await cluster.status()).workers.map((w) => w.connections);
    assert.ok(perWorker.every((n) => n > 0), `clients spread over both workers: ${perWorker}`);
    const ann = person(nginx.url, "ann", "phone", { localAddress: "127.0.101.1" });
    const bob = person(nginx.url, "bob", "phone", { localAddress: "127.0.102.1" });
    await Promise.all([ann.loggedIn(), bob.loggedIn()]);
    const people = 2;

    const traffic = load(members, ann);
    await sleep(1500);
    const victim = (await cluster.status()).workers[0];
    const mark = cluster.lines.length;
    process.kill(victim.pid, "SIGKILL");
    await cluster.waitLine(`worker_exited of pid ${victim.pid}`, (l) => l.event === "worker_exited" && l.pid === victim.pid, { since: mark });
    assert.equal(alive(victim.pid), false, "the victim is gone");
    await cluster.waitLine("the respawn", (l) => l.event === "worker_ready" && l.id === 0, { since: mark });
    await until("every client to reconnect through nginx", () => members.every((m) => m.connected) && ann.connected && bob.connected, {
      timeoutMs: 15_000,
    });
    const back = Date.now();
    await until(
      "the supervisor to count every client",
      async () => (await cluster.status()).total_connections === CLIENTS + people,
      { timeoutMs: 2000 },
    );
    assert.ok(Date.now() - back <= 2000);
    await sleep(1500);
    await traffic.stop();

    assert.ok(traffic.said > 100, `the load ran: ${traffic.said} says`);
    assert.ok(traffic.stored.length > 20, `direct messages were stored: ${traffic.stored.length}`);
    traffic.check(assert);
    await bob.until("every stored direct message", () => traffic.stored.every((id) => bob.messages.some((m) => m.id === id)), 15_000);
    // Rooms span the workers again.
    const [a, b] = [members.find((_, i) => i % 3 === 0), members.find((_, i) => i % 3 === 0 && i > 0)];
    await untilCrosses(a, b, "after the respawn");
    for (const c of [...members, ann, bob]) c.disconnect();
    await nginx.stop();
    await cluster.stop();
  });

  test("Redis restarted under load: local delivery goes on, readiness says degraded, rooms resubscribe, stored messages survive", async () => {
    const redis = await startRedis({ persistent: true });
    // The direct-message stream runs above the default per-sender rate on purpose.
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--sender-rate-per-sec", "1000", "--sender-rate-burst", "1000"] });
    const members = await crowd((n) => cluster.url(n % 2));
    const neighbours = [await member(cluster.url(0), "local", "left"), await member(cluster.url(0), "local", "right")];
    const ann = person(cluster.url(0), "ann", "phone");
    const bob = person(cluster.url(1), "bob", "phone", { ack: "hold" });
    await Promise.all([ann.loggedIn(), bob.loggedIn()]);

    const traffic = load(members, ann);
    await sleep(1000);
    await redis.stop();
    await until("worker 0 to report degraded", async () => (await fetch(`${cluster.url(0)}/ready`)).status === 503);
    assert.equal((await neighbours[0].ack("say", { text: "during the outage" })).ok, true);
    await neighbours[1].next("same-worker delivery during the outage", said("during the outage"));
    // Longer than the workers' 2 s Redis command timeout: sends early in the outage are refused.
    await sleep(3000);
    await redis.restart();
    await until("both workers ready again", async () => {
      const states = await Promise.all([0, 1].map((i) => fetch(`${cluster.url(i)}/ready`)));
      return states.every((r) => r.ok);
    });
    await sleep(1000);
    await traffic.stop();

    const channels = await redis.channels();
    for (const room of [...ROOMS, "local"]) assert.ok(channels.includes(redisNames.room(room)), `${room} resubscribed: ${channels}`);
    assert.ok(channels.includes(redisNames.user("bob")), "bob's channel resubscribed");
    // Every direct message was either stored (acked) or refused `unavailable`, and answered:
    // ann's worker and connection stayed up. (fred holds commands up to 2 s while Redis is
    // away, so a short outage delays sends more than it fails them.)
    assert.equal(traffic.annCuts, 0, "ann's connection stayed up");
    const summary = traffic.check(assert);
    assert.equal(traffic.cut, 0, summary);
    assert.ok(traffic.refusals.unavailable > 0, `the outage refused some sends: ${summary}`);
    // Bob held his acks, so every stored message is still in Redis after the restart...
    const waiting = Number((await redisCommand(redis.port, "XLEN", redisNames.inbox("bob"))).slice(1));
    // At least: a send whose script ran just as Redis stopped may be stored without an ack.
    assert.ok(waiting >= traffic.stored.length, `the inbox survived the restart: ${waiting} < ${traffic.stored.length}`);
    // ...and comes to him (again) at his next login: only what arrives from then on counts.
    bob.ackMode = "auto";
    const cut = bob.messages.length;
    const afterLogin = () => new Set(bob.messages.slice(cut).map((m) => m.id));
    bob.disconnect().connect();
    await bob.loggedIn(2);
    await bob.until(
      "every stored message again after the reconnection",
      () => traffic.stored.every((id) => afterLogin().has(id)),
      15_000,
    );
    for (const c of [...members, ...neighbours, ann, bob]) c.disconnect();
    await cluster.stop();
  });
});
