// Browser test of the API documentation served by the real jobq binary at /docs (Swagger UI):
// "Try it out" works against the live server, with and without the Authorize dialog's key.
//
// Starts `jobq serve` on a fresh database, creates an admin key with the CLI, and drives Debian's
// Chromium with playwright-core (the shared parts are in jobq.mjs).
//
//   node --test --test-concurrency=1 swagger.test.mjs      (scripts/ui-test runs this)
//
// Environment: JOBQ_BIN (default ../../target/debug/jobq), CHROMIUM (default /usr/bin/chromium),
// JOBQ_UI_PG (server URL without database, default postgres://postgres@127.0.0.1:5432).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Jobq, freePort, launchChromium } from './jobq.mjs';

const jobq = new Jobq('jobq_ui_swagger');
const withLog = (fn) => jobq.withLog(fn);
let base; // http://127.0.0.1:<port>
let browser;
let adminKey;

// -------------------------------------------------------------------------------------------------
// Helpers

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
  jobq.watch(t, page, context);
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
  // Nothing listens on the SMTP port: no email is sent.
  base = await jobq.start(['--smtp-url', `smtp://127.0.0.1:${await freePort()}`, '--shutdown-grace', '2s']);
  adminKey = await jobq.createKey('ui-swagger-admin', 'admin');
  browser = await launchChromium();
}, { timeout: 90_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await jobq.cleanUp();
}, { timeout: 30_000 });

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
