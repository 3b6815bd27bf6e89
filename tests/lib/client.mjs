// Small promise helpers around the official socket.io-client.
import { io } from "socket.io-client";

const opened = new Set();

/** Opens a client (no auto-reconnect unless asked) and remembers it for closeAll(). */
export function client(url, opts = {}) {
  const socket = io(url, { reconnection: false, forceNew: true, ...opts });
  opened.add(socket);
  return socket;
}

/** Opens a client and waits until it is connected. */
export async function connected(url, opts = {}) {
  const socket = client(url, opts);
  await once(socket, "connect");
  return socket;
}

/** Resolves with the arguments of the next `event` (an array), rejects after `ms`. */
export function once(emitter, event, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`no "${event}" within ${ms} ms`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, handler);
  });
}

/** Resolves true if `event` arrives within `ms`, false otherwise. */
export function arrives(emitter, event, ms = 300) {
  return once(emitter, event, ms).then(() => true, () => false);
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `condition` (sync or async) every 50 ms until it holds; throws naming `what` after `ms`. */
export async function waitFor(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
}

export function closeAll() {
  for (const s of opened) s.disconnect();
  opened.clear();
}

/**
 * The arguments of the next `event` a socket receives, without the offset that connection state
 * recovery (on by default) appends as the last argument of every logged event.
 */
export function received(socket, event, ms = 3000) {
  return once(socket, event, ms).then((args) => withoutOffset(socket, args));
}

/** `args` without the recovery offset: with recovery on (the socket has a pid), the last string. */
export function withoutOffset(socket, args) {
  return socket._pid && typeof args.at(-1) === "string" ? args.slice(0, -1) : args;
}
