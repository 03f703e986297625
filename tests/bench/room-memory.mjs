// What a room with full history costs Redis: a private redis-server and a 2-worker cluster (the
// binary in CHAT_BIN), rooms filled to --history-size with messages of a given length, then
// `MEMORY USAGE` of each key kind (bytes, as Redis counts them, samples 0 = every element) and
// `INFO memory`'s used_memory before and after. Run by `scripts/room-memory.sh`; prints one
// JSON object.
//   node bench/room-memory.mjs [--rooms 20] [--members 10] [--text-chars 60] [--history-size 50]

import { parseArgs } from "node:util";
import { cleanup, member, redisCommand, startCluster, startRedis } from "../support/harness.mjs";

const { values } = parseArgs({
  options: {
    rooms: { type: "string", default: "20" },
    members: { type: "string", default: "10" },
    "text-chars": { type: "string", default: "60" },
    "history-size": { type: "string", default: "50" },
  },
});
const rooms = Number(values.rooms);
const members = Number(values.members);
const textChars = Number(values["text-chars"]);
const historySize = Number(values["history-size"]);

/** The integer of a RESP integer reply, or of one `name:value` line of an INFO reply. */
function integer(reply, name) {
  if (name === undefined) return Number(/^:(-?\d+)/.exec(reply)?.[1] ?? NaN);
  return Number(new RegExp(`${name}:(\\d+)`).exec(reply)?.[1] ?? NaN);
}

const redis = await startRedis();
const cluster = await startCluster({
  workers: 2,
  redisUrl: redis.url,
  extraArgs: ["--history-size", String(historySize), "--rate-per-sec", "1000", "--rate-burst", "1000"],
});
const usedBefore = integer(await redisCommand(redis.port, "INFO", "memory"), "used_memory");

const clients = [];
for (let r = 0; r < rooms; r++) {
  for (let m = 0; m < members; m++) {
    clients.push(await member(cluster.url(m % 2), `mem-${r}`, `member-${m}`));
  }
}
const text = "x".repeat(textChars);
for (let r = 0; r < rooms; r++) {
  const speaker = clients[r * members];
  for (let i = 0; i < historySize; i++) await speaker.ack("say", { text });
}
await new Promise((resolve) => setTimeout(resolve, 500));

const usage = async (key) => integer(await redisCommand(redis.port, "MEMORY", "USAGE", key, "SAMPLES", "0"));
const history = await usage("chat:{room:mem-0}:history");
const membersHash = await usage("chat:{room:mem-0}:members");
const sessionKeys = (await redisCommand(redis.port, "KEYS", "chat:{room:mem-0}:session:*")).split("\r\n").filter((l) => l.startsWith("chat:"));
const sessions = await Promise.all(sessionKeys.map(usage));
const usedAfter = integer(await redisCommand(redis.port, "INFO", "memory"), "used_memory");

const sessionBytes = sessions.reduce((a, b) => a + b, 0);
console.log(
  JSON.stringify({
    rooms,
    members_per_room: members,
    text_chars: textChars,
    history_size: historySize,
    bytes: {
      history_stream: history,
      members_hash: membersHash,
      sessions: sessionBytes,
      per_room: history + membersHash + sessionBytes,
      history_per_message: Math.round(history / historySize),
      member_and_session_per_member: Math.round((membersHash + sessionBytes) / members),
    },
    used_memory_per_room: Math.round((usedAfter - usedBefore) / rooms),
  }),
);
for (const client of clients) client.disconnect();
await cluster.stop();
await cleanup();
process.exit(0);
