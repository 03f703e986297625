// node socket.io 4 scaled out with the official Redis adapter (@socket.io/redis-adapter), for
// side-by-side benchmarks (not part of the product). Written as the adapter's documentation
// shows: a pub client and its duplicate as sub client, `createAdapter(pub, sub)` with its
// defaults (classic pub/sub, one channel per namespace and per single-room broadcast), and
// `io.to(room).emit` for every room event. One process per port; run one per worker:
//
//   REDIS_URL=redis://127.0.0.1:6379 PORT=6001 node server.js
//
// The chat protocol is the product's (and bench/node-peer's): `?roomid=` at connect puts the
// socket in that room; `join {username}` sends the room `message {event:"join",
// data:{username}, ts, room}`; `say {text}` (after a join) sends `message {event:
// "broadcast_say", data:{username, text}, ts, room}`; a joined socket's disconnect sends
// `broadcast_quit`.
"use strict";

const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

const port = Number(process.env.PORT || 6001);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

(async () => {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  const io = new Server(port, {
    cors: { origin: "*" },
    adapter: createAdapter(pubClient, subClient),
  });
  const send = (room, event, data) =>
    io.to(room).emit("message", { event, data, ts: Date.now(), room });

  io.on("connection", (socket) => {
    const room = socket.handshake.query.roomid;
    if (typeof room !== "string" || room === "") return;
    socket.join(room);

    socket.on("join", (payload) => {
      socket.data.username = payload && payload.username;
      send(room, "join", { username: socket.data.username });
    });
    socket.on("say", (payload) => {
      if (!socket.data.username || !payload || typeof payload.text !== "string") return;
      send(room, "broadcast_say", { username: socket.data.username, text: payload.text });
    });
    socket.on("disconnect", () => {
      if (socket.data.username) send(room, "broadcast_quit", { username: socket.data.username });
    });
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
