// Browser tests of the dashboard served by the real jobq binary at /ui.
//
// Starts `jobq serve` on a fresh database with a closed SMTP port (so emails fail), creates an
// admin and a client key with the CLI, and drives Debian's Chromium with playwright-core.
// A tiny SMTP sink (below) is started on that port half-way, so that a retried email succeeds.
//
//   node --test --test-concurrency=1 dashboard.test.mjs      (scripts/ui-test runs this)
//
// Environment: JOBQ_BIN (default ../../target/debug/jobq), CHROMIUM (default /usr/bin/chromium),
// JOBQ_UI_PG (server URL without database, default postgres://postgres@127.0.0.1:5432),
// SCREENSHOTS=1 to (re)write docs/dashboard-overview.png and docs/dashboard-job-detail.png,
// JOBQ_UI_HEARTBEAT=<duration> to pass --heartbeat-interval to jobq.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';

import { Jobq, ROOT, freePort, launchChromium, sleep } from './jobq.mjs';

const SCREENSHOTS = process.env.SCREENSHOTS === '1';
const HEARTBEAT = process.env.JOBQ_UI_HEARTBEAT; // see startJobq

const jobq = new Jobq('jobq_ui_test');
const withLog = (fn) => jobq.withLog(fn);
let base; // http://127.0.0.1:<port>
let smtpPort;
let sink; // the SMTP sink, once started
let browser;
let adminKey;
let clientKey;

// -------------------------------------------------------------------------------------------------
// Helpers

/** Starts jobq (on `port`, or any) and resolves with its address. */
function startJobq(port = 0) {
  const flags = [
    '--smtp-url', `smtp://127.0.0.1:${smtpPort}`,
    '--progress-interval', '0ms',
    '--retry-base', '1s',
    '--shutdown-grace', '2s',
  ];
  // JOBQ_UI_HEARTBEAT=1h sidesteps the worker stall of jobq builds before the fix in
  // src/worker/backend.rs ("No stalled worker"): jobs stayed `queued` after a few seconds.
  if (HEARTBEAT) flags.push('--heartbeat-interval', HEARTBEAT);
  return jobq.start(flags, port);
}

/**
 * A minimal SMTP server (enough for lettre without TLS): accepts every message, except that a
 * recipient whose address contains "reject" gets a permanent 550 (the job fails at once).
 */
function startSmtpSink(port) {
  const messages = [];
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.setEncoding('utf8');
    const reply = (line) => sock.write(`${line}\r\n`);
    let buf = '';
    let data = null; // lines of the message being received
    let rcpt = [];
    reply('220 ui-test-sink ESMTP');
    sock.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (data) {
          if (line === '.') {
            messages.push({ rcpt, text: data.join('\n') });
            data = null;
            rcpt = [];
            reply('250 2.0.0 Ok: queued by ui-test-sink');
          } else data.push(line.startsWith('..') ? line.slice(1) : line);
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') reply('250 ui-test-sink');
        else if (verb === 'MAIL') {
          rcpt = [];
          reply('250 2.1.0 Ok');
        } else if (verb === 'RCPT') {
          if (/reject/i.test(line)) reply('550 5.1.1 no such user here');
          else {
            rcpt.push(line);
            reply('250 2.1.5 Ok');
          }
        } else if (verb === 'DATA') {
          data = [];
          reply('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET' || verb === 'NOOP') reply('250 2.0.0 Ok');
        else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          sock.end();
        } else reply('502 5.5.2 Command not recognized');
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        messages,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }),
    );
  });
}

/** A REST call as a key; throws on a non-2xx answer. */
async function rest(method, urlPath, key, body) {
  const res = await fetch(base + urlPath, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

async function waitFor(what, fn, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const jobIs = (id, ...statuses) =>
  waitFor(`job ${id} to be ${statuses.join('/')}`, async () => {
    const job = await rest('GET', `/v1/jobs/${id}`, adminKey);
    return statuses.includes(job.status) ? job : null;
  });

/**
 * A fresh browser context (its own sessionStorage) and page that records console errors and
 * page errors. `allowed` lists the network errors the test provokes on purpose: Chromium logs
 * every 4xx answer as a console error ("Failed to load resource: ... status of 403"), and the
 * role probe of a client key (GET /v1/stats -> 403) is such an answer by design.
 */
async function openPage(t, { viewport = { width: 1280, height: 900 }, allowed = [], allowedText = [] } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors = [];
  const allowedSeen = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const url = msg.location().url || '';
    const ok = allowed.find(
      (a) =>
        text.startsWith(`Failed to load resource: the server responded with a status of ${a.status} `) &&
        url.startsWith(base) &&
        new URL(url).pathname === a.path,
    );
    if (ok) allowedSeen.push(`${ok.status} ${ok.path}`);
    else if (!allowedText.some((re) => re.test(text))) errors.push(`console.error: ${text} (${url})`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  jobq.watch(t, page, context);
  return {
    page,
    allowedSeen,
    assertNoErrors() {
      assert.deepEqual(errors, [], 'the page logged errors');
    },
  };
}

async function signIn(page, key) {
  await page.goto(`${base}/ui`);
  await page.locator('#api-key').fill(key);
  await page.keyboard.press('Enter'); // the form works from the keyboard
  await page.locator('.session').waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#live')?.dataset.state === 'live');
}

/** Goes to a view without reloading the page (the key lives in sessionStorage anyway). */
async function go(page, hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
}

const text = (locator) => locator.textContent({ timeout: 10_000 });

async function overviewCount(page, kind, status) {
  const t = await text(page.locator(`#overview [data-kind="${kind}"] [data-count="${status}"]`));
  return Number(t.replace(/[^0-9]/g, ''));
}

const STATUSES = ['queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'];

/** The overview shows exactly what /v1/stats says (waits for the live refresh to settle). */
async function overviewMatchesStats(page) {
  await waitFor('the overview to match /v1/stats', async () => {
    const stats = await rest('GET', '/v1/stats', adminKey);
    for (const k of stats.kinds) {
      for (const s of STATUSES) {
        if ((await overviewCount(page, k.kind, s)) !== k.counts[s]) return false;
      }
    }
    return true;
  });
}

// -------------------------------------------------------------------------------------------------
// Setup and teardown

before(async () => {
  smtpPort = await freePort(); // nothing listens there yet: emails fail with "connection refused"
  base = await startJobq();
  adminKey = await jobq.createKey('ui-admin', 'admin');
  clientKey = await jobq.createKey('ui-client', 'client', 'default');
  browser = await launchChromium();
}, { timeout: 90_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (sink) await sink.close();
  await jobq.cleanUp();
}, { timeout: 30_000 });

// -------------------------------------------------------------------------------------------------
// Tests

test('1. an admin signs in; the overview shows the counts and follows them live', { timeout: SCREENSHOTS ? 80_000 : 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t, {
    allowed: [{ status: 401, path: '/v1/stats' }], // the wrong key tried first
  });

  // A wrong key is refused with a message, and nothing is kept.
  await page.goto(`${base}/ui`);
  await page.locator('#api-key').fill('jq_this_is_not_a_key');
  await page.keyboard.press('Enter');
  await page.locator('#signin-error', { hasText: 'unknown or revoked' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  await page.locator('#api-key').fill(adminKey);
  await page.keyboard.press('Enter');
  await page.locator('#overview').waitFor();
  assert.equal(await text(page.locator('#role')), 'operator');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('jobq.key')), adminKey);
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'the key is not in localStorage');
  await page.waitForFunction(() => document.querySelector('#live')?.dataset.state === 'live');
  await overviewMatchesStats(page);
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  // Keyboard: the first focusable element is the skip link; it moves focus to the content.
  const hashBefore = await page.evaluate(() => location.hash);
  assert.equal(
    await page.evaluate(() => document.querySelector('a[href], button, input, select, textarea, [tabindex="0"]')?.className),
    'skip-link',
  );
  await page.locator('.skip-link').focus();
  assert.ok((await page.locator('.skip-link').boundingBox()).y >= 0, 'the focused skip link is on screen');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
  assert.equal(await page.evaluate(() => location.hash), hashBefore, 'the view stays');

  // Work arrives: the counts and the charts follow, without a reload.
  const ids = [];
  for (let i = 0; i < 5; i += 1) {
    ids.push((await rest('POST', '/v1/jobs/hash', adminKey, { data: `ui-${i}`, repeat: 1000 * (i + 1) })).id);
  }
  for (let i = 0; i < 2; i += 1) {
    ids.push((await rest('POST', '/v1/jobs/email', adminKey, { to: 'ops@example.com', subject: `overview ${i}`, body: 'x', max_attempts: 1 })).id);
  }
  ids.push((await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 5, step_duration_ms: 100 })).id);
  for (const id of ids) await jobIs(id, 'succeeded', 'failed');

  await page.waitForFunction(
    () => Number(document.querySelector('[data-kind="hash"] [data-count="succeeded"]').textContent) >= 5,
    null,
    { timeout: 10_000 },
  );
  await overviewMatchesStats(page);
  assert.equal(await overviewCount(page, 'hash', 'succeeded'), 5);
  assert.equal(await overviewCount(page, 'email', 'failed'), 2);
  assert.equal(await overviewCount(page, 'long_running', 'succeeded'), 1);
  // The throughput charts drew the finished jobs (SVG bars).
  await page.waitForFunction(() => {
    const total = (k) => Number(document.querySelector(`[data-kind="${k}"] svg.chart-svg`)?.dataset.total);
    return total('hash') === 5 && total('email') === 2 && total('long_running') === 1;
  });
  assert.ok((await page.locator('[data-kind="hash"] svg.chart-svg rect.bar-succeeded').count()) >= 1);
  assert.ok((await page.locator('[data-kind="email"] svg.chart-svg rect.bar-failed').count()) >= 1);
  // Ops figures are there for an admin.
  assert.match(await text(page.locator('[data-kind="hash"] [data-figure="runtime"]')), /mean \d.*p95 \d/);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');

  if (SCREENSHOTS) {
    // A few more bars in the charts: batches of work 10 s apart, and two jobs still running.
    for (let batch = 0; batch < 3; batch += 1) {
      await sleep(10_000);
      for (let i = 0; i < 2 + batch * 2; i += 1) {
        await rest('POST', '/v1/jobs/hash', adminKey, { data: `shot-${batch}-${i}`, repeat: 1000 });
      }
      await rest('POST', '/v1/jobs/email', adminKey, { to: 'ops@example.com', subject: 'shot', body: 'x', max_attempts: 1 });
      await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 3 + batch, step_duration_ms: 200 });
    }
    await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 60, step_duration_ms: 300 });
    await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 60, step_duration_ms: 300 });
    await sleep(2000);
    await page.screenshot({ path: path.join(ROOT, 'docs/dashboard-overview.png') });
  }
  assertNoErrors();
}));

test('2. the progress bar of a running long-running job advances live', { timeout: 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t);
  await signIn(page, adminKey);
  const job = await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 20, step_duration_ms: 300 });
  await go(page, `#/jobs/${job.id}`);
  await page.locator('#job-detail h1', { hasText: 'Long-running job' }).waitFor();

  // Record every value the bar shows, in the page, without touching the app.
  await page.evaluate(() => {
    window.__sameDocument = true;
    window.__seen = [];
    window.__sampler = setInterval(() => {
      const bar = document.querySelector('#job-progress');
      if (bar && window.__seen[window.__seen.length - 1] !== bar.value) window.__seen.push(bar.value);
    }, 40);
  });
  let shot = !SCREENSHOTS;
  await waitFor('the bar to reach 20/20', async () => {
    const seen = await page.evaluate(() => window.__seen);
    const last = seen[seen.length - 1];
    if (!shot && last >= 8 && last <= 14) {
      shot = true;
      await page.screenshot({ path: path.join(ROOT, 'docs/dashboard-job-detail.png'), fullPage: true });
    }
    return last === 20;
  }, 20_000);
  const seen = await page.evaluate(() => {
    clearInterval(window.__sampler);
    return window.__seen;
  });
  const increases = seen.filter((v, i) => i > 0 && v > seen[i - 1]).length;
  const midRun = seen.filter((v) => v > 0 && v < 20);
  assert.ok(increases >= 2, `the bar advanced at least twice: ${JSON.stringify(seen)}`);
  assert.ok(midRun.length >= 2, `the bar showed values during the run: ${JSON.stringify(seen)}`);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  assert.match(await text(page.locator('#progress-text')), /20 of 20 steps/);

  // The end arrives live too, with the result and the timeline.
  await page.locator('.job-facts [data-status="succeeded"]').waitFor();
  await page.locator('#timeline [data-type="succeeded"]').waitFor();
  assert.equal(await page.locator('#timeline [data-type="started"]').count(), 1);
  assert.match(await text(page.locator('#timeline [data-type="progress"]')), /20 \/ 20/);
  await page.locator('#job-outcome dd', { hasText: /^20$/ }).waitFor(); // the result, fetched after the event
  assert.match(await text(page.locator('#job-detail')), /Steps completed\s*20/);
  assertNoErrors();
}));

test('3. a failed job shows in the table; retried from the UI it succeeds', { timeout: 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t);
  const job = await rest('POST', '/v1/jobs/email', adminKey, {
    to: 'ada@example.com',
    subject: 'ui-test retry me',
    body: 'Hello from the browser tests.',
    max_attempts: 1,
  });
  const failed = await jobIs(job.id, 'failed', 'succeeded');
  assert.equal(failed.status, 'failed', 'the email failed (nothing listens on the SMTP port yet)');

  await signIn(page, adminKey);
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  const form = page.locator('#job-filters');
  await form.getByLabel('failed').check();
  await form.getByLabel('Email').check();
  await form.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForFunction(() => location.hash.includes('status=failed') && location.hash.includes('kind=email'));
  const row = page.locator(`#jobs-table tr[data-job-id="${job.id}"]`);
  await row.waitFor();
  assert.equal(await text(row.locator('[data-status]')), 'failed');
  assert.ok((await text(row)).includes(failed.last_error), 'the row shows the last error');
  // Only failed emails are listed.
  const statuses = await page.locator('#jobs-table tbody .badge').allTextContents();
  assert.ok(statuses.length >= 1 && statuses.every((s) => s === 'failed'), JSON.stringify(statuses));

  sink = await startSmtpSink(smtpPort); // now the email can be delivered

  await row.getByRole('link').click();
  await page.locator('#last-error').waitFor();
  assert.equal(await text(page.locator('#last-error')), failed.last_error);
  // Watch the status the page shows, every change of it.
  await page.evaluate(() => {
    window.__statuses = [document.querySelector('.job-facts').dataset.status];
    new MutationObserver(() => {
      const s = document.querySelector('.job-facts').dataset.status;
      if (window.__statuses[window.__statuses.length - 1] !== s) window.__statuses.push(s);
    }).observe(document.querySelector('.job-facts'), { attributes: true, attributeFilter: ['data-status'] });
  });
  const retry = page.locator('#job-retry');
  assert.equal(await page.locator('#job-cancel').isDisabled(), true, 'a failed job cannot be cancelled');
  await retry.focus();
  await page.keyboard.press('Enter'); // buttons are real buttons: the keyboard works
  await page.locator('#action-message[data-kind="success"]', { hasText: 'Retry accepted' }).waitFor();
  await page.locator('.job-facts[data-status="succeeded"]').waitFor({ timeout: 15_000 });
  const seen = await page.evaluate(() => window.__statuses);
  assert.equal(seen[0], 'failed');
  assert.equal(seen[seen.length - 1], 'succeeded');
  assert.ok(seen.includes('queued') || seen.includes('running'), `went back through queued/running: ${seen}`);
  await page.locator('#job-outcome dd', { hasText: 'queued by ui-test-sink' }).waitFor();
  assert.match(await text(page.locator('#job-detail')), /Server response\s*250 2\.0\.0 Ok: queued by ui-test-sink/);
  await page.locator('#timeline [data-type="retried"]').waitFor();
  assert.match(await text(page.locator('#timeline [data-type="retried"]')), /by ui-admin/);
  assert.equal((await rest('GET', `/v1/jobs/${job.id}`, adminKey)).status, 'succeeded');
  assert.ok(sink.messages.some((m) => m.text.includes('ui-test retry me')), 'the sink got the email');
  assertNoErrors();
}));

test('4. a running long-running job is cancelled from the UI', { timeout: 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t);
  const job = await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 100, step_duration_ms: 200 });
  await signIn(page, adminKey);
  await go(page, `#/jobs/${job.id}`);
  await page.waitForFunction(() => (document.querySelector('#job-progress')?.value ?? 0) >= 2);
  assert.equal(await text(page.locator('.job-facts [data-status]').first()), 'running');
  assert.equal(await page.locator('#job-retry').isDisabled(), true, 'a running job cannot be retried');

  await page.getByRole('button', { name: 'Cancel job' }).click();
  await page.locator('#action-message[data-kind="success"]', { hasText: 'Cancel accepted' }).waitFor();
  await page.locator('.job-facts[data-status="cancelled"]').waitFor();
  await page.locator('#timeline [data-type="cancelled"]').waitFor();
  assert.match(await text(page.locator('#timeline [data-type="cancelled"]')), /by ui-admin \(was running\)/);
  assert.equal(await page.locator('#job-cancel').isDisabled(), true);
  assert.equal(await page.locator('#job-retry').isDisabled(), false, 'a cancelled job can be retried');
  const api = await jobIs(job.id, 'cancelled');
  assert.ok(api.progress.done < 100, 'it stopped before the end');
  // The bar stops moving.
  const value = await page.locator('#job-progress').evaluate((b) => b.value);
  await sleep(800);
  assert.equal(await page.locator('#job-progress').evaluate((b) => b.value), value);
  assertNoErrors();
}));

test('5. bulk retry by filter shows the dry-run count first, then retries', { timeout: 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t);
  // Three emails the sink refuses for good (550): failed at once.
  const ids = [];
  for (let i = 0; i < 3; i += 1) {
    ids.push((await rest('POST', '/v1/jobs/email', adminKey, { to: `reject-${i}@example.com`, subject: 'bulk', body: 'x' })).id);
  }
  for (const id of ids) assert.equal((await jobIs(id, 'failed', 'succeeded')).status, 'failed');

  await signIn(page, adminKey);
  await go(page, '#/jobs');
  const form = page.locator('#job-filters');
  await form.getByLabel('failed').check();
  await form.getByLabel('Email').check();
  await form.getByLabel('Error contains').fill('no such user');
  // A time range too: from ten minutes ago (typed as the browser's local time).
  const from = await page.evaluate(() => {
    const d = new Date(Date.now() - 10 * 60_000);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  });
  await form.getByLabel('Created from').fill(from);
  await form.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForFunction(() => location.hash.includes('error_contains='));
  for (const id of ids) await page.locator(`#jobs-table tr[data-job-id="${id}"]`).waitFor();
  assert.equal(await page.locator('#jobs-table tbody tr').count(), 3);
  await page.locator('#jobs-summary[data-total="3"]').waitFor();

  // The filter the page applies, as the API's bulk-retry body.
  const filter = await page.evaluate(() => {
    const p = new URLSearchParams(location.hash.split('?')[1]);
    const body = { status: p.getAll('status'), kind: p.getAll('kind'), dry_run: true };
    for (const k of ['created_after', 'created_before', 'error_contains']) if (p.get(k)) body[k] = p.get(k);
    return body;
  });
  assert.deepEqual(filter.status, ['failed']);
  assert.deepEqual(filter.kind, ['email']);
  assert.equal(filter.error_contains, 'no such user');
  assert.ok(filter.created_after, 'the time range is part of the filter');

  await page.getByRole('button', { name: 'Retry matching…' }).click();
  const dialog = page.locator('#bulk-dialog');
  await dialog.waitFor();
  await page.locator('#bulk-text[data-retried]').waitFor();
  const dry = await rest('POST', '/v1/jobs/retry', adminKey, filter);
  assert.equal(dry.dry_run, true);
  assert.equal(dry.matched, 3);
  const shown = await page.locator('#bulk-text').evaluate((e) => ({ matched: Number(e.dataset.matched), retried: Number(e.dataset.retried), text: e.textContent }));
  assert.equal(shown.matched, dry.matched);
  assert.equal(shown.retried, dry.retried);
  assert.match(shown.text, /^3 failed or cancelled jobs match this filter; 3 will be queued again/);
  assert.equal(await text(page.locator('#bulk-confirm')), 'Retry 3 jobs');
  // Nothing happened yet: the dry runs changed nothing.
  for (const id of ids) assert.equal((await rest('GET', `/v1/jobs/${id}`, adminKey)).status, 'failed');

  await page.locator('#bulk-confirm').click();
  await page.locator('#jobs-message[data-kind="success"]', { hasText: 'Bulk retry done: 3 jobs queued again.' }).waitFor();
  assert.equal(await dialog.isVisible(), false, 'the dialog closed');
  for (const id of ids) {
    const events = await rest('GET', `/v1/jobs/${id}/events`, adminKey);
    assert.ok(events.events.some((e) => e.type === 'retried' && e.data.by === 'ui-admin'), `job ${id} was retried`);
  }
  assertNoErrors();
}));

test('6. a client key sees its jobs but no ops statistics or actions (phone width)', { timeout: 40_000 }, withLog(async (t) => {
  const { page, assertNoErrors, allowedSeen } = await openPage(t, {
    viewport: { width: 390, height: 844 },
    allowed: [{ status: 403, path: '/v1/stats' }], // the role probe: 403 = client key
  });
  await signIn(page, clientKey);
  assert.deepEqual(allowedSeen, ['403 /v1/stats'], 'the role was detected by trying /v1/stats');
  assert.equal(await text(page.locator('#role')), 'client key');
  await page.locator('#client-note').waitFor();
  assert.equal(await page.locator('[data-ops]').count(), 0, 'no queue statistics');
  // Counts are the tenant's own (GET /v1/jobs/counts works for client keys).
  const emailCounts = await rest('GET', '/v1/jobs/counts?kind=email', clientKey);
  await waitFor('the client overview counts', async () =>
    (await overviewCount(page, 'email', 'failed')) === emailCounts.by_status.failed &&
    (await overviewCount(page, 'email', 'succeeded')) === emailCounts.by_status.succeeded);
  assert.ok(emailCounts.total > 0, 'the client sees the default tenant’s jobs');
  const noOverflow = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  assert.equal(await noOverflow(), true, 'the overview fits a phone');

  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.locator('#jobs-table tbody tr').first().waitFor();
  assert.equal(await page.locator('#bulk-retry').count(), 0, 'no bulk retry');
  assert.equal(await noOverflow(), true, 'the jobs list fits a phone');

  const failed = (await rest('GET', '/v1/jobs?status=failed&kind=email&limit=1', clientKey)).jobs[0];
  assert.ok(failed, 'a failed email exists');
  await go(page, `#/jobs/${failed.id}`);
  await page.locator('.job-facts [data-status="failed"]').waitFor();
  assert.equal(await page.locator('#job-retry').count(), 0, 'no retry button');
  assert.equal(await page.locator('#job-cancel').count(), 0, 'no cancel button');
  assert.equal(await noOverflow(), true, 'the job detail fits a phone');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#api-key').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('jobq.key')), null, 'signing out forgets the key');
  assertNoErrors();
}));

test('7. after jobq restarts, the page resumes its event stream where it stopped', { timeout: 60_000 }, withLog(async (t) => {
  const { page, assertNoErrors } = await openPage(t, {
    // While jobq is down, Chromium logs the refused connections of the page's retries.
    allowedText: [
      /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/v1\/events\?after=\d+' failed/,
      /^Failed to load resource: net::ERR_CONNECTION_REFUSED$/,
    ],
  });
  await signIn(page, adminKey);
  const job = await rest('POST', '/v1/jobs/long-running', adminKey, { steps: 30, step_duration_ms: 200 });
  await go(page, `#/jobs/${job.id}`);
  await page.waitForFunction(() => (document.querySelector('#job-progress')?.value ?? 0) >= 3);
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  // SIGTERM: the job goes back to the queue with its checkpoint, the page loses its stream.
  await jobq.stop();
  await page.locator('#live[data-state="reconnecting"]').waitFor();
  const newLog = [];
  const tap = (line) => newLog.push(line);
  jobq.taps.add(tap);
  t.after(() => jobq.taps.delete(tap));
  assert.equal(await startJobq(Number(new URL(base).port)), base);

  // The page reconnects by itself with ?after=<the last event it saw> ...
  await page.locator('#live[data-state="live"]').waitFor({ timeout: 20_000 });
  // (jobq's log arrives through a pipe, possibly after the browser's news: wait for it.)
  await waitFor('jobq to log the WebSocket reopened with ?after=', () =>
    newLog.some((l) => /"uri":"\/v1\/events\?after=\d+"/.test(l)),
  5_000);
  // ... and follows the job to its end, with the events it missed while disconnected.
  await page.locator('.job-facts[data-status="succeeded"]').waitFor({ timeout: 20_000 });
  await page.locator('#timeline [data-type="succeeded"]').waitFor();
  const rest_ = (await rest('GET', `/v1/jobs/${job.id}/events?limit=200`, adminKey)).events;
  const expected = rest_.filter((e) => e.type !== 'progress').map((e) => e.id);
  const shown = await page.evaluate(() =>
    [...document.querySelectorAll('#timeline li')]
      .filter((li) => li.dataset.type !== 'progress')
      .map((li) => Number(li.dataset.eventId)),
  );
  assert.deepEqual(shown, expected, 'the timeline has every event of the job, in order');
  assert.ok(rest_.some((e) => e.type === 'queued' && e.data.reason), 'the job was put back at shutdown');
  assert.equal(rest_.filter((e) => e.type === 'started').length, 2, 'and resumed by the new process');
  assert.equal(await page.locator('#job-progress').evaluate((b) => b.value), 30);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  await page.locator('#action-message:empty').waitFor({ state: 'attached' }); // a refresh error while down is cleared
  assertNoErrors();
}));
