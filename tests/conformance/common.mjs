// Helpers shared by our engine.io and socket.io protocol suites: a websocket that queues what
// it receives, and small HTTP helpers. Every wait is bounded.

import WebSocket from "ws";

const WAIT_MS = 3000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** How soon after its trigger a close must come. The fixture pings every 300 ms and gives up
 * 200 ms later; a socket opened with `{ pong: true }` answers every ping, so a close within
 * this bound is the server acting on the trigger, never the heartbeat timing out. */
export const CLOSE_WITHIN_MS = 1000;

/** A websocket whose incoming frames wait in a queue until taken with `next()`. With
 * `{ pong: true }` it answers every engine.io ping at once (the ping stays in the queue). */
export function openSocket(url, { pong = false } = {}) {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const queue = [];
  const waiters = [];
  let closed = false;
  let openedAt = null;
  const push = (item) => (waiters.length ? waiters.shift()(item) : queue.push(item));
  // The HTTP answer to the upgrade request: 101, or the status of a refusal.
  const upgradeStatus = new Promise((resolve) => {
    socket.once("upgrade", (response) => {
      openedAt = Date.now();
      resolve(response.statusCode);
    });
    socket.once("unexpected-response", (request, response) => {
      resolve(response.statusCode);
      response.resume();
      request.destroy();
    });
    socket.once("close", () => resolve(null));
  });
  socket.on("message", (data, isBinary) => {
    const item = isBinary ? new Uint8Array(data) : data.toString();
    if (pong && item === "2" && socket.readyState === WebSocket.OPEN) socket.send("3");
    push(item);
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    closed = true;
    while (waiters.length) waiters.shift()(null);
  });
  const take = (what, skipPings) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
      const deliver = (item) => {
        if (skipPings && item === "2") return waiters.unshift(deliver);
        clearTimeout(timer);
        resolve(item);
      };
      while (queue.length) {
        const item = queue.shift();
        if (!(skipPings && item === "2")) return deliver(item);
      }
      if (closed) return deliver(null);
      waiters.push(deliver);
    });
  /** Resolves with the milliseconds from the call to the server's close; rejects if it takes
   * longer than `within` ms. Only meaningful on a socket that answers pings. */
  const closedByServer = (within = CLOSE_WITHIN_MS) =>
    new Promise((resolve, reject) => {
      const start = Date.now();
      if (closed) return resolve(0);
      const timer = setTimeout(() => reject(new Error(`not closed within ${within} ms`)), within);
      socket.once("close", () => {
        clearTimeout(timer);
        resolve(Date.now() - start);
      });
    });
  return Object.assign(socket, {
    /** The next frame (a string, or a Uint8Array for binary), or null once closed. */
    next: (what = "a frame") => take(what, false),
    /** The next frame that is not an engine.io ping. */
    nextPacket: (what = "a packet") => take(what, true),
    closedByServer,
    /** The HTTP status the upgrade request was answered with (101 when it opened). */
    upgradeStatus: () =>
      Promise.race([upgradeStatus, sleep(WAIT_MS).then(() => Promise.reject(new Error(`no upgrade answer within ${WAIT_MS} ms`)))]),
    /** When the websocket opened (Date.now()), or null. */
    openedAt: () => openedAt,
    opened: () =>
      new Promise((resolve, reject) => {
        if (socket.readyState === WebSocket.OPEN) return resolve();
        socket.once("open", resolve);
        socket.once("error", reject);
      }),
  });
}

/** GET or POST with a bounded wait; resolves with {status, text}. */
export async function http(url, { method = "GET", body } = {}) {
  try {
    const response = await fetch(url, { method, body, signal: AbortSignal.timeout(WAIT_MS) });
    return { status: response.status, text: await response.text() };
  } catch (err) {
    // A server that closes the request abnormally: treated as "not served".
    return { status: 0, text: String(err) };
  }
}

/** Checks an engine.io handshake payload (`0{...}`). */
export function parseOpen(assert, packet, { upgrades, pingInterval = 300, pingTimeout = 200, maxPayload = 1000000 }) {
  assert.ok(typeof packet === "string" && packet.startsWith("0"), `an open packet: ${packet}`);
  const open = JSON.parse(packet.slice(1));
  assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
  assert.equal(typeof open.sid, "string");
  assert.deepEqual(open.upgrades, upgrades);
  assert.equal(open.pingInterval, pingInterval);
  assert.equal(open.pingTimeout, pingTimeout);
  assert.equal(open.maxPayload, maxPayload);
  return open;
}
