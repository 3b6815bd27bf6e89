// A Node socket.io 4.8 server with @socket.io/redis-adapter 8.3 (default options), in the test process.
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { freePort } from "./server.mjs";

export async function startNodeServer(redisUrl) {
  const port = await freePort();
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server(port, { adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      ack?.({ ok: true });
    });
  });
  return {
    io,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      io.close();
      await Promise.allSettled([pub.quit(), sub.quit()]);
    },
  };
}

/** Waits until `count` servers listen on the request channel of `/` (PUBSUB NUMSUB, as the adapter counts). */
export async function waitForServers(io, count, ms = 10000) {
  const deadline = Date.now() + ms;
  let seen;
  while (Date.now() < deadline) {
    seen = await io.of("/").adapter.serverCount();
    if (seen === count) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`expected ${count} servers on Redis, saw ${seen}`);
}

/**
 * A Node socket.io 4.8 server with @socket.io/redis-streams-adapter 0.3 (default options: stream
 * `socket.io`, sessions under `sio:session:`) and connection state recovery, answering the client
 * contract's `join` and `publish` the way ioplex does.
 */
export async function startNodeStreamsServer(redisUrl, { maxDisconnectionDuration = 120000 } = {}) {
  const { createAdapter: createStreamsAdapter } = await import("@socket.io/redis-streams-adapter");
  const port = await freePort();
  const redis = createClient({ url: redisUrl });
  redis.on("error", () => {});
  await redis.connect();
  const io = new Server(port, {
    adapter: createStreamsAdapter(redis),
    connectionStateRecovery: { maxDisconnectionDuration },
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
  return {
    io,
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      io.close();
      await Promise.allSettled([redis.quit()]);
    },
  };
}
