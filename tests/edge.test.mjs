// The edge build (no compiler inside) serving plugins precompiled and signed on a build machine:
// `ioplex plugin keygen` and `ioplex plugin compile` from the default build, then an edge node that
// loads only intact artifacts signed by a key it trusts, and refuses everything else with the reason.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { binaryPath, edgeBinaryPath, startServer } from "./lib/server.mjs";
import { client, closeAll, connected, once, received, waitFor } from "./lib/client.mjs";
import { pluginPath, pluginsDir } from "./lib/plugins.mjs";

const run = (binary, args) => spawnSync(binary, args, { encoding: "utf8" });

/** A new signing key in `dir`: { file, publicKey }. */
function keygen(dir, name) {
  const file = path.join(dir, `${name}.key`);
  const out = run(binaryPath("ioplex"), ["plugin", "keygen", file]);
  assert.equal(out.status, 0, out.stdout + out.stderr);
  const publicKey = out.stdout.trim().split("\n").at(-1);
  assert.match(publicKey, /^[0-9a-f]{64}$/);
  return { file, publicKey };
}

/** `ioplex plugin compile` of an example plugin into `output`. */
function compile(plugin, key, output) {
  fs.mkdirSync(path.dirname(output), { recursive: true });
  const out = run(binaryPath("ioplex"), ["plugin", "compile", pluginPath(plugin), "--signing-key", key.file, "-o", output]);
  assert.equal(out.status, 0, out.stdout + out.stderr);
  return out.stdout;
}

describe("precompiled plugins on the edge build", () => {
  let plugins;
  let build;
  let foreign;
  let server;

  before(async () => {
    plugins = pluginsDir();
    const keys = `${plugins.root}-keys`;
    fs.mkdirSync(keys);
    build = keygen(keys, "build");
    foreign = keygen(keys, "foreign");
    const at = (tenant, file) => path.join(plugins.root, tenant, file);
    // Served: a Rust plugin and the JavaScript one, precompiled and signed by the trusted key.
    compile("redact", build, at("acme", "redact.cwasm"));
    compile("profanity", build, at("acme", "words.cwasm"));
    fs.writeFileSync(at("acme", "words.toml"), `[settings]\nwords = ["heck"]\n`);
    // Refused, each with its reason: a plain component, an altered artifact, another key's artifact.
    plugins.install("plain", "redact", "redact");
    // (A plugin no other tenant loads: a damaged file whose signed header names an artifact the node
    // already verified and cached would load that artifact, which is what the key signed.)
    compile("stamp", build, at("forged", "stamp.cwasm"));
    const forged = fs.readFileSync(at("forged", "stamp.cwasm"));
    forged[forged.length - 100] ^= 0xff;
    fs.writeFileSync(at("forged", "stamp.cwasm"), forged);
    compile("redact", foreign, at("foreign", "redact.cwasm"));
    server = await startServer({
      binary: edgeBinaryPath(),
      args: ["--plugins-dir", plugins.root, "--plugins-poll", "100", "--plugin-trusted-keys", build.publicKey,
        "--plugin-cache-dir", plugins.cache],
      env: { RUST_LOG: "warn,ioplex::plugin=info" },
    });
  });
  after(async () => {
    await server?.stop();
    if (plugins) fs.rmSync(`${plugins.root}-keys`, { recursive: true, force: true });
    plugins?.cleanup();
  });
  afterEach(closeAll);

  const join = (s, room) => s.timeout(3000).emitWithAck("join", room);
  const publish = (s, spec) => s.timeout(3000).emitWithAck("publish", spec);

  test("the edge binary has no compiler: a plain component is refused with what to do instead", () => {
    const out = run(edgeBinaryPath(), ["plugin", "check", pluginPath("redact")]);
    assert.equal(out.status, 1);
    assert.match(out.stdout, /refused: this ioplex build has no compiler: install the plugin precompiled \(`ioplex plugin compile`/);
  });

  test("signed precompiled plugins in Rust and JavaScript serve their tenant", async () => {
    const [a, b] = [await connected(`${server.url}?tenant=acme`), await connected(`${server.url}?tenant=acme`)];
    for (const s of [a, b]) assert.deepEqual(await join(s, "room"), { ok: true });
    const got = received(b, "message");
    assert.deepEqual(await publish(a, { room: "room", event: "message", args: [{ text: "heck, card 4111 1111 1111 1111" }] }), { ok: true });
    assert.deepEqual(await got, [{ text: "h***, card [card]" }]);
  });

  test("a plain component, an altered artifact and another key's artifact are each refused with the reason", async () => {
    const logs = () => server.logs.join("");
    await waitFor(() => /foreign\/redact/.test(logs()) && /forged\/stamp/.test(logs()) && /plain\/redact/.test(logs()), 10000, "three refusals logged");
    assert.match(logs(), /plugin="?plain\/redact"?.*this ioplex build has no compiler/);
    assert.match(logs(), /plugin="?forged\/stamp"?.*the artifact is not the one that was signed/);
    assert.match(logs(), new RegExp(`plugin="?foreign/redact"?.*signed by ${foreign.publicKey}, a key this node does not trust`));
    // A tenant whose plugin was refused fails closed: nobody connects to be served untransformed.
    for (const tenant of ["plain", "forged", "foreign"]) {
      const [err] = await once(client(`${server.url}?tenant=${tenant}`), "connect_error");
      assert.match(err.message, /unavailable|refused/i, `${tenant}: ${err.message}`);
    }
    // The trusted tenant kept serving all along.
    assert.ok((await connected(`${server.url}?tenant=acme`)).connected);
  });

  test("a newly signed version swaps in with no restart; the default build accepts the same file only with the key", async () => {
    const file = path.join(plugins.root, "foreign", "redact.cwasm");
    compile("redact", build, `${file}.new`);
    fs.renameSync(`${file}.new`, file);
    const logs = () => server.logs.join("");
    await waitFor(() => /plugin serving tenant="?foreign"?/.test(logs()), 10000, "the trusted version serving");
    const [a, b] = [await connected(`${server.url}?tenant=foreign`), await connected(`${server.url}?tenant=foreign`)];
    for (const s of [a, b]) assert.deepEqual(await join(s, "room"), { ok: true });
    const got = received(b, "message");
    assert.deepEqual(await publish(a, { room: "room", event: "message", args: [{ text: "card 4111 1111 1111 1111" }] }), { ok: true });
    assert.deepEqual(await got, [{ text: "card [card]" }]);

    let out = run(binaryPath("ioplex"), ["plugin", "check", file]);
    assert.equal(out.status, 1);
    assert.match(out.stdout, /this node trusts no signing key/);
    out = run(binaryPath("ioplex"), ["plugin", "check", file, "--trusted-keys", build.publicKey]);
    assert.equal(out.status, 0, out.stdout);
    assert.match(out.stdout, /signature checked, loaded and smoke-tested/);
  });

  test("verified artifacts are kept in the node's cache and a restart serves from it", async () => {
    const cached = fs.readdirSync(plugins.cache).filter((f) => f.startsWith("precompiled-"));
    // redact (acme, and foreign's trusted version: the same artifact) and profanity.
    assert.equal(cached.length, 2, cached.join(", "));
    await server.stop();
    server = await startServer({
      binary: edgeBinaryPath(),
      args: ["--plugins-dir", plugins.root, "--plugin-trusted-keys", build.publicKey, "--plugin-cache-dir", plugins.cache],
      env: { RUST_LOG: "warn,ioplex::plugin=info" },
    });
    const [a, b] = [await connected(`${server.url}?tenant=acme`), await connected(`${server.url}?tenant=acme`)];
    for (const s of [a, b]) assert.deepEqual(await join(s, "room"), { ok: true });
    const got = received(b, "message");
    assert.deepEqual(await publish(a, { room: "room", event: "message", args: [{ text: "heck 4111 1111 1111 1111" }] }), { ok: true });
    assert.deepEqual(await got, [{ text: "h*** [card]" }]);
  });
});
