// Graceful shutdown: on SIGTERM the node turns /readyz to 503, refuses new handshakes, closes its
// sessions so clients reconnect elsewhere (spread out when there are many), and exits 0 within the grace.
import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { closeAll, connected, once, sleep } from "./lib/client.mjs";

describe("drain on SIGTERM", () => {
  afterEach(closeAll);

  test("clients are told to reconnect, spread over half the grace period; then exit 0", async () => {
    const server = await startServer({ args: ["--shutdown-grace", "4000"], env: { RUST_LOG: "info" } });
    const clients = [];
    for (let i = 0; i < 150; i++) {
      clients.push(await connected(server.url, { transports: i === 0 ? ["polling"] : ["websocket"] }));
    }
    const reasons = clients.map((c) => once(c, "disconnect", 8000).then(([reason]) => ({ reason, at: Date.now() })));
    const exited = new Promise((resolve) => server.child.once("exit", (code) => resolve({ code, at: Date.now() })));
    const sentAt = Date.now();
    server.child.kill("SIGTERM");

    await sleep(300);
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal(await ready.text(), "draining: shutting down");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^ioplex_draining 1$/m);
    assert.match(metrics, /^ioplex_ready 0$/m, "/metrics says what /readyz says");
    const handshake = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(handshake.status, 503);
    assert.deepEqual(await handshake.json(), { code: 4, message: "Server shutting down" });

    const got = await Promise.all(reasons);
    assert.ok(got.every((r) => r.reason === "transport close"), JSON.stringify([...new Set(got.map((r) => r.reason))]));
    const times = got.map((r) => r.at - sentAt).sort((a, b) => a - b);
    assert.ok(times.at(-1) - times[0] > 800, `closes spread out: first ${times[0]} ms, last ${times.at(-1)} ms`);
    assert.ok(times.at(-1) < 3000, `all closed within half the grace (+ margin): ${times.at(-1)} ms`);
    const { code, at } = await exited;
    assert.equal(code, 0);
    assert.ok(at - sentAt < 4500, `exited ${at - sentAt} ms after SIGTERM`);
    assert.match(server.logs.join(""), /draining: new handshakes refused, closing sessions.*sessions=150/);
  });

  test("a node with few clients closes them at once and exits promptly", async () => {
    const server = await startServer({ args: ["--shutdown-grace", "10000"] });
    const client = await connected(server.url);
    const reason = once(client, "disconnect", 3000);
    const started = Date.now();
    assert.equal(await server.stop(), 0);
    assert.equal((await reason)[0], "transport close");
    assert.ok(Date.now() - started < 1500, `stopped in ${Date.now() - started} ms`);
  });
});
