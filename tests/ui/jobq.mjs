// What the browser tests share: the real jobq binary on a fresh database, its log (kept on
// failure, its tail printed), API keys from its CLI, Debian's Chromium, and screenshots of the
// open pages when a test fails.
//
// Environment: JOBQ_BIN (default ../../target/debug/jobq), CHROMIUM (default /usr/bin/chromium),
// JOBQ_UI_PG (server URL without database, default postgres://postgres@127.0.0.1:5432).

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const JOBQ = process.env.JOBQ_BIN || path.join(ROOT, 'target/debug/jobq');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PG = (process.env.JOBQ_UI_PG || 'postgres://postgres@127.0.0.1:5432').replace(/\/$/, '');
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function run(cmd, args, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, cwd: os.tmpdir() }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(cmd)} ${args[0]} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

export function launchChromium() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** `jobq serve` as a child process on a database of its own (created by jobq at start). */
export class Jobq {
  constructor(prefix) {
    this.dbName = `${prefix}_${process.pid}_${Date.now().toString(36)}`;
    this.dbUrl = `${PG}/${this.dbName}`;
    this.logFile = path.join(os.tmpdir(), `${this.dbName}.log`); // the whole log, kept on failure
    this.log = []; // the last lines, printed when a test fails
    this.taps = new Set(); // functions that see every log line
    this.pages = []; // pages of the running test, photographed when it fails
    this.child = null;
    this.failed = false;
    process.on('exit', () => {
      if (this.running()) this.child.kill('SIGKILL');
    });
  }

  running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Starts `jobq serve --listen 127.0.0.1:<port> <flags>` and resolves with its address, read
   * from its JSON log ("jobq listening").
   */
  start(flags, port = 0) {
    return new Promise((resolve, reject) => {
      const args = ['serve', '--listen', `127.0.0.1:${port}`, '--database-url', this.dbUrl, '--log-format', 'json', ...flags];
      const child = spawn(JOBQ, args, { cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      const timer = setTimeout(() => reject(new Error(`jobq did not start:\n${this.log.join('\n')}`)), 60_000);
      const file = fs.createWriteStream(this.logFile, { flags: 'a' });
      const onLine = (line) => {
        file.write(`${line}\n`);
        for (const tap of this.taps) tap(line);
        this.log.push(line);
        if (this.log.length > 200) this.log = this.log.slice(-200);
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
        reject(new Error(`jobq exited (${code ?? signal}):\n${this.log.join('\n')}`));
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** SIGTERM, and SIGKILL if it has not exited 8 s later. */
  async stop() {
    if (!this.running()) return;
    const child = this.child;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 8_000);
    await exited;
    clearTimeout(t);
  }

  /** A new key from `jobq keys create`. */
  async createKey(name, role, tenant) {
    const args = ['keys', 'create', '--name', name, '--role', role, '--database-url', this.dbUrl];
    if (tenant) args.push('--tenant', tenant);
    const key = (await run(JOBQ, args)).trim();
    if (!/^jq_/.test(key)) throw new Error(`jobq keys create printed ${JSON.stringify(key)}`);
    return key;
  }

  /** Stops jobq, drops its database, and deletes its log unless a test failed. */
  async cleanUp() {
    await this.stop();
    if (!this.failed) fs.rmSync(this.logFile, { force: true });
    await run('psql', [`${PG}/postgres`, '-qc', `DROP DATABASE IF EXISTS "${this.dbName}" WITH (FORCE)`]).catch((e) => {
      process.stderr.write(`could not drop ${this.dbName}: ${e.message}\n`);
    });
  }

  /** Photographs `page` if the running test fails; forgets it when the test ends. */
  watch(t, page, context) {
    this.pages.push(page);
    t.after(async () => {
      this.pages.splice(this.pages.indexOf(page), 1);
      await context.close();
    });
  }

  /** A test body that, when it fails, prints jobq's last log lines and screenshots its pages. */
  withLog(fn) {
    return async (t) => {
      try {
        await fn(t);
      } catch (e) {
        this.failed = true;
        process.stderr.write(`\n--- jobq log (last lines; all of it: ${this.logFile}) ---\n${this.log.slice(-40).join('\n')}\n---\n`);
        for (const [i, page] of this.pages.entries()) {
          const file = path.join(os.tmpdir(), `jobq-ui-failure-${process.pid}-${i}.png`);
          const shot = await page.screenshot({ path: file, fullPage: true }).then(() => true, () => false);
          if (shot) process.stderr.write(`screenshot of the page: ${file} (${page.url()})\n`);
        }
        throw e;
      }
    };
  }
}
