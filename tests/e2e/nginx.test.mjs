// Through real nginx (ip_hash upstream over both workers): the page, and a long-polling-only client.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, member, said, startCluster, startNginx, startRedis, until } from "../support/harness.mjs";

describe("behind nginx", () => {
  let cluster;
  let nginx;
  let redis;
  before(async () => {
    redis = await startRedis();
    cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    nginx = await startNginx({ upstreams: cluster.ports.map((p) => `127.0.0.1:${p}`) });
  });
  after(async () => {
    await nginx?.stop();
    await cluster?.stop();
    await cleanup();
  });

  test("serves the page and the socket.io client itself", async () => {
    const page = await fetch(`${nginx.url}/?roomid=lobby`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /<script src="\/assets\/socket.io.min.js">/);
    const script = await fetch(`${nginx.url}/assets/socket.io.min.js`);
    assert.equal(script.status, 200);
    assert.match(await script.text(), /Socket\.IO v4/);
  });

  test("a polling-only client chats with websocket clients on both workers", async () => {
    const poller = await member(nginx.url, "mixed", "poller", { transports: ["polling"] });
    assert.equal(poller.io.engine.transport.name, "polling");
    const one = await member(cluster.url(0), "mixed", "one");
    const two = await member(cluster.url(1), "mixed", "two");
    await until("every worker to subscribe", async () => (await cluster.status()).workers.every((w) => w.rooms >= 1));
    await until("the room channel", async () => (await redis.channels()).includes("chat:room:mixed"));

    await poller.ack("say", { text: "over long-polling" });
    await one.next("the poller's message on worker 1", said("over long-polling"));
    await two.next("the poller's message on worker 2", said("over long-polling"));
    await one.ack("say", { text: "to the poller" });
    const heard = await poller.next("a websocket client's message", said("to the poller"));
    assert.equal(heard.data.username, "one");
    assert.equal(poller.io.engine.transport.name, "polling", "the client stayed on long-polling");
    for (const c of [poller, one, two]) c.disconnect();
  });
});
