// Browser test of the API documentation served by the real jobq binary at /docs (Swagger UI):
// "Try it out" works against the live server, with and without the Authorize dialog's key.
//
// Starts `jobq serve` on a fresh database, creates an admin key with the CLI, and drives Debian's
// Chromium with playwright-core, as dashboard.test.mjs does.
//
//   node --test --test-concurrency=1 swagger.test.mjs      (scripts/ui-test runs this)
//
// Environment: JOBQ_BIN (default ../../target/debug/jobq), CHROMIUM (default /usr/bin/chromium),
// JOBQ_UI_PG (server URL without database, default postgres://postgres@127.0.0.1:5432).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const JOBQ = process.env.JOBQ_BIN || path.join(ROOT, 'target/debug/jobq');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PG = (process.env.JOBQ_UI_PG || 'postgres://postgres@127.0.0.1:5432').replace(/\/$/, '');
const DB_NAME = `jobq_ui_swagger_${process.pid}_${Date.now().toString(36)}`;
const DB_URL = `${PG}/${DB_NAME}`;
const JOBQ_LOG_FILE = path.join(os.tmpdir(), `${DB_NAME}.log`); // jobq's whole log, kept on failure
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-dev-shm-usage',
];

let jobq; // the child process
let jobqLog = []; // its last log lines, printed when a test fails
let base; // http://127.0.0.1:<port>
let browser;
let adminKey;
let failed = false;
const openPages = []; // of the running test, for a screenshot when it fails

// -------------------------------------------------------------------------------------------------
// Helpers (as in dashboard.test.mjs)

function run(cmd, args, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, cwd: os.tmpdir() }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(cmd)} ${args[0]} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Starts jobq and resolves with its address, read from its JSON log ("jobq listening"). */
function startJobq(smtpPort) {
  return new Promise((resolve, reject) => {
    const args = [
      'serve',
      '--listen', '127.0.0.1:0',
      '--database-url', DB_URL,
      '--smtp-url', `smtp://127.0.0.1:${smtpPort}`,
      '--shutdown-grace', '2s',
      '--log-format', 'json',
    ];
    const child = spawn(JOBQ, args, { cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    jobq = child;
    const timer = setTimeout(() => reject(new Error(`jobq did not start:\n${jobqLog.join('\n')}`)), 60_000);
    const logFile = fs.createWriteStream(JOBQ_LOG_FILE, { flags: 'a' });
    const onLine = (line) => {
      logFile.write(`${line}\n`);
      jobqLog.push(line);
      if (jobqLog.length > 200) jobqLog = jobqLog.slice(-200);
      try {
        const rec = JSON.parse(line);
        if (rec.message === 'jobq listening' && rec.addr) {
          clearTimeout(timer);
          resolve(`http://${rec.addr}`);
        }
      } catch {
        // not JSON (a panic message, say): kept in the log tail
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          onLine(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`jobq exited (${code ?? signal}):\n${jobqLog.join('\n')}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function stopJobq() {
  if (!jobq || jobq.exitCode !== null || jobq.signalCode !== null) return;
  const exited = new Promise((r) => jobq.once('exit', r));
  jobq.kill('SIGTERM');
  const t = setTimeout(() => jobq.kill('SIGKILL'), 8_000);
  await exited;
  clearTimeout(t);
}

/** A REST call as a key; throws on a non-2xx answer. */
async function rest(method, urlPath, key) {
  const res = await fetch(base + urlPath, {
    method,
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(10_000),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/**
 * A fresh browser context and page that records page errors and console errors. Chromium logs
 * every 4xx answer as a console error ("Failed to load resource: ... status of 401"): those of
 * `allowedStatuses` (the requests the test makes without a key) are expected.
 */
async function openPage(t, { allowedStatuses = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const url = msg.location().url || '';
    // The browser asks for /favicon.ico on its own; jobq serves none (404), and that is fine.
    const favicon = url === `${base}/favicon.ico`;
    const expected = favicon || allowedStatuses.some(
      (s) => text.startsWith(`Failed to load resource: the server responded with a status of ${s} `) && url.startsWith(base),
    );
    if (!expected) errors.push(`console.error: ${text} (${url})`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  openPages.push(page);
  t.after(async () => {
    openPages.splice(openPages.indexOf(page), 1);
    await context.close();
  });
  return {
    page,
    assertNoErrors() {
      assert.deepEqual(errors, [], 'the page logged errors');
    },
  };
}

// -------------------------------------------------------------------------------------------------
// Swagger UI

/** The operation's block (Swagger UI's id: operations-<tag>-<operationId>), expanded. */
async function expand(page, tag, operationId) {
  const op = page.locator(`#operations-${tag}-${operationId}`);
  await op.waitFor({ state: 'visible' });
  if (!(await op.evaluate((el) => el.classList.contains('is-open')))) {
    await op.locator('.opblock-summary-control, .opblock-summary').first().click();
  }
  await op.locator('.opblock-body').waitFor({ state: 'visible' });
  return op;
}

/** Clicks "Try it out" in an expanded operation (once: then it says "Cancel"). */
async function tryItOut(op) {
  await op.locator('.try-out__btn', { hasText: 'Try it out' }).click();
  await op.locator('.execute').waitFor({ state: 'visible' });
}

/**
 * Clicks "Execute" and returns the live response: its status (as shown) and body text. A
 * previous live response is cleared first, so that the one read is the new one.
 */
async function execute(op) {
  const clear = op.locator('.btn-clear');
  if (await clear.isVisible()) {
    await clear.click();
    await op.locator('.live-responses-table').waitFor({ state: 'detached' });
  }
  await op.locator('.execute').click();
  const status = op.locator('.live-responses-table .response .response-col_status');
  await status.first().waitFor({ state: 'visible', timeout: 15_000 });
  const body = op.locator('.live-responses-table .response-col_description .microlight, .live-responses-table .response-col_description pre');
  await body.first().waitFor({ state: 'visible' });
  return {
    status: (await status.first().textContent({ timeout: 5_000 })).trim(),
    body: (await body.first().textContent({ timeout: 5_000 })).trim(),
  };
}

/** Opens the Authorize dialog (the button at the top of the page). */
async function openAuthorize(page) {
  await page.locator('.auth-wrapper .authorize').click();
  const dialog = page.locator('.dialog-ux .modal-ux');
  await dialog.waitFor({ state: 'visible' });
  return dialog;
}

async function closeAuthorize(page, dialog) {
  await dialog.locator('.btn-done', { hasText: 'Close' }).click();
  await dialog.waitFor({ state: 'hidden' });
}

// -------------------------------------------------------------------------------------------------
// Setup and teardown

before(async () => {
  base = await startJobq(await freePort()); // nothing listens on the SMTP port: no email is sent
  adminKey = (await run(JOBQ, ['keys', 'create', '--name', 'ui-swagger-admin', '--role', 'admin', '--database-url', DB_URL])).trim();
  assert.match(adminKey, /^jq_/);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 90_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopJobq();
  if (!failed) fs.rmSync(JOBQ_LOG_FILE, { force: true });
  await run('psql', [`${PG}/postgres`, '-qc', `DROP DATABASE IF EXISTS "${DB_NAME}" WITH (FORCE)`]).catch((e) => {
    process.stderr.write(`could not drop ${DB_NAME}: ${e.message}\n`);
  });
}, { timeout: 30_000 });

process.on('exit', () => {
  if (jobq && jobq.exitCode === null && jobq.signalCode === null) jobq.kill('SIGKILL');
});

// A failing test prints jobq's last log lines and a screenshot of the page.
function withLog(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      failed = true;
      process.stderr.write(`\n--- jobq log (last lines; all of it: ${JOBQ_LOG_FILE}) ---\n${jobqLog.slice(-40).join('\n')}\n---\n`);
      for (const [i, page] of openPages.entries()) {
        const file = path.join(os.tmpdir(), `jobq-ui-swagger-failure-${process.pid}-${i}.png`);
        const shot = await page.screenshot({ path: file, fullPage: true }).then(() => true, () => false);
        if (shot) process.stderr.write(`screenshot of the page: ${file} (${page.url()})\n`);
      }
      throw e;
    }
  };
}

// -------------------------------------------------------------------------------------------------
// Tests

test('1. Swagger UI: try it out enqueues a hash job with the Authorize key; without it, 401', { timeout: 60_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t, { allowedStatuses: [401] });
  await page.goto(`${base}/docs`);
  await page.locator('.swagger-ui .info .title', { hasText: 'jobq' }).waitFor();
  await page.locator('.opblock').first().waitFor();

  // Without a key the server refuses, and Swagger UI shows it.
  const enqueue = await expand(page, 'Jobs', 'enqueue_hash');
  assert.match(await enqueue.locator('.opblock-summary-path').first().textContent(), /\/v1\/jobs\/hash/);
  await tryItOut(enqueue);
  const editor = enqueue.locator('textarea.body-param__text');
  await editor.waitFor({ state: 'visible' });
  await editor.fill(JSON.stringify({ data: 'data1', repeat: 1000 }));
  const anonymous = await execute(enqueue);
  assert.equal(anonymous.status, '401', `without a key: ${anonymous.body}`);
  assert.match(anonymous.body, /"code":\s*"unauthorized"/);

  // Authorize with the admin key.
  let dialog = await openAuthorize(page);
  const value = dialog.locator('input#auth-bearer-value, .auth-container input[type="text"]').first();
  await value.fill(adminKey);
  await dialog.locator('.auth-btn-wrapper button.authorize', { hasText: 'Authorize' }).click();
  await dialog.locator('.auth-btn-wrapper button', { hasText: 'Logout' }).waitFor();
  await closeAuthorize(page, dialog);
  await page.locator('.auth-wrapper .authorize.locked').waitFor(); // the lock shows "authorized"

  // The same request is accepted now: 202 with the queued job.
  assert.equal(await editor.inputValue(), JSON.stringify({ data: 'data1', repeat: 1000 }), 'the body is kept');
  const accepted = await execute(enqueue);
  assert.equal(accepted.status, '202', `with the key: ${accepted.body}`);
  const job = JSON.parse(accepted.body);
  assert.match(job.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(job.kind, 'hash');
  assert.ok(['queued', 'running', 'succeeded'].includes(job.status), `status ${job.status}`);
  assert.deepEqual(job.input, { kind: 'hash', algorithm: 'sha256', data_bytes: 5, repeat: 1000, total_bytes: 5000 });
  // The job is real: the API knows it.
  const stored = await rest('GET', `/v1/jobs/${job.id}`, adminKey);
  assert.equal(stored.id, job.id);
  assert.equal(stored.kind, 'hash');
  // The curl line shown sends the key.
  assert.match(await enqueue.locator('.curl-command').textContent(), new RegExp(`Authorization: Bearer ${adminKey}`));

  // An ops operation with the key: 200.
  const stats = await expand(page, 'Operations', 'get_stats');
  await tryItOut(stats);
  const withKey = await execute(stats);
  assert.equal(withKey.status, '200', `GET /v1/stats with the key: ${withKey.body}`);
  assert.match(withKey.body, /"window_seconds"/);

  // After "Logout" in the Authorize dialog the key is no longer sent: 401.
  dialog = await openAuthorize(page);
  await dialog.locator('.auth-btn-wrapper button', { hasText: 'Logout' }).click();
  await dialog.locator('.auth-btn-wrapper button.authorize', { hasText: 'Authorize' }).waitFor();
  await closeAuthorize(page, dialog);
  const loggedOut = await execute(stats);
  assert.equal(loggedOut.status, '401', `GET /v1/stats after logout: ${loggedOut.body}`);
  assert.match(loggedOut.body, /"code":\s*"unauthorized"/);
  assertNoErrors();
}));
