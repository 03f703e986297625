// Our engine.io protocol suite, written from the behaviour the official one checks
// (github.com/socketio/engine.io-protocol, test-suite/test-suite.js at f21de7b): handshake,
// messages, heartbeat, close and upgrade, over long-polling and websocket.
// `path` is "/engine.io/" (an echo server) or "/socket.io/" (the engine.io layer under
// socket.io; the official socket.io suite repeats these cases there, without the echo ones).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { http, openSocket, parseOpen, sleep } from "./common.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;

export function engineIoSuite(base, path, { echo }) {
  const url = `${base}${path}`;
  const wsUrl = url.replace("http", "ws");
  const openPolling = async () => {
    const { status, text } = await http(`${url}?EIO=4&transport=polling`);
    assert.equal(status, 200);
    return JSON.parse(text.slice(1)).sid;
  };
  const polling = (sid, extra = "") => `${url}?EIO=4&transport=polling&sid=${sid}${extra}`;

  describe(`engine.io at ${path}`, () => {
    describe("handshake", () => {
      test("long-polling opens a session", async () => {
        const { status, text } = await http(`${url}?EIO=4&transport=polling`);
        assert.equal(status, 200);
        parseOpen(assert, text, { upgrades: ["websocket"] });
      });
      test("long-polling refuses a missing or invalid EIO", async () => {
        assert.equal((await http(`${url}?transport=polling`)).status, 400);
        assert.equal((await http(`${url}?EIO=abc&transport=polling`)).status, 400);
      });
      test("long-polling refuses a missing or invalid transport", async () => {
        assert.equal((await http(`${url}?EIO=4`)).status, 400);
        assert.equal((await http(`${url}?EIO=4&transport=abc`)).status, 400);
      });
      test("long-polling refuses an opening POST or PUT", async () => {
        assert.equal((await http(`${url}?EIO=4&transport=polling`, { method: "POST" })).status, 400);
        assert.equal((await http(`${url}?EIO=4&transport=polling`, { method: "PUT" })).status, 400);
      });
      test("websocket opens a session without upgrades", async () => {
        const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`);
        parseOpen(assert, await socket.next("the open packet"), { upgrades: [] });
        socket.close();
      });
      test("websocket refuses a missing or invalid EIO, and an invalid transport, before the upgrade", async () => {
        for (const query of ["transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc"]) {
          const socket = openSocket(`${wsUrl}?${query}`);
          assert.equal(await socket.upgradeStatus(), 400, query);
        }
      });
    });

    if (echo) {
      describe("messages", () => {
        test("long-polling: one text packet comes back", async () => {
          const sid = await openPolling();
          assert.deepEqual(await http(polling(sid), { method: "POST", body: "4hello" }), { status: 200, text: "ok" });
          assert.deepEqual(await http(polling(sid)), { status: 200, text: "4hello" });
        });
        test("long-polling: several text packets come back in one payload", async () => {
          const sid = await openPolling();
          const payload = "4test1\x1e4test2\x1e4test3";
          assert.equal((await http(polling(sid), { method: "POST", body: payload })).text, "ok");
          assert.deepEqual(await http(polling(sid)), { status: 200, text: payload });
        });
        test("long-polling: text and base64 binary packets come back", async () => {
          const sid = await openPolling();
          const payload = "4hello\x1ebAQIDBA==";
          assert.equal((await http(polling(sid), { method: "POST", body: payload })).text, "ok");
          assert.deepEqual(await http(polling(sid)), { status: 200, text: payload });
        });
        test("long-polling: an invalid packet closes the session", async () => {
          const sid = await openPolling();
          const posted = await http(polling(sid), { method: "POST", body: "abc" });
          assert.ok(posted.status === 400 || posted.status === 0, `answered ${posted.status}`);
          assert.equal((await http(polling(sid))).status, 400);
        });
        test("long-polling: a second concurrent poll closes the session", async () => {
          const sid = await openPolling();
          const [first, second] = await Promise.all([http(polling(sid)), sleep(5).then(() => http(polling(sid, "&t=burst")))]);
          assert.deepEqual(first, { status: 200, text: "1" });
          assert.ok([400, 500].includes(second.status), `second poll answered ${second.status}`);
          assert.equal((await http(polling(sid))).status, 400);
        });
        test("websocket: a text packet comes back", async () => {
          const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`);
          await socket.next("the open packet");
          socket.send("4hello");
          assert.equal(await socket.nextPacket("the echo"), "4hello");
          socket.close();
        });
        test("websocket: a binary packet comes back", async () => {
          const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`);
          await socket.next("the open packet");
          socket.send(Uint8Array.from([1, 2, 3, 4]));
          assert.deepEqual(await socket.nextPacket("the echo"), Uint8Array.from([1, 2, 3, 4]));
          socket.close();
        });
        test("websocket: an invalid packet closes the session", async () => {
          const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`, { pong: true });
          await socket.next("the open packet");
          socket.send("abc");
          await socket.closedByServer();
        });
      });
    }

    describe("heartbeat", () => {
      test("long-polling: pings are answered with pongs three times", async () => {
        const sid = await openPolling();
        for (let i = 0; i < 3; i++) {
          assert.deepEqual(await http(polling(sid)), { status: 200, text: "2" });
          assert.equal((await http(polling(sid), { method: "POST", body: "3" })).status, 200);
        }
      });
      test("long-polling: a session without pongs times out", async () => {
        const sid = await openPolling();
        await sleep(PING_INTERVAL + PING_TIMEOUT + 50);
        assert.equal((await http(polling(sid))).status, 400);
      });
      test("websocket: pings are answered with pongs three times", async () => {
        const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`);
        await socket.next("the open packet");
        for (let i = 0; i < 3; i++) {
          assert.equal(await socket.next("a ping"), "2");
          socket.send("3");
        }
        socket.close();
      });
      test("websocket: a session without pongs is closed after the ping interval and timeout", async () => {
        const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`);
        await socket.next("the open packet");
        const elapsed = await socket.closedByServer(PING_INTERVAL + PING_TIMEOUT + 500);
        assert.ok(elapsed >= PING_INTERVAL + PING_TIMEOUT - 50, `closed after ${elapsed} ms`);
      });
    });

    describe("close", () => {
      test("long-polling: a close packet ends the pending poll with a noop and the session", async () => {
        const sid = await openPolling();
        const [poll] = await Promise.all([http(polling(sid)), http(polling(sid), { method: "POST", body: "1" })]);
        assert.deepEqual(poll, { status: 200, text: "6" });
        assert.equal((await http(polling(sid))).status, 400);
      });
      test("websocket: a close packet closes the connection", async () => {
        const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket`, { pong: true });
        await socket.next("the open packet");
        socket.send("1");
        await socket.closedByServer();
      });
    });

    describe("upgrade", () => {
      const upgraded = async () => {
        const sid = await openPolling();
        const socket = openSocket(`${wsUrl}?EIO=4&transport=websocket&sid=${sid}`, { pong: true });
        await socket.opened();
        return { sid, socket };
      };
      test("long-polling upgrades to websocket", async () => {
        const { sid, socket } = await upgraded();
        socket.send("2probe");
        assert.equal(await socket.nextPacket("the probe's answer"), "3probe");
        assert.deepEqual(await http(polling(sid)), { status: 200, text: "6" }, "the pending poll ends with a noop");
        socket.send("5");
        if (echo) {
          socket.send("4hello");
          assert.equal(await socket.nextPacket("the echo"), "4hello");
        }
        socket.close();
      });
      test("polling requests with the upgraded sid are refused", async () => {
        const { sid, socket } = await upgraded();
        socket.send("2probe");
        socket.send("5");
        assert.equal(await socket.nextPacket("the probe's answer"), "3probe");
        assert.equal((await http(polling(sid))).status, 400);
        if (echo) {
          socket.send("4hello");
          assert.equal(await socket.nextPacket("the echo"), "4hello");
        }
        socket.close();
      });
      test("a second websocket with the upgraded sid is refused", async () => {
        const { sid, socket } = await upgraded();
        socket.send("2probe");
        socket.send("5");
        assert.equal(await socket.nextPacket("the probe's answer"), "3probe");
        // engineioxide completes the upgrade of the second websocket, then closes it at once.
        const second = openSocket(`${wsUrl}?EIO=4&transport=websocket&sid=${sid}`, { pong: true });
        await second.closedByServer();
        if (echo) {
          socket.send("4hello");
          assert.equal(await socket.nextPacket("the echo"), "4hello");
        }
        socket.close();
      });
    });
  });
}
