// A short soak in CI: clients held with churn and traffic; worker memory must not grow with
// churn. The long run is `bash scripts/soak.sh` (figures in BENCHMARKS.md).

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cleanup, startCluster, startRedis } from "../support/harness.mjs";
import { soak } from "../support/soak.mjs";

const CLIENTS = 150;
const CHURN_PER_SEC = 40;
/** KiB of worker RSS (both workers) allowed per connection replaced after the warm sample. */
const GROWTH_PER_CHURNED_KIB = 4;

describe("soak", () => {
  after(cleanup);

  test("memory after churn stays near its level before churn", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ workers: 2, redisUrl: redis.url, extraArgs: ["--rate-per-sec", "100", "--rate-burst", "100"] });
    const result = await soak({
      urls: [cluster.url(0), cluster.url(1)],
      statusUrl: `http://127.0.0.1:${cluster.adminPort}/status`,
      clients: CLIENTS,
      seconds: 12,
      churnPerSec: CHURN_PER_SEC,
      saysPerSec: 30,
      // The worker's default --history-size: each join during the run carries a full page.
      prefillPerRoom: 50,
    });
    const { rss_kib: rss } = result;
    const summary = JSON.stringify({ ...result, samples: undefined });
    // No worker crashed or was replaced mid-run (a dead worker's RSS would read 0).
    assert.deepEqual(result.pids.end, result.pids.start, `the same worker processes: ${summary}`);
    assert.equal(result.restarts, 0, summary);
    assert.ok(result.min_worker_rss_kib > 0, `a worker's RSS read 0: ${summary}`);
    assert.equal(result.connected, CLIENTS, "every client connected");
    assert.equal(result.connect_errors, 0);
    assert.ok(result.received > result.said, `messages flowed: ${result.said} said, ${result.received} received`);
    // Every count back to zero once every client left.
    assert.deepEqual(result.after_disconnect, { connections: 0, rooms: 0 }, summary);
    // Growth per connection replaced after the warm sample: an idle connection holds about
    // 10 KiB (BENCHMARKS.md), so a leak of what a connection holds would show as several KiB
    // per replaced one; the allocator's own warm-up stays under the bound.
    const perChurned = (rss.end_loaded - rss.warm) / result.churned_after_warm;
    assert.ok(perChurned <= GROWTH_PER_CHURNED_KIB, `RSS grew ${perChurned.toFixed(2)} KiB per replaced connection: ${summary}`);
    assert.ok(rss.after_disconnect <= rss.end_loaded + 1024, `RSS grew after every client left: ${summary}`);
    await cluster.stop();
  });
});
