// The old node design, for side-by-side benchmarks (not part of the product): the cluster
// primary forks one socket.io worker per CPU on consecutive ports; each worker subscribes to a
// room's Redis channel when the room gets its first local member, publishes every room event
// there, and delivers to its local sockets what comes back from Redis (its own events included).
//
//   REDIS_URL=redis://127.0.0.1:6379 WORKERS=2 BASE_PORT=6001 node server.js
"use strict";

const cluster = require("node:cluster");
const os = require("node:os");

const workers = Number(process.env.WORKERS || os.cpus().length);
const basePort = Number(process.env.BASE_PORT || 6001);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
// An empty CHANNEL_PREFIX is the seed's own naming: the bare room id.
const prefix = process.env.CHANNEL_PREFIX ?? "node:room:";

if (cluster.isPrimary) {
  const ports = new Map();
  const fork = (port) => ports.set(cluster.fork({ PORT: String(port) }).id, port);
  for (let i = 0; i < workers; i++) fork(basePort + i);
  cluster.on("exit", (worker) => {
    const port = ports.get(worker.id);
    ports.delete(worker.id);
    if (!stopping) fork(port);
  });
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.kill("SIGTERM");
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const { Server } = require("socket.io");
  const { createClient } = require("redis");
  const port = Number(process.env.PORT);

  (async () => {
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    const io = new Server(port, { cors: { origin: "*" } });
    const members = new Map();
    const deliver = (room) => (raw) => io.to(room).emit("message", JSON.parse(raw));

    io.on("connection", (socket) => {
      const room = socket.handshake.query.roomid;
      if (typeof room !== "string" || room === "") return;
      socket.join(room);
      const count = (members.get(room) || 0) + 1;
      members.set(room, count);
      if (count === 1) sub.subscribe(prefix + room, deliver(room));
      const publish = (event, data) =>
        pub.publish(prefix + room, JSON.stringify({ event, data, ts: Date.now(), room }));

      socket.on("join", (payload) => {
        socket.data.username = payload && payload.username;
        publish("join", { username: socket.data.username });
      });
      socket.on("say", (payload) => {
        if (!socket.data.username || !payload || typeof payload.text !== "string") return;
        publish("broadcast_say", { username: socket.data.username, text: payload.text });
      });
      socket.on("disconnect", () => {
        if (socket.data.username) publish("broadcast_quit", { username: socket.data.username });
        const left = members.get(room) - 1;
        if (left === 0) {
          members.delete(room);
          sub.unsubscribe(prefix + room);
        } else {
          members.set(room, left);
        }
      });
    });
    process.on("SIGTERM", () => {
      io.close();
      process.exit(0);
    });
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
