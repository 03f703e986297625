// A TCP proxy in front of a Redis server that holds back traffic by a fixed delay, in both
// directions and in order: a slow network between one worker and Redis, on loopback.

import net from "node:net";
import { trackClient } from "./harness.mjs";

/**
 * Starts a proxy on a free loopback port that forwards to Redis on `targetPort`.
 * `delayed: "all"` delays every connection's bytes by `delayMs` each way; `delayed: "subscriber"`
 * delays only connections that have sent a SUBSCRIBE or SSUBSCRIBE (a worker's subscriber
 * connection), from the chunk carrying that command on, so commands on other connections
 * reach Redis at once. Resolves with `{port, url, close()}`; `close()` is also called by the
 * harness's `cleanup()`.
 */
export function startDelayProxy(targetPort, { delayMs, delayed = "all" }) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    let delaying = delayed === "all";
    // Each direction keeps its own clock so chunks leave in the order they came.
    const forward = (to) => {
      let lastDue = 0;
      return (chunk) => {
        if (!delaying) {
          to.write(chunk);
          return;
        }
        const due = Math.max(Date.now() + delayMs, lastDue);
        lastDue = due;
        setTimeout(() => to.destroyed || to.write(chunk), due - Date.now());
      };
    };
    const toUpstream = forward(upstream);
    const toClient = forward(client);
    client.on("data", (chunk) => {
      if (!delaying && delayed === "subscriber" && /subscribe/i.test(chunk.toString("latin1"))) delaying = true;
      toUpstream(chunk);
    });
    upstream.on("data", toClient);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve(
        trackClient({
          port,
          url: `redis://127.0.0.1:${port}`,
          close() {
            for (const socket of sockets) socket.destroy();
            server.close();
          },
        }),
      );
    });
  });
}
