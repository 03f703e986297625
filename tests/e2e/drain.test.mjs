// A worker drained by SIGTERM (every deploy, every rolling restart): every client library takes
// it as "reconnect" — the official JavaScript client and python-socketio (sync and asyncio), over
// websocket and long-polling (issue 15, point 5). python-engineio treats an engine.io CLOSE packet
// as a deliberate server disconnect and never reconnects, so a drain must not send one.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { alive, chatClient, cleanup, said, startCluster, startRedis, until } from "../support/harness.mjs";
import { pythonClient } from "../support/python.mjs";

describe("a drained worker's clients reconnect", () => {
  let redis;
  let cluster;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({ workers: 1, redisUrl: redis.url });
  });
  after(async () => {
    await cluster?.stop();
    await cleanup();
  });

  test("python-socketio (sync, asyncio; websocket, polling) and socket.io-client reconnect after SIGTERM", async () => {
    const url = cluster.url(0);
    const pythons = [];
    for (const mode of ["sync", "async"]) {
      for (const transport of ["websocket", "polling"]) {
        pythons.push(pythonClient(url, "drain", `py-${mode}-${transport}`, { mode, transport }));
      }
    }
    const scripts = [
      chatClient(url, { roomid: "drain", username: "js-websocket" }),
      chatClient(url, { roomid: "drain", username: "js-polling", transports: ["polling"] }),
    ];
    const connects = scripts.map(() => 0);
    scripts.forEach((client, i) => client.on("connect", () => (connects[i] += 1)));
    for (const py of pythons) await py.until("the python client's join", () => py.lines.some((l) => l.event === "join_ack" && l.ack?.ok));
    await until("the JavaScript clients' joins", () => scripts.every((c) => c.joins === 1));

    const before = (await cluster.status()).workers[0];
    process.kill(before.pid, "SIGTERM");
    await until("the drained worker to exit and a new one to serve", async () => {
      const now = (await cluster.status()).workers[0];
      return !alive(before.pid) && now.pid !== before.pid && now.state === "ready";
    });
    for (const py of pythons) {
      await py.until("the python client to reconnect", () => py.connects() >= 2);
      assert.ok(py.lines.some((l) => l.event === "disconnect"), "it saw the drain");
      // A room's messages reach a socket once it has joined (again).
      await py.until("the python client to join again", () => py.lines.filter((l) => l.event === "join_ack" && l.ack?.ok).length >= 2);
    }
    await until("the JavaScript clients to reconnect and join again", () => scripts.every((c, i) => connects[i] >= 2 && c.joins >= 2));

    // Back in the room: a message reaches every client.
    const [speaker] = scripts;
    await speaker.ack("say", { text: "after the drain" });
    for (const py of pythons) {
      await py.until("the say after the drain", () => py.lines.some((l) => l.event === "message" && l.data?.data?.text === "after the drain"));
    }
    await scripts[1].next("the say, over polling", said("after the drain"));
    for (const py of pythons) py.stop();
  });
});
