// A login is made or abandoned, never half of each (issue 15, point 2): a client that sends
// `login` and drops its TCP connection at once either gets a complete login (its login hook, the
// kick-out of the user's other device, and exactly one logout hook when it ends), or none of it.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { cleanup, sleep, startCluster, startRedis, until } from "../support/harness.mjs";
import { person, subscribe } from "../support/people.mjs";

/** Opens a raw socket.io connection, sends `login`, and drops the TCP connection `delayMs` later. */
async function loginAndDrop(url, userId, deviceId, delayMs) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
  const connected = new Promise((resolve, reject) => {
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith("0")) ws.send("40");
      if (text.startsWith("40")) resolve();
    });
    ws.on("error", reject);
  });
  await connected;
  ws.send(`42["login",${JSON.stringify({ userId, deviceId })}]`);
  if (delayMs > 0) await sleep(delayMs);
  ws.terminate();
  await new Promise((resolve) => ws.once("close", resolve));
}

describe("logins dropped mid-way", () => {
  let redis;
  let cluster;
  let hooks;
  const abandonLines = [];
  before(async () => {
    redis = await startRedis();
    hooks = await subscribe(redis.port, "login_message_channel");
    // The workers' debug line says when one abandons a login; nothing else is logged at debug.
    cluster = await startCluster({ workers: 2, redisUrl: redis.url, env: { RUST_LOG: "warn,chat_worker::people=debug" } });
    let partial = "";
    cluster.child.stderr.on("data", (chunk) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop();
      abandonLines.push(...lines.filter((line) => line.includes("login abandoned")));
    });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  const hooksOf = (userId, deviceId, event) =>
    hooks.messages.login_message_channel.filter((h) => h.userId === userId && h.deviceId === deviceId && h.event === event).length;
  const abandoned = (userId) => abandonLines.some((line) => new RegExp(`user=${userId}(\\s|$)`).test(line));

  /** Waits until the login of `userId` from `deviceId` is settled one way or the other. */
  async function settled(userId, deviceId) {
    await until(`the login of ${userId}/${deviceId} to be made or abandoned`, () => hooksOf(userId, deviceId, "login") > 0 || abandoned(userId));
    return hooksOf(userId, deviceId, "login") > 0 ? "made" : "abandoned";
  }

  test("20 users dropping right after login: every login hook has exactly one logout hook", async () => {
    const users = Array.from({ length: 20 }, (_, i) => `drop${i}`);
    await Promise.all(users.map((user, i) => loginAndDrop(cluster.url(0), user, "web", i % 4)));
    await until("every dropped connection to be closed on the worker", async () => (await cluster.status()).total_connections === 0);
    const outcomes = {};
    for (const user of users) {
      const outcome = await settled(user, "web");
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      if (outcome === "made") {
        await until(`${user}'s logout hook`, () => hooksOf(user, "web", "logout") === 1, { timeoutMs: 3000 });
      }
      assert.equal(hooksOf(user, "web", "login"), outcome === "made" ? 1 : 0, `${user}: login hooks`);
      assert.equal(hooksOf(user, "web", "logout"), outcome === "made" ? 1 : 0, `${user}: logout hooks`);
    }
    console.log(`outcomes of 20 dropped logins: ${JSON.stringify(outcomes)}`);
  });

  test("a dropped web login signs the phone out only if it was made", async () => {
    const outcomes = [];
    for (const [round, delayMs] of [0, 0, 0, 1, 2, 5, 10, 20].entries()) {
      const user = `pat${round}`;
      // The phone on the other worker: the web login's worker has no socket of the user and
      // waits for the user channel's subscription, the window in which a drop abandons it.
      const phone = person(cluster.url(1), user, "phone", { reconnection: false });
      await phone.loggedIn();
      await loginAndDrop(cluster.url(0), user, "web", delayMs);
      const outcome = await settled(user, "web");
      outcomes.push(outcome);
      if (outcome === "made") {
        await phone.until("the phone's logout notice", () => phone.logouts.length === 1);
        assert.equal(phone.logouts[0].deviceId, "web");
        await until(`${user}/web's one logout hook`, () => hooksOf(user, "web", "logout") === 1, { timeoutMs: 3000 });
      } else {
        // Abandoned: no hook, and the phone is still logged in and served.
        const beat = await phone.ack_("hb");
        assert.equal(beat.ok, true);
        assert.equal(phone.logouts.length, 0, "the phone was not signed out");
        assert.equal(phone.connected, true);
        assert.equal(hooksOf(user, "web", "login") + hooksOf(user, "web", "logout"), 0, "an abandoned login has no hooks");
      }
      phone.disconnect();
    }
    console.log(`outcomes by round: ${outcomes.join(", ")}`);
  });
});
