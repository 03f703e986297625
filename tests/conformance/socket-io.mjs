// Our socket.io protocol suite, written from the behaviour the official one checks
// (github.com/socketio/socket.io-protocol, test-suite/test-suite.js at 4f633dd): connect to
// the main and a custom namespace (with and without auth payload), unknown namespaces, invalid
// handshakes, disconnect, events with and without acks and binary attachments, invalid packets.
// The fixture emits `auth` with the handshake's payload on connect, echoes `message` as
// `message-back` and acks `message-with-ack` with its arguments.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { openSocket } from "./common.mjs";

/** The fixture's connect timeout (`chat-cluster conformance`). */
const CONNECT_TIMEOUT = 1000;

export function socketIoSuite(base) {
  const wsUrl = `${base.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`;

  /** A socket past the engine.io handshake. */
  const engineOpen = async () => {
    // Pings answered: a close seen by a test is the server's answer to what it sent.
    const socket = openSocket(wsUrl, { pong: true });
    await socket.next("the engine.io open packet");
    return socket;
  };
  /** A socket connected to the main namespace, its `auth` packet consumed. */
  const connected = async () => {
    const socket = await engineOpen();
    socket.send("40");
    assert.ok((await socket.nextPacket("the CONNECT answer")).startsWith("40"));
    assert.equal(await socket.nextPacket("the auth packet"), '42["auth",{}]');
    return socket;
  };
  const connectTo = async (packet, prefix, authPacket) => {
    const socket = await engineOpen();
    socket.send(packet);
    const answer = await socket.nextPacket("the CONNECT answer");
    assert.ok(answer.startsWith(prefix), answer);
    const handshake = JSON.parse(answer.slice(prefix.length));
    assert.deepEqual(Object.keys(handshake), ["sid"]);
    assert.equal(typeof handshake.sid, "string");
    assert.equal(await socket.nextPacket("the auth packet"), authPacket);
    socket.close();
  };

  describe("socket.io at /socket.io/", () => {
    describe("connect", () => {
      test("to the main namespace", () => connectTo("40", "40", '42["auth",{}]'));
      test("to the main namespace with a payload", () => connectTo('40{"token":"123"}', "40", '42["auth",{"token":"123"}]'));
      test("to a custom namespace", () => connectTo("40/custom,", "40/custom,", '42/custom,["auth",{}]'));
      test("to a custom namespace with a payload", () =>
        connectTo('40/custom,{"token":"abc"}', "40/custom,", '42/custom,["auth",{"token":"abc"}]'));
      test("to an unknown namespace is refused", async () => {
        const socket = await engineOpen();
        socket.send("40/random");
        assert.equal(await socket.nextPacket("the CONNECT_ERROR"), '44/random,{"message":"Invalid namespace"}');
        socket.close();
      });
      test("an invalid handshake closes the connection", async () => {
        const socket = await engineOpen();
        socket.send("4abc");
        await socket.closedByServer();
      });
      test("no handshake within the connect timeout closes the connection", async () => {
        const socket = openSocket(wsUrl, { pong: true });
        await socket.next("the engine.io open packet");
        await socket.closedByServer(CONNECT_TIMEOUT + 1000);
        // From the websocket's opening: not before the timeout, and soon after it.
        const elapsed = Date.now() - socket.openedAt();
        assert.ok(elapsed >= CONNECT_TIMEOUT && elapsed <= CONNECT_TIMEOUT + 500, `closed after ${elapsed} ms`);
      });
    });

    describe("disconnect", () => {
      test("from the main namespace", async () => {
        const socket = await connected();
        socket.send("41");
        // The session stays: the next thing to come is the engine.io ping.
        assert.equal(await socket.next("a ping"), "2");
        socket.close();
      });
      test("from a custom namespace, staying in the main one", async () => {
        const socket = await connected();
        socket.send("40/custom");
        assert.ok((await socket.nextPacket("the custom CONNECT answer")).startsWith("40/custom,"));
        assert.equal(await socket.nextPacket("the custom auth packet"), '42/custom,["auth",{}]');
        socket.send("41/custom");
        socket.send('42["message","message to main namespace"]');
        assert.equal(await socket.nextPacket("the echo"), '42["message-back","message to main namespace"]');
        socket.close();
      });
    });

    describe("message", () => {
      test("a plain-text event", async () => {
        const socket = await connected();
        socket.send('42["message",1,"2",{"3":[true]}]');
        assert.equal(await socket.nextPacket("the echo"), '42["message-back",1,"2",{"3":[true]}]');
        socket.close();
      });
      test("an event with binary attachments", async () => {
        const socket = await connected();
        socket.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        socket.send(Uint8Array.from([1, 2, 3]));
        socket.send(Uint8Array.from([4, 5, 6]));
        assert.equal(
          await socket.nextPacket("the echo's header"),
          '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        );
        assert.deepEqual(await socket.nextPacket("attachment 0"), Uint8Array.from([1, 2, 3]));
        assert.deepEqual(await socket.nextPacket("attachment 1"), Uint8Array.from([4, 5, 6]));
        socket.close();
      });
      test("a plain-text event with an ack", async () => {
        const socket = await connected();
        socket.send('42456["message-with-ack",1,"2",{"3":[false]}]');
        assert.equal(await socket.nextPacket("the ack"), '43456[1,"2",{"3":[false]}]');
        socket.close();
      });
      test("an event with binary attachments and an ack", async () => {
        const socket = await connected();
        socket.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        socket.send(Uint8Array.from([1, 2, 3]));
        socket.send(Uint8Array.from([4, 5, 6]));
        assert.equal(await socket.nextPacket("the ack's header"), '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        assert.deepEqual(await socket.nextPacket("attachment 0"), Uint8Array.from([1, 2, 3]));
        assert.deepEqual(await socket.nextPacket("attachment 1"), Uint8Array.from([4, 5, 6]));
        socket.close();
      });
      for (const [what, packet] of [
        ["an unknown packet type", "4abc"],
        ["an invalid payload", "42{}"],
        ["an invalid ack id", '42abc["message-with-ack",1,"2",{"3":[false]}]'],
      ]) {
        test(`${what} closes the connection`, async () => {
          const socket = await connected();
          socket.send(packet);
          await socket.closedByServer();
        });
      }
    });
  });
}
