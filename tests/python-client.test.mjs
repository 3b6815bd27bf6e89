// python-socketio's client (PyPI, pinned in tests/python/requirements.txt; tests/run installs it in
// tests/python/.venv) beside the official Node client, on both transports: connect, join, receive,
// publish with acks, binary attachments both ways.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { startServer } from "./lib/server.mjs";
import { closeAll, connected, received } from "./lib/client.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const python = process.env.IOPLEX_TEST_PYTHON ?? path.join(here, "python", ".venv", "bin", "python");

/** Runs tests/python/client.py; `steps` yields its JSON lines as they come. */
function pythonClient(url, transport, room) {
  const child = spawn(python, [path.join(here, "python", "client.py"), url, transport, room], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    async next(step) {
      const timer = setTimeout(() => child.kill(), 15000);
      const { value, done } = await lines.next();
      clearTimeout(timer);
      assert.ok(!done, `python client ended before ${step}: ${stderr}`);
      const line = JSON.parse(value);
      assert.equal(line.step, step, `${value}\n${stderr}`);
      return line;
    },
    async exitCode() {
      const code = await exited;
      assert.equal(code, 0, stderr);
      return code;
    },
  };
}

describe("python-socketio client", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });
  afterEach(closeAll);

  for (const transport of ["websocket", "polling"]) {
    test(`over ${transport}: join, receive, publish with acks, binary both ways`, async () => {
      const room = `py-${transport}`;
      const node = await connected(server.url);
      assert.deepEqual(await node.timeout(3000).emitWithAck("join", room), { ok: true });
      const py = pythonClient(server.url, transport, room);
      const hello = await py.next("connected");
      assert.equal(hello.transport, transport);
      assert.match(hello.sid, /^\S+$/);
      assert.deepEqual((await py.next("joined")).ack, { ok: true });
      await py.next("ready");

      const fromPython = received(node, "message");
      const binaryFromPython = new Promise((resolve) => {
        node.on("message", (...args) => { if (Buffer.isBuffer(args[0])) resolve(args); });
      });
      const ack = await node.timeout(3000).emitWithAck("publish", {
        room, event: "message", args: ["from node", 42, Buffer.from([9, 8, 7])],
      });
      assert.deepEqual(ack, { ok: true });
      // Connection state recovery is on, so (as from Node socket.io) a broadcast ends with the
      // recovery offset; python-socketio does not recover sessions and hands it on as a last argument.
      const [text, number, bytes, offset] = (await py.next("received")).args;
      assert.deepEqual([text, number, bytes], ["from node", 42, "090807"]);
      assert.equal(typeof offset, "string");

      assert.deepEqual((await py.next("published")).ack, { ok: true });
      assert.deepEqual(await fromPython, ["from python", { n: 1 }]);
      assert.deepEqual((await py.next("published-binary")).ack, { ok: true });
      const [sent, object] = await binaryFromPython;
      assert.deepEqual([...sent], [0, 1, 254, 255]);
      assert.deepEqual([...object.bin], [7]);

      const refused = (await py.next("refused")).ack;
      assert.equal(refused.ok, false);
      assert.ok(refused.code && refused.message, JSON.stringify(refused));
      await py.next("disconnected");
      await py.exitCode();
    });
  }
});
