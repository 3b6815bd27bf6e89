// Builds slow_start.wat into a component exporting the `hook-authorize-join` world of wit/plugin.wit,
// with the WebAssembly tools of jco (installed for the JavaScript plugin: run plugins/build).
//   node build.mjs OUT.wasm
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../js/profanity/package.json"));
const jco = await import(require.resolve("@bytecodealliance/jco"));

const core = await jco.parse(fs.readFileSync(path.join(here, "slow_start.wat"), "utf8"));
const embedded = await jco.componentEmbed({
  binary: core,
  witSource: fs.readFileSync(path.join(here, "../../../wit/plugin.wit"), "utf8"),
  world: "hook-authorize-join",
});
fs.writeFileSync(process.argv[2], await jco.componentNew(embedded));
