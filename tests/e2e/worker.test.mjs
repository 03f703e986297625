// One `chat-cluster worker` run alone, as the README allows: its HTTP endpoints, and chat between
// its own clients while its Redis is not there at all (local delivery never waits for Redis).

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, freePort, member, said, startWorker, within } from "../support/harness.mjs";

describe("a worker alone", () => {
  after(cleanup);

  test("serves its endpoints and local rooms without Redis, and stops on SIGTERM", async () => {
    // A port nothing listens on: the bus cannot connect.
    const worker = await startWorker({ redisUrl: `redis://127.0.0.1:${await freePort()}` });

    const monitor = await fetch(`${worker.url}/monitor`);
    assert.equal(monitor.status, 200);
    assert.equal((await monitor.text()).trim(), "OK");
    const ready = await fetch(`${worker.url}/ready`);
    assert.equal(ready.status, 503, "/ready reports the missing Redis bus");
    const page = await fetch(`${worker.url}/?roomid=lobby`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /text\/html/);

    const ann = await member(worker.url, "alone", "ann", { reconnection: false });
    const bob = await member(worker.url, "alone", "bob", { reconnection: false });
    const joined = await ann.next("bob's join", (m) => m.event === "join" && m.data.username === "bob");
    assert.equal(joined.room, "alone");
    const ack = await ann.ack("say", { text: "no redis needed" });
    assert.equal(ack.ok, true);
    const heard = await bob.next("ann's message", said("no redis needed"));
    assert.deepEqual(heard.data, { username: "ann", text: "no redis needed" });
    const own = await ann.next("ann's own message", said("no redis needed"));
    assert.equal(own.id, ack.id);

    const disconnects = [ann, bob].map((c) => new Promise((resolve) => c.once("disconnect", resolve)));
    const { code, signal } = await worker.stop();
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, "a worker stopped by SIGTERM exits 0");
    await within("both clients to be disconnected", Promise.all(disconnects));
  });

  test("limits set by its flags: the rate budget, unknown events included, and the message size", async () => {
    const worker = await startWorker({
      redisUrl: `redis://127.0.0.1:${await freePort()}`,
      // 4096 bytes hold any text of 250 characters however it is escaped (12 × 250 + 640), and
      // any free-form object of 1152 bytes (3 × 1152 + 640).
      extraArgs: ["--rate-per-sec", "1", "--rate-burst", "3", "--max-message-bytes", "4096", "--max-text-chars", "250", "--max-object-bytes", "1152"],
    });
    // The join spends one event of ann's burst of 3, an unknown event the second.
    const ann = await member(worker.url, "limits", "ann", { reconnection: false });
    const bob = await member(worker.url, "limits", "bob", { reconnection: false });
    assert.equal((await ann.ack("nope", {})).error.code, "unknown_event");
    assert.equal((await ann.ack("say", { text: "one" })).ok, true);
    const refused = await ann.ack("say", { text: "two" });
    assert.equal(refused.error?.code, "rate_limited", JSON.stringify(refused));
    assert.match(refused.error.message, /at most 1 per second/);
    // bob's budget is his own; up to his own message, he heard exactly ann's accepted one.
    assert.equal((await bob.ack("say", { text: "mine" })).ok, true);
    await bob.next("bob's own message", said("mine"));
    const fromAnn = bob.received.filter((m) => m.event === "broadcast_say" && m.data.username === "ann").map((m) => m.data.text);
    assert.deepEqual(fromAnn, ["one"]);

    // A websocket message over --max-message-bytes closes that connection only.
    const cut = new Promise((resolve) => ann.once("disconnect", resolve));
    ann.emit("say", { text: "x".repeat(5000) });
    await within("the oversized sender to be cut off", cut);
    assert.equal((await bob.ack("say", { text: "unaffected" })).ok, true);
    bob.disconnect();
    await worker.stop();
  });
});
