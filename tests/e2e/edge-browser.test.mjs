// The edge in real headless Chromium: a cross-origin socket.io client with extraHeaders over
// long-polling (CORS preflight), and the page showing the authenticated user id under
// --auth jwt.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { cleanup, startRedis, startWorker } from "../support/harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const JWT_SECRET = "edge-test-secret-0123456789abcdefghij";
const base64url = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
function jwt(claims) {
  const head = `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url(claims)}`;
  return `${head}.${crypto.createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`;
}

describe("the edge in Chromium", () => {
  let redis;
  let browser;
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium is not installed at ${CHROMIUM}: run \`bash scripts/install-deps.sh --with-browser\``);
    }
    redis = await startRedis();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });
  after(async () => {
    await browser?.close();
    await cleanup();
  });

  test("a cross-origin client with extraHeaders connects over long-polling", async () => {
    // The page comes from 127.0.0.1:<port>; the socket goes to localhost:<port>, another origin
    // that the worker allows.
    const probe = await startWorker({ redisUrl: redis.url });
    const pageOrigin = probe.url;
    const worker = await startWorker({ redisUrl: redis.url, env: { CHAT_ALLOWED_ORIGINS: pageOrigin } });
    const page = await browser.newPage();
    await page.goto(`${pageOrigin}/?roomid=cors`);
    const target = `http://localhost:${worker.port}`;
    const ack = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          // The page's own socket.io client build (served by the worker).
          const socket = io(url, {
            transports: ["polling"],
            reconnection: false,
            query: { roomid: "cors" },
            extraHeaders: { authorization: "Bearer app-token", "x-client": "edge-test/1" },
          });
          socket.on("connect_error", (err) => resolve({ connectError: err.message }));
          socket.on("connect", () => socket.emit("join", { username: "cors" }, resolve));
          setTimeout(() => resolve({ timeout: true }), 8000);
        }),
      target,
    );
    assert.equal(ack.ok, true, `the join went through: ${JSON.stringify(ack)}`);
    await page.close();
  });

  test("the page shows the authenticated user id next to the chosen name", async () => {
    const worker = await startWorker({
      redisUrl: redis.url,
      extraArgs: ["--auth", "jwt"],
      env: { CHAT_JWT_SECRET: JWT_SECRET },
    });
    const context = await browser.newContext();
    const exp = Math.floor(Date.now() / 1000) + 300;
    await context.addCookies([{ name: "chat_token", value: jwt({ sub: "u-page", exp }), url: worker.url }]);
    const page = await context.newPage();
    await page.goto(`${worker.url}/?roomid=ids`);
    await page.fill("#name-input", "Ann");
    await page.press("#name-input", "Enter");
    await page.locator("#status.ok").waitFor();
    await page.fill("#say-input", "who am I");
    await page.press("#say-input", "Enter");
    const line = page.locator("#messages li.say", { hasText: "who am I" });
    await line.waitFor();
    assert.equal(await line.locator(".uid").innerText(), "@u-page");
    assert.match(await line.innerText(), /Ann\s*@u-page:\s*who am I/);
    await context.close();
  });
});
