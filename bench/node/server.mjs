// The reference for ioplex-bench: Node socket.io with the semantics of ioplex's client contract
// (join, leave, publish to a room the sender is in, sender excluded), so the generator drives both alike.
// PORT (default 3200); REDIS_URL turns on @socket.io/redis-adapter; PLUGINS_SECRET turns on what the
// room-auth, redact and stamp plugins do (policies.mjs): a token at connect, rooms it grants, and
// published messages redacted and stamped.
import { Server } from "socket.io";
import { mayJoin, redactArgs, stampArgs, verify } from "./policies.mjs";

const port = Number(process.env.PORT ?? 3200);
const secret = process.env.PLUGINS_SECRET;
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
if (secret) {
  io.use((socket, next) => {
    try {
      socket.data.claims = verify(socket.handshake.auth?.token ?? socket.handshake.query.token, secret);
      next();
    } catch (err) {
      next(err);
    }
  });
}
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return ack?.({ ok: false, code: "bad_request" });
    if (secret && !mayJoin(socket.data.claims, room)) {
      return ack?.({ ok: false, code: "forbidden", message: `your token does not grant room ${room}` });
    }
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
    const args = spec.args ?? [];
    socket.to(spec.room).emit(spec.event, ...(secret ? stampArgs(redactArgs(args)) : args));
    ack?.({ ok: true });
  });
});
console.log(`node socket.io listening on ${port}`);
