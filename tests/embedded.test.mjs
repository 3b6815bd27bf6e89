// ioplex as a library (host/examples/embedded.rs): auth, connect errors, acks both ways, binary both ways.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { client, closeAll, connected, once } from "./lib/client.mjs";

describe("embedded example", () => {
  let server;
  before(async () => { server = await startServer({ name: "examples/embedded" }); });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  test("the main namespace receives the auth payload", async () => {
    const s = client(server.url, { auth: { name: "ann" } });
    const [welcome] = await once(s, "welcome");
    assert.deepEqual(welcome, { id: s.id, nsp: "/", auth: { name: "ann" } });
  });

  test("a custom namespace refuses a bad token with the hook's message and data", async () => {
    const s = client(`${server.url}/admin`, { auth: { token: "nope" } });
    const [err] = await once(s, "connect_error");
    assert.equal(err.message, "invalid token");
    assert.deepEqual(err.data, { hint: "pass auth: { token }" });
    const ok = client(`${server.url}/admin`, { auth: { token: "letmein" } });
    const [welcome] = await once(ok, "welcome");
    assert.equal(welcome.nsp, "/admin");
  });

  test("an unknown namespace is refused", async () => {
    const s = client(`${server.url}/nowhere`);
    const [err] = await once(s, "connect_error");
    assert.equal(err.message, "Invalid namespace");
  });

  for (const transports of [["websocket"], ["polling"]]) {
    test(`client emit with ack, and binary both ways (${transports[0]})`, async () => {
      const s = await connected(server.url, { transports });
      const buf = Buffer.from("binary \u00e9 \u0000 data");
      const echoed = once(s, "echo");
      const acked = await new Promise((resolve, reject) => {
        s.timeout(2000).emit("echo", "text", 42, { buf }, [buf, buf], (err, ...args) => (err ? reject(err) : resolve(args)));
      });
      const [text, num, obj, arr] = await echoed;
      for (const got of [[text, num, obj, arr], acked]) {
        assert.equal(got[0], "text");
        assert.equal(got[1], 42);
        assert.ok(Buffer.from(got[2].buf).equals(buf));
        assert.equal(got[3].length, 2);
        assert.ok(Buffer.from(got[3][1]).equals(buf));
      }
    });
  }

  test("server emit with ack: the client's answer reaches the server", async () => {
    const s = await connected(server.url);
    s.on("question", (q, ack) => ack("bob", q.length));
    const answer = once(s, "answer");
    s.emit("ask-me", 2000);
    const [result] = await answer;
    assert.deepEqual(result, { reply: ["bob", "what is your name?".length] });
  });

  test("server emit with ack times out when the client never answers", async () => {
    const s = await connected(server.url);
    s.on("question", () => {});
    const answer = once(s, "answer");
    s.emit("ask-me", 100);
    const [result] = await answer;
    assert.match(result.error, /no acknowledgement/);
  });
});
