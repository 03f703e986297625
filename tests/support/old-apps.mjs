// Clients written the way the old apps wrote them (the seeds' code: event names, payloads, acks),
// for any socket.io client library: pass its `io` (socket.io-client 4.x, or 2.x for the old
// protocol). Each records what it receives; `until(what, check)` waits for a condition.

import { EventEmitter } from "node:events";
import { trackClient } from "./harness.mjs";

const WAIT_MS = 10_000;

function recorder(socket, name) {
  const events = new EventEmitter();
  socket.on("connect", () => events.emit("change"));
  return Object.assign(socket, {
    changed: () => events.emit("change"),
    until(what, check, timeoutMs = WAIT_MS) {
      if (check()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off("change", onChange);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${name}: ${JSON.stringify(socket.summary?.() ?? {})})`));
        }, timeoutMs);
        const onChange = () => {
          if (check()) {
            clearTimeout(timer);
            events.off("change", onChange);
            resolve();
          }
        };
        events.on("change", onChange);
      });
    },
  });
}

/** Emits `event` with an ack callback and resolves with the ack (works with 2.x clients, which
 * have no `timeout()`/`emitWithAck`). */
export function ask(socket, event, payload, timeoutMs = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack to ${event} within ${timeoutMs} ms`)), timeoutMs);
    socket.emit(event, payload, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

function connect(io, url, options) {
  return trackClient(
    io(url, {
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      transports: ["websocket"],
      ...options,
    }),
  );
}

/**
 * The chat + push app (seed 000, `nodejs-socket-redis`): on every connection emits
 * `login {myAuraId, deviceId}` without an ack; takes `chat` as a JSON string of an array of
 * messages and acks with the number it handled (`handle(list)` says how many; all by default);
 * takes `notification` as a JSON string and acks it; records `logout`. `login: false`: no login.
 */
export function chatApp(io, url, myAuraId, deviceId, { handle = (list) => list.length, extra = {}, login = true, ...options } = {}) {
  const socket = recorder(connect(io, url, options), `chat app ${myAuraId}/${deviceId}`);
  Object.assign(socket, { lists: [], raw: [], notifications: [], logouts: 0, handle });
  socket.on("connect", () => {
    if (login) socket.emit("login", { myAuraId, deviceId, ...extra });
  });
  socket.on("chat", (msg, ack) => {
    socket.raw.push(msg);
    const list = JSON.parse(msg);
    socket.lists.push(list);
    if (ack) ack(socket.handle(list));
    socket.changed();
  });
  socket.on("notification", (msg, ack) => {
    socket.notifications.push({ msg, acked: Boolean(ack) });
    if (ack) ack();
    socket.changed();
  });
  socket.on("logout", () => {
    socket.logouts += 1;
    socket.changed();
  });
  socket.on("disconnect", (reason) => {
    socket.lastDisconnect = reason;
    socket.changed();
  });
  socket.summary = () => ({ lists: socket.lists, notifications: socket.notifications, logouts: socket.logouts, connected: socket.connected });
  /** Every message received, in order (lists flattened). */
  socket.messages = () => socket.lists.flat();
  return socket;
}

/**
 * A client of the push service (seed 003) or the notices service (seed 004): on every connection
 * emits `user_login {userId, socketId, tokenId?}` without an ack, and records `receive_message`,
 * `push_message` and `todo_message`.
 */
export function serviceClient(io, url, userId, { tokenId, login = true, ...options } = {}) {
  const socket = recorder(connect(io, url, options), `service client ${userId}`);
  Object.assign(socket, { received: [], pushes: [], todos: [] });
  socket.on("connect", () => {
    if (login) socket.emit("user_login", { userId, socketId: socket.id, ...(tokenId === undefined ? {} : { tokenId }) });
  });
  socket.on("receive_message", (msg) => {
    socket.received.push(msg);
    socket.changed();
  });
  socket.on("push_message", (msg) => {
    socket.pushes.push(msg);
    socket.changed();
  });
  socket.on("todo_message", (msg) => {
    socket.todos.push(msg);
    socket.changed();
  });
  socket.on("disconnect", (reason) => {
    socket.lastDisconnect = reason;
    socket.changed();
  });
  socket.summary = () => ({ received: socket.received, pushes: socket.pushes, todos: socket.todos, connected: socket.connected });
  return socket;
}
