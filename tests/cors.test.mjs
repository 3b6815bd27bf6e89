// CORS and origin checks of the binary with --cors-origin.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { client, closeAll, connected, once } from "./lib/client.mjs";

describe("allowed origins", () => {
  let server;
  before(async () => { server = await startServer({ args: ["--cors-origin", "https://app.example"] }); });
  after(async () => { closeAll(); await server.stop(); });

  const handshake = (origin) =>
    fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: origin ? { Origin: origin } : {} });

  test("an allowed origin is echoed with credentials, never *", async () => {
    const res = await handshake("https://app.example");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), "https://app.example");
    assert.equal(res.headers.get("access-control-allow-credentials"), "true");
  });

  test("preflight answers the methods and echoes requested headers", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: "OPTIONS",
      headers: { Origin: "https://app.example", "Access-Control-Request-Headers": "x-token" },
    });
    assert.equal(res.status, 204);
    assert.match(res.headers.get("access-control-allow-methods"), /POST/);
    assert.equal(res.headers.get("access-control-allow-headers"), "x-token");
  });

  test("another origin is refused at the handshake with code 4, websocket included", async () => {
    const res = await handshake("https://evil.example");
    assert.equal(res.status, 403);
    assert.deepEqual(await res.json(), { code: 4, message: "Forbidden" });
    const s = client(server.url, { transports: ["websocket"], extraHeaders: { Origin: "https://evil.example" } });
    const [err] = await once(s, "connect_error");
    assert.equal(err.message, "websocket error");
  });

  test("clients without an Origin header (not a browser page) are not concerned", async () => {
    assert.equal((await handshake()).status, 200);
    const s = await connected(server.url, { transports: ["websocket"] });
    assert.ok(s.connected);
  });
});

describe("the same-origin default", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => server.stop());
  afterEach(closeAll);

  test("a page from another site cannot open a websocket; a page from the gateway's own origin can", async () => {
    const evil = client(server.url, { transports: ["websocket"], extraHeaders: { Origin: "https://evil.example" } });
    const [err] = await once(evil, "connect_error");
    assert.equal(err.message, "websocket error");
    const own = await connected(server.url, { transports: ["websocket"], extraHeaders: { Origin: server.url } });
    assert.ok(own.connected);
  });
});
