// A small TCP proxy in the test process: clients connect to it, and it forwards to whichever server
// it points at now, so a test can kill a node and send reconnecting clients to another.
import net from "node:net";
import { freePort } from "./server.mjs";

export async function startProxy(targetPort) {
  const port = await freePort();
  let target = targetPort;
  const pairs = new Set();
  const server = net.createServer((downstream) => {
    const upstream = net.connect(target, "127.0.0.1");
    const pair = { downstream, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    for (const s of [downstream, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** New connections go to `port` from now on. */
    pointAt(next) {
      target = next;
    },
    /** Cuts every open connection (a network blip). */
    cutAll() {
      for (const { downstream, upstream } of pairs) {
        downstream.destroy();
        upstream.destroy();
      }
    },
    async close() {
      // Stop accepting first: clients that reconnect must not keep the server open.
      const closed = new Promise((resolve) => server.close(resolve));
      this.cutAll();
      await closed;
    },
  };
}
