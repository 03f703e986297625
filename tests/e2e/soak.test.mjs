// A short soak in CI: clients held with churn and traffic; worker memory must not grow with
// churn. The long run is `bash scripts/soak.sh` (figures in BENCHMARKS.md).

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, startCluster, startRedis } from "../support/harness.mjs";
import { soak } from "../support/soak.mjs";

describe("soak", () => {
  after(cleanup);

  test("memory after churn stays near its level before churn", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--rate-per-sec", "100", "--rate-burst", "100"] });
    const result = await soak({
      urls: [cluster.url(0), cluster.url(1)],
      statusUrl: `http://127.0.0.1:${cluster.adminPort}/status`,
      clients: 150,
      seconds: 12,
      churnPerSec: 15,
      saysPerSec: 30,
    });
    const { rss_kib: rss } = result;
    assert.equal(result.connected, 150, "every client connected");
    assert.equal(result.connect_errors, 0);
    assert.ok(result.received > result.said, `messages flowed: ${result.said} said, ${result.received} received`);
    // Churn replaced 180 clients (more than the 150 held); a leak per connection would show.
    // The bound: 20% over the warm level, plus 4 MiB for allocator and queue slack.
    assert.ok(rss.end_loaded <= rss.warm * 1.2 + 4096, `RSS grew with churn: ${JSON.stringify(rss)}`);
    assert.ok(rss.after_disconnect <= rss.end_loaded + 1024, `RSS grew after every client left: ${JSON.stringify(rss)}`);
    await cluster.stop();
  });
});
