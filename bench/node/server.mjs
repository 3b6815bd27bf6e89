// The reference for ioplex-bench: Node socket.io with the semantics of ioplex's client contract
// (join, leave, publish to a room the sender is in, sender excluded), so the generator drives both alike.
// PORT (default 3200); REDIS_URL turns on @socket.io/redis-adapter.
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3200);
const options = { pingInterval: 25000, pingTimeout: 20000, maxHttpBufferSize: 1e6 };
if (process.env.REDIS_URL) {
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const { createClient } = await import("redis");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  options.adapter = createAdapter(pub, sub);
}
const io = new Server(port, options);
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    ack?.({ ok: true });
  });
  socket.on("leave", (room, ack) => {
    socket.leave(room);
    ack?.({ ok: true });
  });
  socket.on("publish", (spec, ack) => {
    if (!spec || typeof spec.room !== "string" || !socket.rooms.has(spec.room)) {
      return ack?.({ ok: false, code: "not_in_room" });
    }
    socket.to(spec.room).emit(spec.event, ...(spec.args ?? []));
    ack?.({ ok: true });
  });
});
console.log(`node socket.io listening on ${port}`);
