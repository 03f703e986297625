// Test helpers for people features: a logged-in socket.io client that records direct messages
// and logouts, and a Redis subscriber that records hook messages.

import net from "node:net";
import { EventEmitter } from "node:events";
import { io } from "socket.io-client";
import { trackClient } from "./harness.mjs";

const WAIT_MS = 10_000;

/** Resolves once `check()` holds, re-checked on every "change" of `events`. */
function untilChanged(events, what, check, seen, timeoutMs) {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      events.off("change", onChange);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; seen: ${seen()}`));
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
}

/**
 * A socket.io client that logs in as `userId` from `deviceId` on every (re)connection and
 * records every direct message it is given. `ack: "auto"` acknowledges each `chat` event at
 * once; `ack: "hold"` keeps the ack callbacks in `held` until `releaseAcks()`.
 */
export function person(url, userId, deviceId, { ack = "auto", ...options } = {}) {
  // userId may be undefined: with handshake authentication the token names the user.
  const socket = trackClient(
    io(url, {
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      transports: ["websocket"],
      ...options,
    }),
  );
  const events = new EventEmitter();
  Object.assign(socket, {
    /** Every message delivered, in arrival order (arrays flattened). */
    messages: [],
    /** How many `chat` events arrived, and how many carried arrays. */
    chatEvents: 0,
    batches: 0,
    logins: [],
    logouts: [],
    held: [],
    ackMode: ack,
  });
  const state = socket;
  socket.on("chat", (payload, callback) => {
    state.chatEvents += 1;
    const list = Array.isArray(payload) ? payload : [payload];
    if (Array.isArray(payload)) state.batches += 1;
    state.messages.push(...list);
    if (typeof callback === "function") {
      if (state.ackMode === "auto") callback({ ok: true });
      else state.held.push(callback);
    }
    events.emit("change");
  });
  // Every other server event (notification, push_message, receive_message, custom push events)
  // is recorded in `seen`; one sent with an ack is acknowledged at once.
  socket.seen = [];
  socket.onAny((event, ...args) => {
    if (event === "chat") return;
    const callback = typeof args.at(-1) === "function" ? args.pop() : null;
    socket.seen.push({ event, payload: args[0], acked: Boolean(callback) });
    if (callback) callback({ ok: true });
    events.emit("change");
  });
  socket.on("logout", (notice) => {
    state.logouts.push(notice);
    events.emit("change");
  });
  socket.on("connect", () => {
    socket.emit("login", { userId, deviceId }, (answer) => {
      state.logins.push(answer);
      events.emit("change");
    });
  });
  socket.on("disconnect", (reason) => {
    state.lastDisconnect = reason;
    events.emit("change");
  });

  return Object.assign(socket, {
    /** Resolves once `check()` holds, re-checked on every arrival. */
    until(what, check, timeoutMs = WAIT_MS) {
      const seen = () => `${userId}/${deviceId}: ${socket.messages.length} messages, logins ${JSON.stringify(socket.logins)}`;
      return untilChanged(events, what, check, seen, timeoutMs);
    },
    /** Resolves with the login answer of the current connection. */
    async loggedIn(count = 1) {
      await socket.until(`login #${count}`, () => socket.logins.length >= count);
      const answer = socket.logins[count - 1];
      if (!answer?.ok) throw new Error(`login refused: ${JSON.stringify(answer)}`);
      return answer;
    },
    async texts(count) {
      await socket.until(`${count} messages`, () => socket.messages.length >= count);
      return socket.messages.map((m) => m.text);
    },
    /** The payloads of `event` seen so far. */
    of(event) {
      return socket.seen.filter((e) => e.event === event).map((e) => e.payload);
    },
    releaseAcks() {
      const held = socket.held.splice(0);
      for (const callback of held) callback({ ok: true });
      return held.length;
    },
    dm(to, text, extra = {}, timeoutMs = WAIT_MS) {
      return socket.timeout(timeoutMs).emitWithAck("chat", { to, text, ...extra });
    },
    ack_(event, payload, timeoutMs = WAIT_MS) {
      return socket.timeout(timeoutMs).emitWithAck(event, payload);
    },
  });
}

/** Parses RESP replies off a stream of bytes; yields each top-level value. */
function respParser(onValue) {
  let buffer = Buffer.alloc(0);
  const parse = (offset) => {
    const end = buffer.indexOf("\r\n", offset);
    if (end < 0) return null;
    const type = String.fromCharCode(buffer[offset]);
    const line = buffer.toString("utf8", offset + 1, end);
    if (type === "+" || type === "-" || type === ":") return { value: type === ":" ? Number(line) : line, next: end + 2 };
    if (type === "$") {
      const length = Number(line);
      if (length < 0) return { value: null, next: end + 2 };
      if (buffer.length < end + 2 + length + 2) return null;
      return { value: buffer.toString("utf8", end + 2, end + 2 + length), next: end + 2 + length + 2 };
    }
    if (type === "*") {
      const count = Number(line);
      const items = [];
      let next = end + 2;
      for (let i = 0; i < count; i++) {
        const item = parse(next);
        if (!item) return null;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    throw new Error(`unexpected RESP type ${type}`);
  };
  return (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const parsed = parse(0);
      if (!parsed) return;
      buffer = buffer.subarray(parsed.next);
      onValue(parsed.value);
    }
  };
}

/** Subscribes to Redis channels; `messages[channel]` collects parsed JSON payloads. */
export async function subscribe(port, ...channels) {
  const socket = net.connect(port, "127.0.0.1");
  const events = new EventEmitter();
  const messages = Object.fromEntries(channels.map((c) => [c, []]));
  let confirmed = 0;
  socket.on(
    "data",
    respParser((value) => {
      if (!Array.isArray(value)) return;
      if (value[0] === "subscribe") confirmed += 1;
      if (value[0] === "message") {
        let payload;
        try {
          payload = JSON.parse(value[2]);
        } catch {
          payload = value[2];
        }
        messages[value[1]].push(payload);
      }
      events.emit("change");
    }),
  );
  await new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.once("connect", resolve);
  });
  let request = `*${channels.length + 1}\r\n$9\r\nSUBSCRIBE\r\n`;
  for (const c of channels) request += `$${Buffer.byteLength(c)}\r\n${c}\r\n`;
  socket.write(request);
  const subscriber = trackClient({
    messages,
    until(what, check, timeoutMs = WAIT_MS) {
      return untilChanged(events, what, check, () => JSON.stringify(messages), timeoutMs);
    },
    close() {
      socket.destroy();
    },
  });
  await subscriber.until("the subscriptions", () => confirmed === channels.length);
  return subscriber;
}
