// Builds profanity.wasm, a WebAssembly component, with componentize-js's JS API (the `jco componentize`
// command fails on Node 20 here: "failed to get path metadata").
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = process.argv[2] ?? here('./profanity.wasm');

const { component } = await componentize({
  sourcePath: here('./profanity.js'),
  witPath: here('../../../wit'),
  worldName: 'moderator',
  // No clocks, randomness, stdio or HTTP: the plugin needs none, and the host grants none.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.byteLength} bytes)`);
