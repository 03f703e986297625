// The chat page in real headless Chromium (Debian's chromium, driven by playwright-core) through
// real nginx: two people chat, and markup in a message is shown as text and never run.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { cleanup, member, sleep, startCluster, startNginx, startRedis, until } from "../support/harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

describe("the chat page in Chromium", () => {
  let cluster;
  let nginx;
  let browser;
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium is not installed at ${CHROMIUM}: run \`bash scripts/install-deps.sh --with-browser\``);
    }
    const redis = await startRedis();
    cluster = await startCluster({ workers: 2, redisUrl: redis.url });
    nginx = await startNginx({ upstreams: cluster.ports.map((p) => `127.0.0.1:${p}`) });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Flags for a closed network and a root user: no sandbox, no background fetches
      // (playwright gives the browser a fresh temporary profile).
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  });
  after(async () => {
    await browser?.close();
    await nginx?.stop();
    await cluster?.stop();
    await cleanup();
  });

  async function enter(name, room = "lobby") {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${nginx.url}/?roomid=${room}`);
    await page.fill("#name-input", name);
    await page.press("#name-input", "Enter");
    await page.locator("#messages li.join", { hasText: `${name} joined` }).waitFor();
    await page.locator("#status.ok").waitFor();
    return { page, errors };
  }

  test("two pages in one room exchange messages, and markup stays text", async () => {
    const alice = await enter("alice");
    const bob = await enter("bob");
    await alice.page.locator("#messages li.join", { hasText: "bob joined" }).waitFor();

    await alice.page.fill("#say-input", "hello bob");
    await alice.page.press("#say-input", "Enter");
    const line = bob.page.locator("#messages li.say", { hasText: "hello bob" });
    await line.waitFor();
    assert.match(await line.innerText(), /alice:\s*hello bob/);
    // Cleared once the server acknowledged it (which may come after bob has it).
    await alice.page.waitForFunction(() => document.querySelector("#say-input").value === "");

    const attack = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`;
    await bob.page.fill("#say-input", attack);
    await bob.page.press("#say-input", "Enter");
    const shown = alice.page.locator("#messages li.say", { hasText: "<img src=x" });
    await shown.waitFor();
    assert.ok((await shown.innerText()).includes(attack), "the message is shown verbatim");
    assert.equal(await alice.page.locator("#messages img, #messages script").count(), 0, "no element was created from the message");
    // Give a broken image's error handler the chance to fire, had one been created.
    await alice.page.waitForLoadState("networkidle");
    assert.equal(await alice.page.evaluate(() => window.__pwned), undefined, "nothing from the message ran");

    await bob.page.close();
    await alice.page.locator("#messages li.quit", { hasText: "bob left" }).waitFor();
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  test("a newcomer sees the history and who is here; a worker's crash is recovered quietly", async () => {
    const room = "memory";
    const alice = await enter("alice", room);
    await alice.page.fill("#say-input", "said before carol");
    await alice.page.press("#say-input", "Enter");
    await alice.page.locator("#messages li.say", { hasText: "said before carol" }).waitFor();
    const carol = await enter("carol", room);
    await carol.page.locator("#messages li.say.history", { hasText: "said before carol" }).waitFor();
    await carol.page.locator("#member-count", { hasText: "2 people here" }).waitFor();
    assert.deepEqual(await carol.page.locator("#member-list li").allInnerTexts(), ["alice", "carol"]);
    await alice.page.locator("#member-count", { hasText: "2 people here" }).waitFor();

    // Every page reaches the same worker through nginx (ip_hash); someone on the other one
    // keeps talking while the pages' worker is killed and respawned.
    const status = await cluster.status();
    const pages = status.workers.findIndex((w) => w.connections >= 2);
    assert.ok(pages >= 0, `the two pages on one worker: ${JSON.stringify(status.workers)}`);
    const dave = await member(cluster.url(1 - pages), room, "dave");
    await carol.page.locator("#member-count", { hasText: "3 people here" }).waitFor();
    process.kill(status.workers[pages].pid, "SIGKILL");
    await carol.page.locator("#status.wait").waitFor();
    for (let i = 0; i < 3; i++) await dave.ack("say", { text: `while away ${i}` });
    await until("the worker to be back", async () => (await cluster.status()).workers[pages].state === "ready");
    for (const { page } of [alice, carol]) {
      await page.locator("#status.ok").waitFor();
      for (let i = 0; i < 3; i++) await page.locator("#messages li.say", { hasText: `while away ${i}` }).waitFor();
      // Recovered quietly: nobody left or joined again, nothing twice.
      assert.equal(await page.locator("#messages li.quit").count(), 0);
      assert.equal(await page.locator("#messages li.say", { hasText: "while away 0" }).count(), 1);
      assert.equal(await page.locator("#messages li.join", { hasText: "alice joined" }).count(), 1);
    }
    await sleep(500);
    assert.deepEqual(dave.received.filter((m) => m.event === "broadcast_quit" || (m.event === "join" && m.data.username !== "dave")), []);
    assert.deepEqual((await dave.ack("members")).members, ["alice", "carol", "dave"]);
    for (const p of [alice, carol]) {
      assert.deepEqual(p.errors, []);
      await p.page.close();
    }
    dave.disconnect();
  });

  test("an invalid room id is reported on the page", async () => {
    const page = await browser.newPage();
    await page.goto(`${nginx.url}/?roomid=${encodeURIComponent("no spaces")}`);
    await page.fill("#name-input", "carol");
    await page.press("#name-input", "Enter");
    const error = page.locator("#error", { hasText: "invalid room id" });
    await error.waitFor();
    await page.close();
  });
});
