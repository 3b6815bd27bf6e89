// The chat example (examples/chat) in headless Chromium: two ioplex nodes on one Redis, each serving the
// page; two browser pages on different nodes talk in a conversation, see each other online, get a
// redacted message redacted, and a forbidden conversation is refused. Saves a screenshot.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { pluginPath } from "./lib/plugins.mjs";
import { mintToken } from "../examples/chat/mint-token.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const example = path.resolve(here, "../examples/chat");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

describe("chat example in a browser", () => {
  let redis;
  let nodes = [];
  let browser;
  let work;

  before(async () => {
    // The page and its manifests from the example; the plugins and the stock client bundle copied in.
    work = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-chat-"));
    fs.cpSync(example, work, { recursive: true, filter: (src) => !src.includes("node_modules") });
    fs.copyFileSync(pluginPath("room_auth"), path.join(work, "plugins.d/acme/10-auth.wasm"));
    fs.copyFileSync(pluginPath("redact"), path.join(work, "plugins.d/acme/20-redact.wasm"));
    fs.mkdirSync(path.join(work, "public/vendor"), { recursive: true });
    fs.copyFileSync(path.join(here, "node_modules/socket.io-client/dist/socket.io.min.js"), path.join(work, "public/vendor/socket.io.min.js"));

    redis = await startRedis();
    for (let i = 0; i < 2; i++) {
      nodes.push(await startServer({
        args: ["--config", path.join(work, "ioplex.toml"), "--plugins-dir", path.join(work, "plugins.d"), "--static-dir", path.join(work, "public"), "--plugin-cache-dir", "none"],
        env: { REDIS_URL: redis.url },
      }));
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  after(async () => {
    await browser?.close();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const open = async (node, claims, conversation = "42") => {
    const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
    page.on("pageerror", (err) => console.log(`# page error: ${err.message}`));
    await page.goto(`${node.url}/?conversation=${conversation}&token=${mintToken(claims)}`);
    return page;
  };
  const statusOf = (page) => page.locator("#status");

  test("two pages on two nodes chat, see each other online, and card numbers arrive redacted", async () => {
    const agent = await open(nodes[0], { sub: "agent-ann", name: "Ann", company: "acme", conversations: ["42"], role: "agent" });
    const visitor = await open(nodes[1], { sub: "visitor-vic", name: "Vic", company: "acme", conversations: ["42"], role: "visitor" });
    for (const page of [agent, visitor]) {
      await page.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: 10000 });
    }
    // Fleet-wide presence: each page lists both people, though they are on different nodes.
    for (const page of [agent, visitor]) {
      await page.waitForFunction(() => document.querySelectorAll("#online li").length === 2, null, { timeout: 10000 });
      assert.deepEqual(await page.locator("#online li").allTextContents(), ["Ann", "Vic"]);
    }

    await visitor.fill("#text", "hello, my card is 4111 1111 1111 1111, mail vic@example.com");
    await visitor.click("#send");
    const last = (page) => page.locator("#messages li").last();
    await agent.waitForFunction(() => document.querySelectorAll("#messages li").length >= 1, null, { timeout: 10000 });
    assert.equal(await last(agent).textContent(), "Vichello, my card is [card], mail [email]");

    await agent.fill("#text", "Hi Vic, how can I help?");
    await agent.click("#send");
    await visitor.waitForFunction(() => document.querySelectorAll("#messages li").length >= 2, null, { timeout: 10000 });
    assert.equal(await last(visitor).textContent(), "AnnHi Vic, how can I help?");

    fs.mkdirSync(path.join(here, "artifacts"), { recursive: true });
    await agent.screenshot({ path: path.join(here, "artifacts/chat.png") });
    console.log(`# screenshot: ${path.join(here, "artifacts/chat.png")}`);
  });

  test("a conversation the token does not grant is refused, with the reason on the page", async () => {
    const page = await open(nodes[1], { sub: "visitor-eve", name: "Eve", company: "acme", conversations: ["42"], role: "visitor" }, "43");
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("refused"), null, { timeout: 10000 });
    assert.equal(await statusOf(page).textContent(), "refused: your token does not grant room conversation:43");
  });

  test("a page with a forged token is refused at connect", async () => {
    const page = await browser.newPage();
    const forged = mintToken({ sub: "mallory", company: "acme", conversations: ["42"] }, "wrong-secret");
    await page.goto(`${nodes[0].url}/?token=${forged}`);
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("refused"), null, { timeout: 10000 });
    assert.equal(await statusOf(page).textContent(), "refused: token signature does not match");
  });
});
