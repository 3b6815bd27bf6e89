// Clients built with socket.io-msgpack-parser 3.x beside default-parser clients on the same endpoint:
// each connection's first packet tells its parser, rooms mix both, binary and acks work both ways.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import msgpackParser from "socket.io-msgpack-parser";
import { startServer } from "./lib/server.mjs";
import { client, closeAll, connected, received, sleep } from "./lib/client.mjs";

const msgpack = { parser: msgpackParser };

describe("socket.io-msgpack-parser clients", () => {
  let server;
  let dir;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-msgpack-"));
    const config = path.join(dir, "tenants.toml");
    fs.writeFileSync(config, [
      "[tenants.mixed]", "default = true",
      "[tenants.textonly]", 'parser = "default"',
      "[tenants.packed]", 'parser = "msgpack"',
    ].join("\n"));
    server = await startServer({ args: ["--config", config] });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(closeAll);

  const join = (s, room) => s.timeout(3000).emitWithAck("join", room);
  const publish = (s, spec) => s.timeout(3000).emitWithAck("publish", spec);

  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    test(`over ${transports.join(" then ")}: one room, both parsers, binary and acks both ways`, async () => {
      const packed = await connected(server.url, { ...msgpack, transports });
      const plain = await connected(server.url, { transports });
      const room = `mixed-${transports.join("-")}`;
      for (const s of [packed, plain]) assert.deepEqual(await join(s, room), { ok: true });

      // msgpack client -> default client, with binary inside an object
      let got = received(plain, "message");
      assert.deepEqual(await publish(packed, { room, event: "message", args: ["hi", { bin: Buffer.from([1, 2, 3]) }, 4.5] }), { ok: true });
      const [text, object, number] = await got;
      assert.deepEqual([text, [...object.bin], number], ["hi", [1, 2, 3], 4.5]);

      // default client -> msgpack client
      got = received(packed, "message");
      assert.deepEqual(await publish(plain, { room, event: "message", args: [Buffer.from([9, 8]), null, true] }), { ok: true });
      const [bytes, nothing, yes] = await got;
      assert.deepEqual([[...bytes], nothing, yes], [[9, 8], null, true]);

      // a server ack with an error body reaches the msgpack client intact
      assert.deepEqual(await join(packed, ""), await join(plain, ""));
    });
  }

  test("a broadcast to many members of both parsers reaches each once", async () => {
    const members = [];
    for (let i = 0; i < 6; i++) {
      const s = await connected(server.url, i % 2 ? msgpack : {});
      assert.deepEqual(await join(s, "crowd"), { ok: true });
      members.push(s);
    }
    const counts = members.map(() => 0);
    members.forEach((s, i) => s.on("tick", () => counts[i]++));
    const sender = await connected(server.url);
    assert.deepEqual(await join(sender, "crowd"), { ok: true });
    for (let n = 0; n < 5; n++) {
      assert.deepEqual(await publish(sender, { room: "crowd", event: "tick", args: [n] }), { ok: true });
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(counts, [5, 5, 5, 5, 5, 5]);
  });

  test("a tenant pinned to one parser refuses the other", async () => {
    const refused = [
      client(`${server.url}?tenant=packed`, { transports: ["websocket"] }),
      client(`${server.url}?tenant=textonly`, { ...msgpack, transports: ["websocket"] }),
    ];
    let connects = 0;
    for (const s of refused) s.on("connect", () => connects++);
    await sleep(1500);
    assert.equal(connects, 0, "neither client was let in");
    // Each serves its own parser.
    assert.ok((await connected(`${server.url}?tenant=packed`, msgpack)).connected);
    assert.ok((await connected(`${server.url}?tenant=textonly`)).connected);
  });
});
