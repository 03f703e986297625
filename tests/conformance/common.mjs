// Helpers shared by our engine.io and socket.io protocol suites: a websocket that queues what
// it receives, and small HTTP helpers. Every wait is bounded.

import WebSocket from "ws";

const WAIT_MS = 3000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A websocket whose incoming frames wait in a queue until taken with `next()`. */
export function openSocket(url) {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const queue = [];
  const waiters = [];
  let closed = false;
  const push = (item) => (waiters.length ? waiters.shift()(item) : queue.push(item));
  socket.on("message", (data, isBinary) => push(isBinary ? new Uint8Array(data) : data.toString()));
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
  return Object.assign(socket, {
    /** The next frame (a string, or a Uint8Array for binary), or null once closed. */
    next: (what = "a frame") => take(what, false),
    /** The next frame that is not an engine.io ping. */
    nextPacket: (what = "a packet") => take(what, true),
    /** Resolves once the server closed the connection. */
    closedByServer: () =>
      new Promise((resolve, reject) => {
        if (closed) return resolve();
        const timer = setTimeout(() => reject(new Error(`not closed within ${WAIT_MS} ms`)), WAIT_MS);
        socket.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
      }),
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
