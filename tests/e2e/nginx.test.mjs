// Through real nginx (ip_hash upstream over both workers): the page, and a long-polling-only client.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, member, redisNames, said, sleep, startCluster, startNginx, startRedis, until } from "../support/harness.mjs";

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
    await until("the room channel", async () => (await redis.channels()).includes(redisNames.room("mixed")));

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

describe("scaling out behind nginx", () => {
  after(cleanup);

  test("nginx reloaded with an extra worker port: old connections stay, new ones reach the new worker", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    const [first, second] = cluster.ports.map((p) => `127.0.0.1:${p}`);
    const nginx = await startNginx({ upstreams: [first] });

    // Not reconnecting: a connection cut by the reload would stay cut, and show.
    const early = await member(nginx.url, "scale", "early", { reconnection: false });
    await until("the early client on worker 0", async () => (await cluster.status()).workers[0].connections === 1);
    const earlyId = early.id;
    let earlyCuts = 0;
    early.on("disconnect", () => (earlyCuts += 1));

    nginx.reload([first, second]);
    // ip_hash keys on the first three octets of the client address: try clients from
    // different 127.0.N.1 addresses until one lands on the added worker (bounded).
    const late = [];
    await until(
      "a new connection through nginx to reach the added worker",
      async () => {
        const n = late.length + 1;
        late.push(await member(nginx.url, "scale", `late${n}`, { localAddress: `127.0.${n}.1` }));
        return (await cluster.status()).workers[1].connections > 0;
      },
      { timeoutMs: 15_000, everyMs: 10 },
    );

    // The reload happened (a new connection reached the added worker). The connection made
    // before it is the same socket, never cut, and still works, across workers too.
    await sleep(500);
    assert.equal(earlyCuts, 0, "the early connection was cut");
    assert.equal(early.connected, true);
    assert.equal(early.id, earlyId, "the same socket as before the reload");
    assert.equal((await early.ack("say", { text: "still here after the reload" })).ok, true);
    for (const client of late) await client.next("the early client's message", said("still here after the reload"));

    for (const client of [early, ...late]) client.disconnect();
    await nginx.stop();
    await cluster.stop();
  });
});
