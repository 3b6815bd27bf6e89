// Node socket.io 4.8 with @socket.io/redis-streams-adapter 0.3 and connection state recovery, answering
// the client contract's join and publish like ioplex (for bench/recovery). PORT, REDIS_URL and
// RECOVERY_WINDOW_MS (default 120000; 0 turns recovery off) from the environment.
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";

const port = Number(process.env.PORT ?? 3200);
const window = Number(process.env.RECOVERY_WINDOW_MS ?? 120000);
const redis = createClient({ url: process.env.REDIS_URL });
redis.on("error", () => {});
await redis.connect();
const io = new Server(port, {
  adapter: createAdapter(redis),
  ...(window > 0 ? { connectionStateRecovery: { maxDisconnectionDuration: window } } : {}),
});
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    ack?.({ ok: true });
  });
  socket.on("publish", ({ room, event, args = [] }, ack) => {
    socket.to(room).emit(event, ...args);
    ack?.({ ok: true });
  });
});
