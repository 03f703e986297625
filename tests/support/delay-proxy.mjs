// A TCP proxy in front of a Redis server that holds back traffic by a fixed delay, in both
// directions and in order: a slow network between one worker and Redis, on loopback.

import net from "node:net";
import { trackClient } from "./harness.mjs";

/**
 * Starts a proxy on a free loopback port that forwards to Redis on `targetPort`.
 * `delayed: "all"` delays every connection's bytes by `delayMs` each way; `delayed: "subscriber"`
 * delays only connections that have sent a SUBSCRIBE or SSUBSCRIBE (a worker's subscriber
 * connection), from the chunk carrying that command on, so commands on other connections
 * reach Redis at once. `delayed: (text) => boolean` holds back only the client chunks whose
 * text matches (and, to keep the order, whatever follows them on that connection until they
 * leave); answers are not delayed. Resolves with `{port, url, close()}`; `close()` is also
 * called by the harness's `cleanup()`.
 */
export function startDelayProxy(targetPort, { delayMs, delayed = "all" }) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const selective = typeof delayed === "function";
    let delaying = delayed === "all";
    // Each direction keeps its own clock so chunks leave in the order they came: a chunk never
    // leaves before one that came before it.
    const forward = (to) => {
      let lastDue = 0;
      return (chunk, delay) => {
        const due = Math.max(Date.now() + delay, lastDue);
        lastDue = due;
        if (due <= Date.now()) to.write(chunk);
        else setTimeout(() => to.destroyed || to.write(chunk), due - Date.now());
      };
    };
    const toUpstream = forward(upstream);
    const toClient = forward(client);
    client.on("data", (chunk) => {
      const text = chunk.toString("latin1");
      if (selective) {
        toUpstream(chunk, delayed(text) ? delayMs : 0);
        return;
      }
      if (!delaying && delayed === "subscriber" && /subscribe/i.test(text)) delaying = true;
      toUpstream(chunk, delaying ? delayMs : 0);
    });
    upstream.on("data", (chunk) => toClient(chunk, delaying ? delayMs : 0));
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
