// Helpers for the plugin tests: the built example plugins, tenant plugin directories, and HS256 tokens.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Where plugins/build put the components (IOPLEX_PLUGINS_DIST overrides). */
export const dist = process.env.IOPLEX_PLUGINS_DIST ?? path.join(repo, "plugins", "dist");

export function pluginPath(name) {
  const file = path.join(dist, `${name}.wasm`);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run plugins/build first`);
  return file;
}

/** A fresh plugins directory: { root, install(tenant, as, plugin, manifestToml?), remove(tenant, as), cleanup() }. */
export function pluginsDir() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-plugins-"));
  return {
    root,
    cache: path.join(root, ".cache"),
    /** Copies a built plugin in as `<tenant>/<as>.wasm`, atomically (temp file + rename). */
    install(tenant, as, plugin, manifest) {
      const dir = path.join(root, tenant);
      fs.mkdirSync(dir, { recursive: true });
      if (manifest !== undefined) writeAtomically(path.join(dir, `${as}.toml`), manifest);
      writeAtomically(path.join(dir, `${as}.wasm`), fs.readFileSync(pluginPath(plugin)));
    },
    /** Writes raw bytes as `<tenant>/<as>.wasm` (for broken uploads). */
    installBytes(tenant, as, bytes) {
      const dir = path.join(root, tenant);
      fs.mkdirSync(dir, { recursive: true });
      writeAtomically(path.join(dir, `${as}.wasm`), bytes);
    },
    cleanup() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

function writeAtomically(file, data) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

/** An HS256 JWT over `claims`, signed with `secret`. */
export function token(claims, secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  const signature = crypto.createHmac("sha256", secret).update(signed).digest("base64url");
  return `${signed}.${signature}`;
}
