// A rolling migration from the old node cluster (issue 14, point 6): the node design's worker
// (bench/node-peer, socket.io 4 and a Redis channel per room, named by the bare room id as in
// the seed) and product workers in `--bus-format legacy` on one Redis, behind one real nginx
// (ip_hash over the node worker and a product worker). Members on either side see each
// other's joins, says and quits, each exactly once; members of another room see none of them;
// the room's classic channel carries only the node design's JSON objects; the node worker never
// dies of what the product publishes there.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import http from "node:http";
import path from "node:path";
import {
  alive,
  chatClient,
  cleanup,
  freePort,
  member,
  repoRoot,
  sleep,
  spawnTracked,
  startCluster,
  startNginx,
  startRedis,
  startWorker,
  trackClient,
  until,
} from "../support/harness.mjs";
import { subscribe } from "../support/people.mjs";

const ROOM = "k12_webcourse_room_1";
const ELSEWHERE = "k12_webcourse_room_2";

/** The node design's cluster primary with one worker on `port`; resolves with the worker's pid. */
async function startNodePeer({ redisUrl, port, channelPrefix }) {
  const dir = path.join(repoRoot, "bench/node-peer");
  const primary = spawnTracked("node", ["server.js"], "node-peer", {
    cwd: dir,
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, REDIS_URL: redisUrl, WORKERS: "1", BASE_PORT: String(port), CHANNEL_PREFIX: channelPrefix },
  });
  // The worker is the primary's child: it exits when the primary dies (its IPC channel
  // closes); killed by pid here too in case the test ends first.
  const workerPid = await until("the node-peer worker to serve socket.io", async () => {
    const answer = await fetch(`http://127.0.0.1:${port}/socket.io/?EIO=4&transport=polling`);
    if (answer.status !== 200) return null;
    return Number(execFileSync("pgrep", ["-P", String(primary.pid)]).toString().trim().split("\n")[0]);
  });
  trackClient({
    close() {
      try {
        process.kill(workerPid, "SIGKILL");
      } catch {
        // Already gone.
      }
    },
  });
  return { primary, workerPid };
}

/** The status of nginx's answer to GET /monitor from source address `localAddress`. */
function monitorStatus(port, localAddress) {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/monitor", localAddress, agent: false }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("error", reject);
    request.setTimeout(5000, () => request.destroy(new Error("no answer")));
  });
}

/** A socket.io client of the old page (seed 002): `join {username}`, `say {text}`, `message`
 * events; no acks, as the node design answers none. */
async function oldPageClient(url, roomid, username, localAddress) {
  const client = chatClient(url, { roomid, localAddress, reconnection: false });
  await client.connected_();
  client.emit("join", { username });
  return client;
}

const key = (m) => `${m.event}|${m.data?.username}|${m.data?.text ?? ""}`;
const j = (name) => `join|${name}|`;
const s = (name, text) => `broadcast_say|${name}|${text}`;
const q = (name) => `broadcast_quit|${name}|`;
const joined = (name) => (m) => m.event === "join" && m.data?.username === name;
const quit = (name) => (m) => m.event === "broadcast_quit" && m.data?.username === name;
const saidBy = (name, text) => (m) => m.event === "broadcast_say" && m.data?.username === name && m.data?.text === text;

// The seed's naming (the bare room id), and bench/node-peer's default prefix.
for (const prefix of ["", "node:room:"]) describe(`rolling migration: node design workers and legacy-format product workers on one Redis (channel prefix "${prefix}")`, () => {
  let redis;
  let node;
  let cluster;
  let nginx;
  let nodeAddress;
  let productAddress;
  before(async () => {
    redis = await startRedis();
    const nodePort = await freePort();
    node = await startNodePeer({ redisUrl: redis.url, port: nodePort, channelPrefix: prefix });
    // The product's prefix is the one the node cluster used.
    cluster = await startCluster({
      workers: 2,
      redisUrl: redis.url,
      extraArgs: ["--bus-format", "legacy", "--channel-prefix", prefix, "--presence-grace-ms", "1000"],
    });
    // The node worker answers /monitor 404: nginx serves once it answers anything from upstream.
    nginx = await startNginx({
      upstreams: [`127.0.0.1:${nodePort}`, `127.0.0.1:${cluster.ports[0]}`],
      ready: (response) => response.status === 200 || response.status === 404,
    });
    // ip_hash routes by a client address's first three octets: find one that lands on each.
    for (let n = 1; n <= 64 && !(nodeAddress && productAddress); n++) {
      const address = `127.0.${n}.1`;
      const status = await monitorStatus(nginx.port, address);
      if (status === 200) productAddress ??= address;
      if (status === 404) nodeAddress ??= address;
    }
    assert.ok(nodeAddress && productAddress, `no source address reached both upstreams (node ${nodeAddress}, product ${productAddress})`);
  });
  after(async () => {
    await nginx?.stop();
    await cluster?.stop();
    await cleanup();
  });

  test("members on either side see each other's joins, says and quits exactly once; other rooms see none", async () => {
    const channel = `${prefix}${ROOM}`;
    const legacyChannel = await subscribe(redis.port, channel);

    // Another room with a member on each side, to see that nothing crosses rooms.
    const olga = await oldPageClient(nginx.url, ELSEWHERE, "olga", nodeAddress);
    await olga.next("olga's own join, back from Redis (the node worker subscribed)", joined("olga"));
    const otto = chatClient(nginx.url, { roomid: ELSEWHERE, localAddress: productAddress });
    await otto.connected_();
    assert.equal((await otto.ack("join", { username: "otto" })).ok, true);
    await olga.next("otto's join on the node side", joined("otto"));
    await otto.next("otto's own join", joined("otto"));

    // pete: through nginx, on product worker 0.
    const pete = chatClient(nginx.url, { roomid: ROOM, localAddress: productAddress });
    await pete.connected_();
    const peteJoin = await pete.ack("join", { username: "pete" });
    assert.equal(peteJoin.ok, true, JSON.stringify(peteJoin));
    assert.equal(peteJoin.count, undefined, "no member count: node's members are in none");
    await pete.next("pete's own join", joined("pete"));

    // nora: through nginx, on the node worker.
    const nora = await oldPageClient(nginx.url, ROOM, "nora", nodeAddress);
    await nora.next("nora's own join (node subscribed the room)", joined("nora"));
    await pete.next("nora's join, from the node worker", joined("nora"));

    // paula: on product worker 1, reached directly (product to product goes both ways).
    const paula = chatClient(cluster.url(1), { roomid: ROOM });
    await paula.connected_();
    assert.equal((await paula.ack("join", { username: "paula" })).ok, true);
    await paula.next("paula's own join", joined("paula"));
    await nora.next("paula's join, from a product worker", joined("paula"));
    await pete.next("paula's join, from the other product worker", joined("paula"));

    // ned: a second node member.
    const ned = await oldPageClient(nginx.url, ROOM, "ned", nodeAddress);
    for (const member of [pete, nora, paula, ned]) await member.next(`ned's join at ${member.id}`, joined("ned"));

    // Everyone says something; everyone hears everything.
    const lines = { pete: "hello from a product worker", nora: "hello from node", paula: "hi from the other product worker", ned: "node again" };
    assert.equal((await pete.ack("say", { text: lines.pete })).ok, true);
    nora.emit("say", { text: lines.nora });
    assert.equal((await paula.ack("say", { text: lines.paula })).ok, true);
    ned.emit("say", { text: lines.ned });
    const members = { pete, nora, paula, ned };
    for (const [listener, client] of Object.entries(members)) {
      for (const [speaker, text] of Object.entries(lines)) await client.next(`${speaker}'s line at ${listener}`, saidBy(speaker, text));
    }

    // What the room refuses in legacy mode, in words.
    for (const event of ["members", "history"]) {
      const answer = await pete.ack(event);
      assert.equal(answer.ok, false, event);
      assert.equal(answer.error.code, "unsupported", `${event}: ${JSON.stringify(answer)}`);
    }

    // A product member quits: node's members hear it. Then a node member quits: the product's do.
    paula.disconnect();
    for (const client of [pete, nora, ned]) await client.next("paula's quit", quit("paula"));
    ned.disconnect();
    for (const client of [pete, nora]) await client.next("ned's quit", quit("ned"));

    // Last lines from each side, after everything else: a second copy of anything before them
    // would have come on the same Redis connection before them.
    assert.equal((await pete.ack("say", { text: "bye from pete" })).ok, true);
    nora.emit("say", { text: "bye from nora" });
    for (const client of [pete, nora]) {
      await client.next("pete's last line", saidBy("pete", "bye from pete"));
      await client.next("nora's last line", saidBy("nora", "bye from nora"));
    }
    assert.equal((await otto.ack("say", { text: "still here" })).ok, true);
    await olga.next("otto's line in the other room", saidBy("otto", "still here"));
    await sleep(200);

    const says = Object.entries(lines).map(([name, text]) => s(name, text));
    const byes = [s("pete", "bye from pete"), s("nora", "bye from nora")];
    const expected = {
      pete: [j("pete"), j("nora"), j("paula"), j("ned"), ...says, q("paula"), q("ned"), ...byes],
      nora: [j("nora"), j("paula"), j("ned"), ...says, q("paula"), q("ned"), ...byes],
      paula: [j("paula"), j("ned"), ...says],
      ned: [j("ned"), ...says, q("paula")],
    };
    for (const [name, client] of Object.entries(members)) {
      assert.deepEqual(client.received.map(key).sort(), expected[name].sort(), `what ${name} received, each exactly once`);
      for (const message of client.received) assert.equal(message.room, ROOM, `${name} got a message of another room`);
    }
    // The other room's members saw only their own room.
    assert.deepEqual(olga.received.map(key).sort(), [j("olga"), j("otto"), s("otto", "still here")].sort());
    assert.deepEqual(otto.received.map(key).sort(), [j("otto"), s("otto", "still here")].sort());

    // The room's classic channel carried the node design's JSON objects only (no frames, no
    // markers), each product message once.
    const onChannel = legacyChannel.messages[channel];
    for (const message of onChannel) {
      assert.ok(message !== null && typeof message === "object" && !Array.isArray(message), `not a JSON object: ${JSON.stringify(message)}`);
      assert.equal(typeof message.event, "string");
      assert.equal(typeof message.data, "object");
    }
    assert.deepEqual(
      onChannel.map(key).sort(),
      [j("pete"), j("nora"), j("paula"), j("ned"), ...says, q("paula"), q("ned"), ...byes].sort(),
    );

    // The node worker lived through it all (its primary would have forked a new one).
    assert.ok(alive(node.workerPid), "the node worker died");
    assert.equal(Number(execFileSync("pgrep", ["-P", String(node.primary.pid)]).toString().trim()), node.workerPid);
    for (const client of [pete, nora, olga, otto]) client.disconnect();
  });

  // A product worker that dies without a word: a surviving one removes its members, and node's
  // members hear each quit once (written by the reaper's script, on the classic channel too).
  if (prefix === "") test("a product worker SIGKILLed: node's members hear its members' quits once", async () => {
    const room = "reaped";
    const nina = await oldPageClient(nginx.url, room, "nina", nodeAddress);
    await nina.next("nina's own join", joined("nina"));
    const rita = chatClient(cluster.url(1), { roomid: room, reconnection: false });
    await rita.connected_();
    assert.equal((await rita.ack("join", { username: "rita" })).ok, true);
    const paul = chatClient(cluster.url(0), { roomid: room });
    await paul.connected_();
    assert.equal((await paul.ack("join", { username: "paul" })).ok, true);
    await nina.next("rita's join", joined("rita"));
    await nina.next("paul's join", joined("paul"));

    const { pid } = (await cluster.status()).workers[1];
    process.kill(pid, "SIGKILL");
    await until(`worker pid ${pid} to be gone`, async () => !alive(pid));
    await nina.next("rita's quit, from the reaper", quit("rita"), 15_000);
    await paul.next("rita's quit at the product's member", quit("rita"));
    assert.equal((await paul.ack("say", { text: "still here" })).ok, true);
    nina.emit("say", { text: "me too" });
    for (const client of [nina, paul]) {
      await client.next("paul's line", saidBy("paul", "still here"));
      await client.next("nina's line", saidBy("nina", "me too"));
    }
    await sleep(200);
    for (const client of [nina, paul]) assert.equal(client.received.filter(quit("rita")).length, 1, "rita's quit once");
    for (const client of [nina, paul, rita]) client.disconnect();
  });

  // The switch to native, worker by worker, once no node worker is left: a native worker beside
  // legacy ones hears and is heard, serves only the history written since the last legacy
  // message (the node cluster's time, with its holes, is never shown), and recovers a dropped
  // client with every message it missed, those said on legacy workers included.
  if (prefix === "") test("switching to native beside legacy workers: history without holes, exact recovery", async () => {
    const room = "switching";
    const native = await startWorker({ redisUrl: redis.url, extraArgs: ["--channel-prefix", prefix] });
    const ann = await member(cluster.url(0), room, "ann");
    for (const text of ["legacy 1", "legacy 2"]) assert.equal((await ann.ack("say", { text })).ok, true);

    const bob = chatClient(native.url, { roomid: room, username: "bob" });
    await until("bob's join and history", async () => bob.joins === 1 && bob.histories === 1);
    assert.deepEqual(bob.history, [], "the legacy time is not served as history");
    await ann.next("bob's join at the legacy worker", joined("bob"));
    assert.equal((await bob.ack("say", { text: "native 1" })).ok, true);
    await ann.next("bob's line at the legacy worker", saidBy("bob", "native 1"));
    assert.equal((await ann.ack("say", { text: "legacy 3" })).ok, true);
    await bob.next("ann's line at the native worker", saidBy("ann", "legacy 3"));

    // History since the last legacy message, in pages and after a join.
    const page = await bob.ack("history");
    assert.equal(page.ok, true, JSON.stringify(page));
    assert.deepEqual(page.messages, [], "nothing native since ann's last line");
    assert.equal((await bob.ack("say", { text: "native 2" })).ok, true);
    const carl = chatClient(native.url, { roomid: room, username: "carl" });
    await until("carl's join and history", async () => carl.joins === 1 && carl.histories === 1);
    assert.deepEqual(carl.history.map(key), [s("bob", "native 2")]);
    assert.deepEqual((await bob.ack("history")).messages.map(key), [s("bob", "native 2"), j("carl")]);

    // bob's connection drops; ann says something on a legacy worker meanwhile; bob recovers.
    bob.io.engine.close();
    await until("bob to notice the drop", async () => !bob.connected);
    assert.equal((await ann.ack("say", { text: "while bob was away" })).ok, true);
    await until("bob's recovery", async () => bob.connected && bob.recoveries === 1);
    await bob.next("what bob missed", saidBy("ann", "while bob was away"));
    assert.equal((await ann.ack("say", { text: "after" })).ok, true);
    await bob.next("ann's next line", saidBy("ann", "after"));
    assert.deepEqual(
      bob.received.map(key),
      [j("bob"), s("bob", "native 1"), s("ann", "legacy 3"), s("bob", "native 2"), j("carl"), s("ann", "while bob was away"), s("ann", "after")],
      "bob got everything once, in order",
    );
    for (const client of [ann, bob, carl]) client.disconnect();
    await native.stop();
  });

  // With the node design's empty prefix, room `notification` would be the notification channel.
  if (prefix === "") test("a room whose classic channel is one the product uses for something else is refused at connect", async () => {
    const client = chatClient(cluster.url(0), { roomid: "notification", reconnection: false });
    await until("connect_error", async () => client.lastConnectError);
    assert.match(client.lastConnectError.message, /invalid room id: the Redis channel of room "notification" would be "notification"/);
    client.disconnect();
  });
});
