// The /docs page in a real browser, with the network closed.
//
// Starts the release binary (ANTEROOM_BIN overrides target/release/anteroom)
// on a random 127.0.0.1 port with an example schema and a fresh SQLite file,
// drives Debian's headless Chromium (CHROMIUM overrides /usr/bin/chromium)
// with playwright-core, and aborts every request that is not to that server:
//
// 1. office-hours with its seed data: the reference lists colleges, majors,
//    advisors, faqs and students (screenshot of the top of the page:
//    target/browser/docs-page.png); "try it" on GET /colleges shows a 200 and
//    the seeded colleges in the page (screenshot of that part:
//    target/browser/docs-page-try-it.png).
// 2. records (JWT HS256): "try it" on GET /records shows 401; a bearer token
//    pasted into "Authorize" is sent and the same request shows 200; when the
//    page is opened again the token is still there (persistAuthorization).
// 3. a schema whose notes need an API key: likewise 401, then the key pasted
//    into "Authorize" is sent in its header and the request shows 200.
//
// 4. office-hours' waiting room through the browser's own EventSource (the
//    student app's key in the query: EventSource sends no headers): the page
//    sees its entry's position move when the student ahead is called, then
//    its own call and its end; after the end, EventSource's reconnection gets
//    the server's 204 and the EventSource stays closed.
//
// Each: no request left the server's origin, no Content-Security-Policy
// violation, no uncaught page error. Exits 1 on any failure, 0 otherwise, and
// stops every server it started whatever happens, within DEADLINE_MS.
//
// Run: (cd tests/browser && npm ci && node docs-page.mjs), after
// `cargo build --release`.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const BIN = process.env.ANTEROOM_BIN ? resolve(process.env.ANTEROOM_BIN) : join(ROOT, "target/release/anteroom");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = join(ROOT, "target/browser");
const DEADLINE_MS = 120_000;
const STEP_MS = 15_000;

const started = Date.now();
const servers = new Set();
const work = mkdtempSync(join(tmpdir(), "anteroom-docs-page-"));

function log(message) {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`[${s}s] ${message}`);
}

let passed = 0;

function check(condition, message) {
  if (!condition) throw new Error(message);
  passed += 1;
  log(`ok: ${message}`);
}

/** Starts `anteroom serve` on port 0; resolves once it says where it listens. */
function startServer(name, schema, extraArgs = [], env = {}) {
  const db = join(work, `${name}.db`);
  const child = spawn(
    BIN,
    ["serve", schema, "--port", "0", "--database-url", `sqlite://${db}`, ...extraArgs],
    { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] },
  );
  const server = { name, child, output: "", base: null };
  servers.add(server);
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${name}: no "listening on" within 20 s\n${server.output}`)), 20_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      fail(new Error(`${name}: cannot start ${BIN}: ${e.message}`));
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      servers.delete(server);
      if (!server.base) fail(new Error(`${name}: exited with ${code} before listening\n${server.output}`));
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      server.output += chunk;
      const m = !server.base && server.output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        server.base = m[1];
        clearTimeout(timer);
        log(`${name} listening on ${server.base}`);
        ok(server);
      }
    });
  });
}

/** SIGTERM, then SIGKILL after 5 s. */
async function stopServer(server) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((ok) => server.child.once("exit", ok));
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
  servers.delete(server);
}

/** An HS256 JWT for the records example. */
function hs256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const input = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", secret).update(input).digest("base64url");
  return `${input}.${sig}`;
}

/**
 * A browser context that lets requests reach `base` only: everything else is
 * aborted and recorded in `blocked`. Collects CSP violations and page errors.
 */
async function openContext(browser, base) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(STEP_MS);
  const origin = new URL(base).origin;
  const blocked = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== origin) {
      blocked.push(route.request().url());
      return route.abort("blockedbyclient");
    }
    return route.continue();
  });
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const finish = async () => {
    const violations = await page.evaluate(() => window.__violations).catch(() => []);
    check(blocked.length === 0, `no request left ${origin} (${blocked.join(", ") || "none attempted"})`);
    check(violations.length === 0, `no Content-Security-Policy violation (${violations.join(", ") || "none"})`);
    check(errors.length === 0, `no uncaught error in the page (${errors.join("; ") || "none"})`);
    await context.close();
  };
  return { page, finish };
}

/** The operation block of `GET path`, expanded. */
async function openOperation(page, path) {
  const op = page
    .locator(".opblock.opblock-get")
    .filter({ has: page.locator(`.opblock-summary-path[data-path="${path}"]`) })
    .first();
  if (!(await op.locator(".opblock-body").count())) {
    await op.locator(".opblock-summary").first().click();
  }
  await op.locator("button.execute").waitFor();
  return op;
}

/** Clicks Execute; returns the status and body the page shows. */
async function execute(page, op) {
  // An earlier answer is cleared first, so the one read below is this one's.
  const shown = op.locator(".live-responses-table");
  if (await shown.count()) {
    await op.locator("button.btn-clear").click();
    await shown.first().waitFor({ state: "detached" });
  }
  const [request] = await Promise.all([
    // The request "Execute" sends (the page's only fetch but the document's).
    page.waitForRequest((r) => r.resourceType() === "fetch" && new URL(r.url()).pathname !== "/openapi.json"),
    op.locator("button.execute").click(),
  ]);
  const status = op.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor();
  const body = await op.locator(".live-responses-table .response-col_description pre").first().innerText();
  return { request, status: (await status.innerText()).trim().split(/\s+/)[0], body };
}

async function screenshot(page, name, options = {}) {
  const path = join(SCREENSHOTS, name);
  await page.screenshot({ path, ...options });
  log(`screenshot: ${path}`);
}

async function officeHours(browser) {
  const server = await startServer(
    "office-hours",
    "examples/office-hours/anteroom.toml",
    ["--seed", "examples/office-hours/seed.json"],
    {
      APP_TOKEN: randomBytes(32).toString("base64"),
      ADVISOR_JWT_SECRET: randomBytes(32).toString("base64"),
    },
  );
  const { page, finish } = await openContext(browser, server.base);
  const response = await page.goto(`${server.base}/docs`);
  check(response.status() === 200, `GET /docs answers 200 (${response.status()})`);
  await page.locator(".opblock").first().waitFor();
  for (const res of ["colleges", "majors", "advisors", "faqs", "students", "queues/advising/entries"]) {
    const n = await page.locator(`.opblock-summary-path[data-path="/${res}"]`).count();
    check(n > 0, `the reference lists /${res}`);
  }
  mkdirSync(SCREENSHOTS, { recursive: true });
  await screenshot(page, "docs-page.png");
  const op = await openOperation(page, "/colleges");
  const shown = await execute(page, op);
  const sentTo = new URL(shown.request.url());
  check(
    sentTo.origin === server.base && sentTo.pathname === "/colleges",
    `"try it" sent GET ${shown.request.url()} to the server itself`,
  );
  check(shown.status === "200", `"try it" GET /colleges shows 200 (${shown.status})`);
  check(shown.body.includes("College of Engineering"), "the page shows the seeded colleges");
  // From the Execute button to the end of the response it shows.
  await page.evaluate(() => window.scrollTo(0, 0));
  const from = await op.locator("button.execute").boundingBox();
  const to = await op.locator(".live-responses-table").first().boundingBox();
  const top = Math.floor(from.y - 16);
  await screenshot(page, "docs-page-try-it.png", {
    fullPage: true,
    clip: { x: 0, y: top, width: 1280, height: Math.ceil(to.y + to.height + 16 - top) },
  });
  await finish();
  await stopServer(server);
}

async function records(browser) {
  const secret = randomBytes(32).toString("base64");
  const server = await startServer("records", "examples/records/anteroom.toml", [], {
    RECORDS_JWT_SECRET: secret,
  });
  const token = hs256(secret, {
    iss: "records-demo",
    sub: "docs-page-test",
    exp: Math.floor(Date.now() / 1000) + 600,
  });
  const { page, finish } = await openContext(browser, server.base);
  await page.goto(`${server.base}/docs`);
  let op = await openOperation(page, "/records");
  let shown = await execute(page, op);
  check(shown.status === "401", `without a token, "try it" GET /records shows 401 (${shown.status})`);

  await authorize(page, token);
  shown = await execute(page, op);
  const sent = await shown.request.headerValue("authorization");
  check(sent === `Bearer ${token}`, "the token pasted into Authorize is sent as a bearer token");
  check(shown.status === "200", `with it, "try it" GET /records shows 200 (${shown.status})`);

  // Without the #fragment deep linking left in the URL, nothing opens by itself.
  await page.goto(`${server.base}/docs`);
  op = await openOperation(page, "/records");
  shown = await execute(page, op);
  check(
    (await shown.request.headerValue("authorization")) === `Bearer ${token}` && shown.status === "200",
    `opened again, the page still sends the token (persistAuthorization): ${shown.status}`,
  );
  await finish();
  await stopServer(server);
}

/** Pastes `value` into the only security scheme of the Authorize dialog. */
async function authorize(page, value) {
  await page.locator(".auth-wrapper button.authorize").click();
  const modal = page.locator(".modal-ux");
  await modal.locator("input").first().fill(value);
  await modal.locator("button.authorize").first().click();
  await modal.locator("button.btn-done").click();
}

const API_KEY_SCHEMA = `[app]
name = "keyed"

[auth]
api_keys = { env = "DOCS_PAGE_API_KEY", header = "x-api-key", role = "service" }

[resources.notes]
fields.title = { type = "string", required = true }
rules = { list = "role:service", read = "role:service" }
`;

async function apiKey(browser) {
  const key = randomBytes(32).toString("hex");
  const schema = join(work, "keyed.toml");
  writeFileSync(schema, API_KEY_SCHEMA);
  const server = await startServer("api-key", schema, [], { DOCS_PAGE_API_KEY: key });
  const { page, finish } = await openContext(browser, server.base);
  await page.goto(`${server.base}/docs`);
  const op = await openOperation(page, "/notes");
  let shown = await execute(page, op);
  check(shown.status === "401", `without the key, "try it" GET /notes shows 401 (${shown.status})`);
  await authorize(page, key);
  shown = await execute(page, op);
  check(
    (await shown.request.headerValue("x-api-key")) === key,
    "the API key pasted into Authorize is sent in x-api-key",
  );
  check(shown.status === "200", `with it, "try it" GET /notes shows 200 (${shown.status})`);
  await finish();
  await stopServer(server);
}

async function queueEvents(browser) {
  const appToken = randomBytes(24).toString("hex");
  const secret = randomBytes(32).toString("base64");
  const server = await startServer(
    "office-hours-queue",
    "examples/office-hours/anteroom.toml",
    ["--seed", "examples/office-hours/seed.json"],
    { APP_TOKEN: appToken, ADVISOR_JWT_SECRET: secret },
  );
  const now = Math.floor(Date.now() / 1000);
  const advisor = { authorization: `Bearer ${hs256(secret, { sub: "ada", role: "advisor", iat: now, exp: now + 600 })}` };
  const app = { "x-api-key": appToken };
  const call = async (method, path, headers, body) => {
    const r = await fetch(`${server.base}${path}`, {
      method,
      headers: body ? { ...headers, "content-type": "application/json" } : headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: r.status, body: r.status === 204 ? null : await r.json() };
  };
  const line = "major_id=1&is_undergraduate=true";
  // Students 1 and 2 of the seed: undergraduates of major 1.
  const sam = await call("POST", "/queues/advising/entries", app, { member_id: 1, topic: "change of major" });
  const lee = await call("POST", "/queues/advising/entries", app, { member_id: 2, topic: "registration hold" });
  check(sam.status === 201 && lee.status === 201, `two students join (${sam.status}, ${lee.status})`);

  const { page, finish } = await openContext(browser, server.base);
  const streamAnswers = [];
  page.on("response", (r) => {
    if (new URL(r.url()).pathname.endsWith("/events")) streamAnswers.push(r.status());
  });
  await page.goto(`${server.base}/health`);
  await page.evaluate(
    ({ path }) => {
      window.__events = [];
      window.__opens = 0;
      const source = new EventSource(path);
      window.__source = source;
      source.addEventListener("open", () => (window.__opens += 1));
      source.addEventListener("entry", (e) => window.__events.push({ id: e.lastEventId, ...JSON.parse(e.data) }));
    },
    { path: `/queues/advising/entries/${lee.body.id}/events?app_token=${appToken}` },
  );
  const event = async (description, predicate) => {
    const handle = await page.waitForFunction(
      (source) => window.__events.find(new Function("e", `return ${source}`)),
      predicate,
      { timeout: STEP_MS },
    );
    const found = await handle.jsonValue();
    check(true, `the page's EventSource got ${description}`);
    return found;
  };
  await event("Lee at position 2", "e.position === 2");
  check((await call("POST", `/queues/advising/next?${line}`, advisor)).status === 200, "the advisor calls Sam");
  await event("Lee at position 1", "e.position === 1");
  const leeCalled = await call("POST", `/queues/advising/next?${line}`, advisor);
  check(leeCalled.status === 200 && leeCalled.body.id === lee.body.id, "the advisor calls Lee");
  await event("Lee called", "e.status === 'serving'");
  check((await call("POST", `/queues/advising/entries/${lee.body.id}/done`, advisor)).status === 200, "the advisor finishes with Lee");
  await event("Lee done", "e.status === 'done'");
  // The server ends the stream; EventSource reconnects with Last-Event-ID,
  // gets 204 and stops for good (readyState CLOSED = 2).
  await page.waitForFunction(() => window.__source.readyState === 2, null, { timeout: STEP_MS });
  const seen = await page.evaluate(() => ({ opens: window.__opens, events: window.__events.length }));
  check(seen.opens === 1, `EventSource opened once (${seen.opens} opens, ${seen.events} events)`);
  check(
    streamAnswers.join(",") === "200,204",
    `it reconnected once, got 204 and stopped (answers: ${streamAnswers.join(", ")})`,
  );
  await finish();
  await stopServer(server);
}

async function main() {
  log(`binary ${BIN}, browser ${CHROMIUM}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    await officeHours(browser);
    await records(browser);
    await apiKey(browser);
    await queueEvents(browser);
  } finally {
    await browser.close();
  }
}

async function cleanup() {
  await Promise.all([...servers].map(stopServer));
  rmSync(work, { recursive: true, force: true });
}

const deadline = setTimeout(() => {
  console.error(`FAIL: not done within ${DEADLINE_MS / 1000} s`);
  console.log(`docs-page: ${passed} passed, 1 failed`);
  for (const s of servers) s.child.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
  process.exit(1);
}, DEADLINE_MS);

try {
  await main();
  await cleanup();
  clearTimeout(deadline);
  console.log(`docs-page: ${passed} passed, 0 failed`);
} catch (e) {
  console.error(`FAIL: ${e.stack ?? e}`);
  for (const s of servers) if (s.output) console.error(`--- ${s.name} log ---\n${s.output}`);
  await cleanup();
  clearTimeout(deadline);
  console.log(`docs-page: ${passed} passed, 1 failed`);
  process.exit(1);
}
