// The jobq operators' dashboard: plain JavaScript, no framework, no build step, no dependencies.
//
// It talks only to the public API of the server that serves it (same origin): REST under /v1
// with the API key the operator signed in with, and the live event WebSocket /v1/events
// (protocol: openapi/websocket.md). The key is kept in sessionStorage: it lives as long as the
// browser tab and is sent to nothing but this server.
//
// Structure: small helpers (DOM, API, formatting), then the shared state fed by the WebSocket
// (Live, Counts, Throughput), then one function per view (sign-in, overview, jobs, job detail),
// then the router. Views register for state changes with `on()` and unregister on unmount.
'use strict';

(() => {
  const KEY_STORAGE = 'jobq.key';
  const KINDS = ['email', 'long_running', 'hash'];
  const KIND_LABEL = { email: 'Email', long_running: 'Long-running', hash: 'Hash' };
  const STATUSES = ['queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'];
  const RETRYABLE = new Set(['failed', 'cancelled']);
  const CANCELLABLE = new Set(['queued', 'retrying', 'running']);
  const TERMINAL_EVENTS = ['succeeded', 'failed', 'cancelled'];
  const BUCKET_MS = 10_000; // throughput chart: one bar per 10 s ...
  const BUCKETS = 30; // ... over the last 5 minutes
  const PAGE_SIZE = 50;
  const EVENT_PAGES = 10; // a job's timeline loads at most 10 x 200 events over REST
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // ---------------------------------------------------------------------------------------------
  // DOM helpers: every piece of data goes through textContent/attributes, never innerHTML.

  function build(el, props, children) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  const h = (tag, props, ...children) => build(document.createElement(tag), props, children);
  const svg = (tag, props, ...children) =>
    build(document.createElementNS(SVG_NS, tag), props, children);

  const $ = (sel, root = document) => root.querySelector(sel);
  const main = $('#main');

  // ---------------------------------------------------------------------------------------------
  // Formatting

  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtDateTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  function fmtClock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const ms = String(d.getMilliseconds()).padStart(3, '0');
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${ms}`;
  }

  function fmtShort(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
  }

  function timeEl(iso, text) {
    return h('time', { datetime: iso, title: iso }, text ?? fmtDateTime(iso));
  }

  function fmtAge(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function fmtMs(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
    return fmtAge(ms / 1000);
  }

  function fmtBytes(n) {
    if (n == null) return '—';
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n);
    let u = 0;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u += 1;
    }
    return u === 0 ? `${v} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
  }

  const fmtInt = (n) => (n == null ? '—' : Number(n).toLocaleString());
  const plural = (n, one, many = `${one}s`) => `${fmtInt(n)} ${n === 1 ? one : many}`;
  const shortId = (id) => `…${String(id).slice(-12)}`;

  function statusBadge(status) {
    return h('span', { class: `badge status-${status}`, dataset: { status } }, status);
  }

  /** What a job was asked to do, from the API's `input` (a summary: no email body, no hash data). */
  function inputSummary(input) {
    if (!input) return '';
    switch (input.kind) {
      case 'email':
        return `to ${input.to}: “${input.subject}” (${fmtBytes(input.body_bytes)} body)`;
      case 'long_running':
        return `${plural(input.steps, 'step')} × ${fmtMs(input.step_duration_ms)}`;
      case 'hash':
        return `${input.algorithm} of ${fmtBytes(input.data_bytes)} × ${fmtInt(input.repeat)} = ${fmtBytes(input.total_bytes)}`;
      default:
        return '';
    }
  }

  function inputFacts(input) {
    if (!input) return [];
    switch (input.kind) {
      case 'email':
        return [
          ['To', input.to],
          ['Subject', input.subject],
          ['Body', fmtBytes(input.body_bytes)],
        ];
      case 'long_running':
        return [
          ['Steps', fmtInt(input.steps)],
          ['Step duration', fmtMs(input.step_duration_ms)],
        ];
      case 'hash':
        return [
          ['Algorithm', input.algorithm],
          ['Data', fmtBytes(input.data_bytes)],
          ['Repeat', fmtInt(input.repeat)],
          ['Total hashed', fmtBytes(input.total_bytes)],
        ];
      default:
        return [];
    }
  }

  function resultFacts(result) {
    if (!result) return [];
    switch (result.kind) {
      case 'email':
        return [
          ['Message-ID', result.message_id],
          ['Server response', result.server_response],
        ];
      case 'long_running':
        return [['Steps completed', fmtInt(result.steps_completed)]];
      case 'hash':
        return [
          ['Algorithm', result.algorithm],
          ['Digest', result.digest_hex],
          ['Bytes hashed', fmtBytes(result.bytes_hashed)],
        ];
      default:
        return Object.entries(result).map(([k, v]) => [k, String(v)]);
    }
  }

  function factList(facts, cls = 'facts') {
    return h(
      'dl',
      { class: cls },
      facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  /** The message to show for a failed call: the API's own `message` (and the `field` at fault). */
  function describeError(e) {
    if (e instanceof ApiError) {
      const field = e.field ? ` (${e.field})` : '';
      return `${e.message}${field}`;
    }
    return String((e && e.message) || e);
  }

  async function api(path, { method = 'GET', body, key = S.key } = {}) {
    const headers = { authorization: `Bearer ${key}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, 'unreachable', 'The jobq server cannot be reached.');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new ApiError(
        res.status,
        (data && data.code) || `http_${res.status}`,
        (data && data.message) || `HTTP ${res.status} ${res.statusText}`,
        data && data.field,
      );
      // The key stopped working (revoked while signed in): back to the sign-in form.
      if (res.status === 401 && key === S.key && S.key) {
        signOut('The server refused the key (unknown or revoked). Sign in again.');
      }
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------------
  // Shared state and a tiny publish/subscribe

  const S = {
    key: null,
    role: null, // 'ops' (ops or admin key) or 'client'
    lastJobsHash: '#/jobs',
  };
  const isOps = () => S.role === 'ops';

  const listeners = new Set();
  function on(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  }
  function emit(topic, payload) {
    for (const fn of [...listeners]) fn(topic, payload);
  }

  // ---------------------------------------------------------------------------------------------
  // Counts per kind and status: /v1/stats (ops) or /v1/jobs/counts (client keys: their tenant),
  // loaded once, then again after bursts of events (debounced), only while the overview shows.

  const Counts = {
    byKind: null, // kind -> {queued, running, ...}
    figures: null, // kind -> KindStats (ops only)
    at: 0, // when loaded (Date.now())
    error: null,
    stale: true,
    visible: false,
    loading: false,
    again: false,
    timer: null,
    firstPending: 0,

    reset() {
      clearTimeout(this.timer);
      Object.assign(this, {
        byKind: null,
        figures: null,
        at: 0,
        error: null,
        stale: true,
        loading: false,
        again: false,
        timer: null,
        firstPending: 0,
      });
    },

    setStats(stats) {
      this.byKind = {};
      this.figures = {};
      for (const k of stats.kinds) {
        this.byKind[k.kind] = k.counts;
        this.figures[k.kind] = k;
      }
      this.at = Date.now();
      this.stale = false;
      this.error = null;
    },

    /** An event changed some job's status: refresh soon, at most every 2 s during a burst. */
    changed() {
      this.stale = true;
      if (!this.visible) return;
      const now = Date.now();
      if (!this.firstPending) this.firstPending = now;
      clearTimeout(this.timer);
      const wait = Math.max(0, Math.min(300, this.firstPending + 2000 - now));
      this.timer = setTimeout(() => {
        this.firstPending = 0;
        this.refresh();
      }, wait);
    },

    async refresh() {
      if (!S.key) return;
      if (this.loading) {
        this.again = true;
        return;
      }
      this.loading = true;
      this.stale = false;
      try {
        if (isOps()) {
          this.setStats(await api('/v1/stats'));
        } else {
          const all = await Promise.all(
            KINDS.map((k) => api(`/v1/jobs/counts?kind=${encodeURIComponent(k)}`)),
          );
          this.byKind = {};
          KINDS.forEach((k, i) => {
            this.byKind[k] = all[i].by_status;
          });
          this.figures = null;
          this.at = Date.now();
          this.error = null;
        }
      } catch (e) {
        this.error = describeError(e);
      } finally {
        this.loading = false;
        emit('counts');
        if (this.again && S.key) {
          this.again = false;
          this.refresh();
        }
      }
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Throughput: finished jobs per kind in 10 s buckets, counted from the live events
  // (by the event's own time, so a replay after a reconnect lands in the right bars).

  const Throughput = {
    since: Date.now(),
    buckets: new Map(), // kind -> Map(bucket index -> {succeeded, failed, cancelled})
    pending: false,

    reset() {
      this.since = Date.now();
      this.buckets = new Map();
    },

    add(ev) {
      if (!TERMINAL_EVENTS.includes(ev.type)) return;
      const now = Date.now();
      const t = Math.min(Date.parse(ev.created_at) || now, now);
      const b = Math.floor(t / BUCKET_MS);
      const newest = Math.floor(now / BUCKET_MS);
      if (b <= newest - BUCKETS) return;
      if (!this.buckets.has(ev.kind)) this.buckets.set(ev.kind, new Map());
      const m = this.buckets.get(ev.kind);
      const slot = m.get(b) || { succeeded: 0, failed: 0, cancelled: 0 };
      slot[ev.type] += 1;
      m.set(b, slot);
      for (const key of m.keys()) if (key <= newest - BUCKETS) m.delete(key);
      if (!this.pending) {
        this.pending = true;
        requestAnimationFrame(() => {
          this.pending = false;
          emit('throughput');
        });
      }
    },

    /** The last BUCKETS buckets of a kind, oldest first. */
    series(kind) {
      const newest = Math.floor(Date.now() / BUCKET_MS);
      const m = this.buckets.get(kind) || new Map();
      const out = [];
      for (let b = newest - BUCKETS + 1; b <= newest; b += 1) {
        const slot = m.get(b) || { succeeded: 0, failed: 0, cancelled: 0 };
        out.push({ ...slot, total: slot.succeeded + slot.failed + slot.cancelled });
      }
      return out;
    },
  };

  // ---------------------------------------------------------------------------------------------
  // The live event WebSocket (openapi/websocket.md): `auth` first (browsers cannot set headers),
  // then every event; on close, reconnect with ?after=<last event id> so that nothing is missed.

  const liveEl = $('#live');
  const LIVE_TEXT = {
    off: 'offline',
    connecting: 'connecting…',
    live: 'live',
    catching_up: 'catching up…',
    reconnecting: 'reconnecting…',
  };
  function setLive(state, detail) {
    liveEl.dataset.state = state;
    liveEl.textContent = LIVE_TEXT[state] || state;
    liveEl.title = detail || '';
  }

  const Live = {
    ws: null,
    lastId: null, // resume point: id of the last event received (or the head when subscribed)
    subscribed: false, // a subscription was confirmed at least once
    attempts: 0,
    timer: null,
    stopped: true,

    start() {
      this.stopped = false;
      this.lastId = null;
      this.subscribed = false;
      this.attempts = 0;
      this.connect();
    },

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.timer = null;
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.onmessage = null;
        ws.onclose = null;
        ws.onopen = null;
        ws.close(1000, 'signed out');
      }
      setLive('off');
    },

    connect() {
      this.timer = null;
      if (this.stopped) return;
      let after = this.lastId;
      // The log was empty when we subscribed: replay it all (it only holds what came since).
      if (after == null && this.subscribed) after = 0;
      const url = new URL('/v1/events', location.href);
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      if (after != null) url.searchParams.set('after', String(after));
      setLive(this.subscribed ? 'reconnecting' : 'connecting');
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: S.key }));
      ws.onmessage = (e) => {
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        this.onMessage(m);
      };
      ws.onerror = () => {}; // a close event follows, handled there
      ws.onclose = (e) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.onClose(e);
      };
    },

    onMessage(m) {
      switch (m.type) {
        case 'subscribed':
          this.attempts = 0;
          if (this.lastId == null && m.last_event_id != null) this.lastId = m.last_event_id;
          this.subscribed = true;
          setLive(m.after == null ? 'live' : 'catching_up');
          break;
        case 'event':
          if (!m.event) break;
          this.lastId = m.event.id;
          onLiveEvent(m.event);
          break;
        case 'caught_up':
          if (m.last_event_id != null && (this.lastId == null || m.last_event_id > this.lastId)) {
            this.lastId = m.last_event_id;
          }
          setLive('live');
          break;
        case 'resume':
          if (m.last_event_id != null) this.lastId = m.last_event_id;
          break;
        case 'error':
          this.lastError = `${m.code}: ${m.message}`;
          break;
        default:
          break; // pong, and types added later
      }
    },

    onClose(e) {
      if (this.stopped) return;
      if (e.code === 4401) {
        signOut('The live event stream refused the key (unknown or revoked). Sign in again.');
        return;
      }
      if (e.code === 4404) {
        // Our resume point was pruned: start afresh and reload what the page shows.
        this.lastId = null;
        this.subscribed = false;
        emit('resync');
      }
      const delay = Math.min(15_000, 500 * 2 ** this.attempts) * (0.75 + Math.random() * 0.5);
      this.attempts += 1;
      const why = this.lastError || `closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`;
      this.lastError = null;
      setLive('reconnecting', `${why}; retrying in ${Math.round(delay / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    },
  };

  function onLiveEvent(ev) {
    Throughput.add(ev);
    if (ev.type !== 'progress') Counts.changed();
    emit('event', ev);
  }

  // ---------------------------------------------------------------------------------------------
  // Session: sign in, role detection, sign out

  let tickTimer = null;

  /** Tries the key on GET /v1/stats: 200 = ops or admin, 403 = client (there is no "who am I"). */
  async function probeRole(key) {
    try {
      const stats = await api('/v1/stats', { key });
      return { role: 'ops', stats };
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) return { role: 'client', stats: null };
      throw e;
    }
  }

  async function startSession(key) {
    const { role, stats } = await probeRole(key);
    S.key = key;
    S.role = role;
    S.lastJobsHash = '#/jobs';
    sessionStorage.setItem(KEY_STORAGE, key);
    Counts.reset();
    Throughput.reset();
    if (stats) Counts.setStats(stats);
    document.body.dataset.role = role;
    $('#role').textContent = role === 'ops' ? 'operator' : 'client key';
    $('#role').title =
      role === 'ops'
        ? 'ops or admin key: every tenant, retry, cancel, statistics'
        : 'client key: your tenant’s jobs, read only';
    $('.nav').hidden = false;
    $('.session').hidden = false;
    Live.start();
    // Relative times (oldest queued age, the chart's time axis) move on by themselves: this
    // re-renders them every second. It fetches nothing; data changes come from the WebSocket.
    clearInterval(tickTimer);
    tickTimer = setInterval(() => emit('tick'), 1000);
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    Live.stop();
    clearInterval(tickTimer);
    tickTimer = null;
    S.key = null;
    S.role = null;
    Counts.reset();
    Throughput.reset();
    delete document.body.dataset.role;
    $('.nav').hidden = true;
    $('.session').hidden = true;
    unmountCurrent();
    showSignIn(message);
  }

  function showSignIn(message) {
    unmountCurrent();
    const error = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message || '');
    const input = h('input', {
      id: 'api-key',
      name: 'api-key',
      type: 'password',
      autocomplete: 'off',
      spellcheck: 'false',
      required: true,
      placeholder: 'jq_…',
      'aria-describedby': 'api-key-hint signin-error',
    });
    const submit = h('button', { type: 'submit', class: 'button-primary' }, 'Sign in');
    const form = h(
      'form',
      { class: 'card signin-form', id: 'signin', novalidate: true },
      h('label', { for: 'api-key' }, 'API key'),
      input,
      h(
        'p',
        { class: 'hint', id: 'api-key-hint' },
        'Kept in this browser tab only (sessionStorage) and sent only to this server. ' +
          'An ops or admin key sees every tenant and can retry and cancel; a client key sees ' +
          'its tenant’s jobs.',
      ),
      submit,
      error,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) {
        error.textContent = 'Enter an API key.';
        input.focus();
        return;
      }
      submit.disabled = true;
      error.textContent = '';
      try {
        await startSession(key);
        input.value = '';
        route();
      } catch (err) {
        error.textContent =
          err instanceof ApiError && err.status === 401
            ? 'This key is unknown or revoked.'
            : describeError(err);
        submit.disabled = false;
        input.focus();
      }
    });
    const heading = h('h1', { tabindex: '-1' }, 'Sign in');
    main.replaceChildren(
      h(
        'section',
        { class: 'view signin', id: 'signin-view', 'aria-labelledby': 'signin-h' },
        build(heading, { id: 'signin-h' }, []),
        h('p', { class: 'lede' }, 'The jobq operators’ dashboard. Sign in with an API key.'),
        form,
      ),
    );
    input.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Overview: per kind, counts by status, figures (ops) and the throughput chart

  function chart(kind) {
    const series = Throughput.series(kind);
    const W = 300;
    const H = 60;
    const bw = W / BUCKETS;
    const max = Math.max(1, ...series.map((b) => b.total));
    const sum = (k) => series.reduce((a, b) => a + b[k], 0);
    const total = sum('total');
    const label =
      `${KIND_LABEL[kind]}: ${plural(total, 'job')} finished in the last 5 minutes ` +
      `(${sum('succeeded')} succeeded, ${sum('failed')} failed, ${sum('cancelled')} cancelled)`;
    const el = svg('svg', {
      class: 'chart-svg',
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: 'none',
      role: 'img',
      'aria-label': label,
      dataset: { total: String(total) },
    });
    el.append(svg('title', {}, label));
    for (let y = 1; y <= 3; y += 1) {
      el.append(svg('line', { class: 'grid', x1: 0, x2: W, y1: (H * y) / 4, y2: (H * y) / 4 }));
    }
    series.forEach((b, i) => {
      let y = H;
      for (const part of ['succeeded', 'failed', 'cancelled']) {
        const hgt = (b[part] / max) * (H - 4);
        if (hgt <= 0) continue;
        y -= hgt;
        el.append(
          svg('rect', {
            class: `bar bar-${part}`,
            x: (i * bw + 0.5).toFixed(2),
            y: y.toFixed(2),
            width: (bw - 1).toFixed(2),
            height: hgt.toFixed(2),
          }),
        );
      }
    });
    el.append(svg('line', { class: 'axis', x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5 }));
    return { el, max, total };
  }

  function OverviewView() {
    const heading = h('h1', { tabindex: '-1', id: 'overview-h' }, 'Overview');
    const error = h('p', { class: 'error', role: 'alert' });
    const intro = isOps()
      ? h(
          'p',
          { class: 'lede' },
          'Every tenant’s jobs, per kind. Counts and charts follow the live event stream.',
        )
      : h(
          'p',
          { class: 'notice', id: 'client-note' },
          'Signed in with a client key: counts and charts cover your tenant’s jobs. ' +
            'Queue statistics, retry and cancel need an ops or admin key.',
        );
    const cards = KINDS.map((kind) => {
      const counts = h(
        'ul',
        { class: 'status-counts', 'aria-label': `${KIND_LABEL[kind]} jobs by status` },
        STATUSES.map((st) =>
          h(
            'li',
            {},
            h(
              'a',
              {
                href: `#/jobs?kind=${kind}&status=${st}`,
                class: `count-link status-${st}`,
                dataset: { status: st },
              },
              h('span', { class: 'count', dataset: { count: st } }, '…'),
              h('span', { class: 'count-label' }, st),
            ),
          ),
        ),
      );
      const figures = isOps()
        ? h(
            'dl',
            { class: 'figures', dataset: { ops: '' } },
            h('div', {}, h('dt', {}, 'Oldest queued'), h('dd', { dataset: { figure: 'oldest' } })),
            h(
              'div',
              {},
              h('dt', {}, 'Finished, last min'),
              h('dd', { dataset: { figure: 'finished' } }),
            ),
            h(
              'div',
              {},
              h('dt', {}, 'Run time (5 min)'),
              h('dd', { dataset: { figure: 'runtime' } }),
            ),
          )
        : null;
      const chartBox = h('div', { class: 'chart-box' });
      const caption = h('figcaption', { class: 'chart-caption' });
      const total = h('span', { class: 'kind-total', dataset: { total: '' } });
      const card = h(
        'section',
        { class: 'card kind-card', dataset: { kind }, 'aria-labelledby': `kind-${kind}-h` },
        h('h2', { id: `kind-${kind}-h` }, KIND_LABEL[kind], ' ', total),
        counts,
        figures,
        h('figure', { class: 'chart' }, chartBox, caption),
      );
      return { kind, card, counts, figures, chartBox, caption, total };
    });

    const root = h(
      'section',
      { class: 'view', id: 'overview', 'aria-labelledby': 'overview-h' },
      heading,
      intro,
      error,
      h('div', { class: 'kind-grid' }, cards.map((c) => c.card)),
      h(
        'p',
        { class: 'legend' },
        h('span', { class: 'swatch swatch-succeeded' }),
        ' succeeded ',
        h('span', { class: 'swatch swatch-failed' }),
        ' failed ',
        h('span', { class: 'swatch swatch-cancelled' }),
        ' cancelled — finished jobs per 10 s over the last 5 minutes, from the live events ' +
          'received since this page opened.',
      ),
    );
    main.replaceChildren(root);

    function renderCounts() {
      error.textContent = Counts.error ? `Could not load the counts: ${Counts.error}` : '';
      for (const c of cards) {
        const byStatus = Counts.byKind && Counts.byKind[c.kind];
        let sum = 0;
        for (const st of STATUSES) {
          const n = byStatus ? byStatus[st] : null;
          sum += n || 0;
          $(`[data-count="${st}"]`, c.counts).textContent = n == null ? '…' : fmtInt(n);
        }
        c.total.textContent = byStatus ? `· ${plural(sum, 'job')}` : '';
        if (c.figures) {
          const f = Counts.figures && Counts.figures[c.kind];
          const age =
            f && f.oldest_queued_age_seconds != null
              ? f.oldest_queued_age_seconds + (Date.now() - Counts.at) / 1000
              : null;
          $('[data-figure="oldest"]', c.figures).textContent = !f
            ? '…'
            : age == null
              ? 'none waiting'
              : fmtAge(age);
          $('[data-figure="finished"]', c.figures).textContent = f
            ? fmtInt(f.finished_last_minute)
            : '…';
          const runtime = $('[data-figure="runtime"]', c.figures);
          if (f && f.run_time_mean_ms != null) {
            runtime.replaceChildren(
              h('span', {}, `mean ${fmtMs(f.run_time_mean_ms)}`),
              h('span', {}, `p95 ${fmtMs(f.run_time_p95_ms)}`),
            );
          } else runtime.textContent = f ? 'no runs' : '…';
        }
      }
    }

    function renderCharts() {
      for (const c of cards) {
        const { el, max, total } = chart(c.kind);
        c.chartBox.replaceChildren(el);
        c.caption.textContent =
          `${plural(total, 'job')} finished in 5 min` + (total ? ` · peak ${max} per 10 s` : '');
      }
    }

    renderCounts();
    renderCharts();
    Counts.visible = true;
    if (Counts.stale) Counts.refresh();
    const off = on((topic) => {
      if (topic === 'counts') renderCounts();
      else if (topic === 'throughput') renderCharts();
      else if (topic === 'tick') {
        renderCounts();
        renderCharts();
      } else if (topic === 'resync') Counts.refresh();
    });
    return {
      heading,
      unmount() {
        Counts.visible = false;
        off();
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Jobs: filters (kept in the address: #/jobs?status=failed&kind=email...), table, pagination,
  // bulk retry

  function filterFromParams(params) {
    const pick = (name, allowed) => params.getAll(name).filter((v) => allowed.includes(v));
    const time = (name) => {
      const v = params.get(name);
      return v && !Number.isNaN(Date.parse(v)) ? v : null;
    };
    return {
      status: pick('status', STATUSES),
      kind: pick('kind', KINDS),
      created_after: time('created_after'),
      created_before: time('created_before'),
      error_contains: params.get('error_contains') || null,
    };
  }

  function filterParams(f) {
    const p = new URLSearchParams();
    for (const s of f.status) p.append('status', s);
    for (const k of f.kind) p.append('kind', k);
    if (f.created_after) p.set('created_after', f.created_after);
    if (f.created_before) p.set('created_before', f.created_before);
    if (f.error_contains) p.set('error_contains', f.error_contains);
    return p;
  }

  /** The body of POST /v1/jobs/retry for a filter: the same fields as the list. */
  function bulkBody(f, dryRun) {
    const body = { status: f.status, kind: f.kind, dry_run: dryRun };
    if (f.created_after) body.created_after = f.created_after;
    if (f.created_before) body.created_before = f.created_before;
    if (f.error_contains) body.error_contains = f.error_contains;
    return body;
  }

  function describeFilter(f) {
    const parts = [];
    parts.push(f.status.length ? `status ${f.status.join(' or ')}` : 'any status');
    parts.push(f.kind.length ? `kind ${f.kind.join(' or ')}` : 'any kind');
    if (f.created_after) parts.push(`created from ${fmtDateTime(f.created_after)}`);
    if (f.created_before) parts.push(`created before ${fmtDateTime(f.created_before)}`);
    if (f.error_contains) parts.push(`error contains “${f.error_contains}”`);
    return parts.join(' · ');
  }

  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return (
      `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}` +
      `T${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
    );
  }

  function fromLocalInput(value) {
    if (!value) return null;
    const d = new Date(value); // a datetime-local value is read as local time
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  }

  function progressCell(job) {
    const p = job.progress || { done: 0, total: 0 };
    if (!p.total) return h('span', { class: 'muted' }, '—');
    return h(
      'span',
      { class: 'progress-cell' },
      h('progress', { max: p.total, value: p.done, 'aria-label': `Progress of job ${job.id}` }),
      h('span', { class: 'progress-text' }, `${p.done}/${p.total}`),
    );
  }

  function jobRow(job) {
    // One wrapper per cell: on phones each cell is a "label: value" grid row (app.css).
    const cell = (label, content, cls) =>
      h('td', { dataset: { label }, class: cls }, h('div', { class: 'cell' }, content));
    return h(
      'tr',
      { dataset: { jobId: job.id, status: job.status } },
      cell('Job', [
        h(
          'a',
          { href: `#/jobs/${job.id}`, class: 'job-link', title: job.id, 'aria-label': `Job ${job.id}` },
          h('code', {}, shortId(job.id)),
        ),
        h('span', { class: 'kind-tag' }, KIND_LABEL[job.kind] || job.kind),
      ]),
      cell('Status', statusBadge(job.status)),
      cell('Attempts', `${job.attempt} / ${job.max_attempts}`),
      cell('Progress', progressCell(job)),
      cell('Input', inputSummary(job.input), 'cell-input'),
      cell('Created', timeEl(job.created_at, fmtShort(job.created_at))),
      cell('Last error', job.last_error || h('span', { class: 'muted' }, '—'), 'cell-error'),
    );
  }

  /** Applies a live event to a job object as far as the event tells (the REST row has the rest). */
  function applyEvent(job, ev) {
    job.status = ev.status;
    if (ev.created_at && !(Date.parse(job.updated_at) > Date.parse(ev.created_at))) {
      job.updated_at = ev.created_at;
    }
    const d = ev.data || {};
    switch (ev.type) {
      case 'started':
        if (d.attempt != null) job.attempt = d.attempt;
        if (d.max_attempts != null) job.max_attempts = d.max_attempts;
        if (job.progress && job.progress.total) job.progress.done = d.resumed_from || 0;
        break;
      case 'progress':
        job.progress = { done: d.done, total: d.total };
        break;
      case 'retrying':
      case 'failed':
        if (d.error) job.last_error = d.error;
        break;
      case 'retried':
        job.attempt = 0;
        break;
      default:
        break;
    }
  }

  function JobsView(params) {
    const filter = filterFromParams(params);
    S.lastJobsHash = location.hash || '#/jobs';
    const heading = h('h1', { tabindex: '-1', id: 'jobs-h' }, 'Jobs');

    const checkGroup = (legend, name, values, chosen, label = (v) => v) =>
      h(
        'fieldset',
        { class: 'check-group' },
        h('legend', {}, legend),
        values.map((v) =>
          h(
            'label',
            { class: 'check' },
            h('input', { type: 'checkbox', name, value: v, checked: chosen.includes(v) }),
            ` ${label(v)}`,
          ),
        ),
      );

    const after = h('input', {
      type: 'datetime-local',
      id: 'f-created-after',
      name: 'created_after',
      step: 1,
      value: toLocalInput(filter.created_after),
    });
    const before = h('input', {
      type: 'datetime-local',
      id: 'f-created-before',
      name: 'created_before',
      step: 1,
      value: toLocalInput(filter.created_before),
    });
    const errorText = h('input', {
      type: 'search',
      id: 'f-error',
      name: 'error_contains',
      maxlength: 200,
      value: filter.error_contains || '',
      placeholder: 'e.g. timed out',
    });
    const bulkButton = isOps()
      ? h('button', { type: 'button', id: 'bulk-retry', class: 'button-warn' }, 'Retry matching…')
      : null;
    const form = h(
      'form',
      { class: 'card filters', id: 'job-filters', 'aria-label': 'Filter jobs' },
      checkGroup('Status', 'status', STATUSES, filter.status),
      checkGroup('Kind', 'kind', KINDS, filter.kind, (k) => KIND_LABEL[k]),
      h(
        'div',
        { class: 'filter-fields' },
        h('label', { for: 'f-created-after' }, 'Created from', after),
        h('label', { for: 'f-created-before' }, 'Created before', before),
        h('label', { for: 'f-error' }, 'Error contains', errorText),
      ),
      h(
        'div',
        { class: 'form-actions' },
        h('button', { type: 'submit', class: 'button-primary' }, 'Apply filters'),
        h('button', { type: 'button', id: 'filters-reset' }, 'Reset'),
        bulkButton,
      ),
    );

    const summary = h('p', { class: 'summary', id: 'jobs-summary', role: 'status' });
    const message = h('p', { class: 'message', id: 'jobs-message', role: 'status', tabindex: '-1' });
    const fresh = h(
      'button',
      { type: 'button', class: 'fresh', id: 'jobs-fresh', hidden: true },
      'New jobs arrived: show',
    );
    const tbody = h('tbody');
    const table = h(
      'table',
      { class: 'jobs-table', id: 'jobs-table' },
      h('caption', { class: 'visually-hidden' }, 'Jobs matching the filter, newest first'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Job', 'Status', 'Attempts', 'Progress', 'Input', 'Created', 'Last error'].map((c) =>
            h('th', { scope: 'col' }, c),
          ),
        ),
      ),
      tbody,
    );
    const empty = h('p', { class: 'empty', hidden: true }, 'No jobs match this filter.');
    const more = h('button', { type: 'button', id: 'jobs-more', hidden: true }, 'Load more');

    const root = h(
      'section',
      { class: 'view', id: 'jobs', 'aria-labelledby': 'jobs-h' },
      heading,
      form,
      h('div', { class: 'jobs-bar' }, summary, fresh),
      message,
      h('div', { class: 'table-wrap' }, table),
      empty,
      h('div', { class: 'more-row' }, more),
    );
    main.replaceChildren(root);

    const rows = new Map(); // job id -> {job, tr}
    let cursor = null;
    let generation = 0; // drops answers of superseded loads
    let freshCount = 0;

    function readForm() {
      const fd = new FormData(form);
      return {
        status: fd.getAll('status'),
        kind: fd.getAll('kind'),
        created_after: fromLocalInput(after.value),
        created_before: fromLocalInput(before.value),
        error_contains: errorText.value.trim() || null,
      };
    }

    function say(text, kind = 'info') {
      message.textContent = text;
      message.dataset.kind = kind;
      message.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    }

    async function loadPage(first) {
      const gen = first ? ++generation : generation;
      const p = filterParams(filter);
      p.set('limit', String(PAGE_SIZE));
      if (!first && cursor) p.set('cursor', cursor);
      more.disabled = true;
      if (first) summary.textContent = 'Loading…';
      try {
        const page = await api(`/v1/jobs?${p}`);
        if (gen !== generation) return;
        if (first) {
          tbody.replaceChildren();
          rows.clear();
          freshCount = 0;
          fresh.hidden = true;
        }
        for (const job of page.jobs) {
          if (rows.has(job.id)) continue;
          const tr = jobRow(job);
          rows.set(job.id, { job, tr });
          tbody.append(tr);
        }
        cursor = page.next_cursor || null;
        more.hidden = !cursor;
        empty.hidden = rows.size > 0;
        if (first) loadCount(gen);
      } catch (e) {
        if (gen !== generation) return;
        summary.textContent = '';
        say(`Could not load jobs: ${describeError(e)}`, 'error');
      } finally {
        more.disabled = false;
      }
    }

    async function loadCount(gen) {
      try {
        const c = await api(`/v1/jobs/counts?${filterParams(filter)}`);
        if (gen !== generation) return;
        const parts = STATUSES.filter((s) => c.by_status[s]).map(
          (s) => `${fmtInt(c.by_status[s])} ${s}`,
        );
        summary.textContent =
          `${plural(c.total, 'job')} match` + (parts.length ? `: ${parts.join(', ')}` : '');
        summary.dataset.total = String(c.total);
      } catch (e) {
        if (gen === generation) summary.textContent = `Could not count: ${describeError(e)}`;
      }
    }

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const qs = filterParams(readForm()).toString();
      const target = `#/jobs${qs ? `?${qs}` : ''}`;
      if (target === location.hash) loadPage(true);
      else location.hash = target;
    });
    $('#filters-reset', form).addEventListener('click', () => {
      if (location.hash === '#/jobs') {
        form.reset();
        for (const i of form.querySelectorAll('input')) {
          if (i.type === 'checkbox') i.checked = false;
          else i.value = '';
        }
        Object.assign(filter, filterFromParams(new URLSearchParams()));
        loadPage(true);
      } else location.hash = '#/jobs';
    });
    more.addEventListener('click', () => loadPage(false));
    fresh.addEventListener('click', () => loadPage(true));

    // A new job that this filter would show: offer to reload rather than shift the pages.
    const mayMatchNew = (ev) =>
      (!filter.kind.length || filter.kind.includes(ev.kind)) &&
      (!filter.status.length || filter.status.includes('queued')) &&
      !filter.error_contains &&
      !filter.created_before;

    const off = on((topic, ev) => {
      if (topic === 'resync') loadPage(true);
      if (topic !== 'event') return;
      const row = rows.get(ev.job_id);
      if (row) {
        applyEvent(row.job, ev);
        const tr = jobRow(row.job);
        tr.classList.add('changed');
        row.tr.replaceWith(tr);
        row.tr = tr;
      } else if (ev.type === 'queued' && (ev.data || {}).attempt === 0 && mayMatchNew(ev)) {
        freshCount += 1;
        fresh.textContent = `${plural(freshCount, 'new job')} arrived: show`;
        fresh.hidden = false;
      }
    });

    // Bulk retry: dry run first, then an explicit confirmation.
    let dialog = null;
    if (bulkButton) {
      const dText = h('p', { id: 'bulk-text' }, '');
      const dFilter = h('p', { class: 'muted', id: 'bulk-filter' }, '');
      const dError = h('p', { class: 'error', id: 'bulk-error', role: 'alert' });
      const confirm = h(
        'button',
        { type: 'button', id: 'bulk-confirm', class: 'button-warn', disabled: true },
        'Retry',
      );
      const close = h('button', { type: 'button', id: 'bulk-close' }, 'Close');
      dialog = h(
        'dialog',
        { id: 'bulk-dialog', 'aria-labelledby': 'bulk-h', 'aria-describedby': 'bulk-text' },
        h('h2', { id: 'bulk-h' }, 'Retry the matching jobs'),
        dFilter,
        dText,
        dError,
        h('div', { class: 'form-actions' }, confirm, close),
      );
      root.append(dialog);
      close.addEventListener('click', () => dialog.close());

      bulkButton.addEventListener('click', async () => {
        dText.textContent = 'Counting the failed and cancelled jobs that match (dry run)…';
        delete dText.dataset.matched;
        delete dText.dataset.retried;
        dFilter.textContent = `Filter: ${describeFilter(filter)}`;
        dError.textContent = '';
        confirm.disabled = true;
        confirm.textContent = 'Retry';
        dialog.showModal();
        try {
          const r = await api('/v1/jobs/retry', { method: 'POST', body: bulkBody(filter, true) });
          dText.dataset.matched = String(r.matched);
          dText.dataset.retried = String(r.retried);
          if (r.retried === 0) {
            dText.textContent =
              'No failed or cancelled job matches this filter: there is nothing to retry.';
            close.focus();
            return;
          }
          dText.textContent =
            `${plural(r.matched, 'failed or cancelled job')} ${r.matched === 1 ? 'matches' : 'match'}` +
            ` this filter; ${fmtInt(r.retried)} will be queued again with fresh attempts` +
            (r.retried < r.matched ? ' (at most 1000 per run, oldest first).' : '.');
          confirm.textContent = `Retry ${plural(r.retried, 'job')}`;
          confirm.disabled = false;
          confirm.focus();
        } catch (e) {
          dText.textContent = '';
          dError.textContent = `The dry run failed: ${describeError(e)}`;
          close.focus();
        }
      });

      confirm.addEventListener('click', async () => {
        confirm.disabled = true;
        try {
          const r = await api('/v1/jobs/retry', { method: 'POST', body: bulkBody(filter, false) });
          dialog.close();
          say(`Bulk retry done: ${plural(r.retried, 'job')} queued again.`, 'success');
          message.focus();
          loadPage(true);
        } catch (e) {
          dError.textContent = `The retry failed: ${describeError(e)}`;
          confirm.disabled = false;
        }
      });
    }

    loadPage(true);
    return {
      heading,
      unmount() {
        off();
        if (dialog && dialog.open) dialog.close();
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Job detail: facts, input summary, live progress, result or error, actions, event timeline

  function eventText(ev) {
    const d = ev.data || {};
    switch (ev.type) {
      case 'queued':
        if (d.reason) {
          return `back in the queue: ${d.reason}` +
            (d.resume_from ? `, resumes from step ${d.resume_from}` : '');
        }
        return d.attempt ? `queued (after attempt ${d.attempt})` : 'accepted';
      case 'started':
        return (
          `attempt ${d.attempt ?? '?'}` +
          (d.max_attempts ? ` of ${d.max_attempts}` : '') +
          (d.worker ? ` on ${d.worker}` : '') +
          (d.resumed_from ? `, resumed from step ${d.resumed_from}` : '') +
          (d.rescued ? ', rescued from a dead worker' : '')
        );
      case 'progress':
        return `${d.done} / ${d.total}`;
      case 'retrying':
        return (
          `attempt ${d.attempt} failed: ${d.error || 'error'}` +
          (d.next_attempt_at ? `; next attempt at ${fmtDateTime(d.next_attempt_at)}` : '')
        );
      case 'succeeded':
        return `attempt ${d.attempt ?? '?'} succeeded`;
      case 'failed':
        return `attempt ${d.attempt ?? '?'} failed: ${d.error || 'error'}`;
      case 'cancelled':
        return (
          `by ${d.by || 'unknown'}` + (d.previous_status ? ` (was ${d.previous_status})` : '')
        );
      case 'retried':
        return (
          `queued again by ${d.by || 'unknown'}` +
          (d.previous_status ? ` (was ${d.previous_status}` : '') +
          (d.previous_attempts != null ? ` after ${plural(d.previous_attempts, 'attempt')})` : ')')
        );
      default:
        return JSON.stringify(d);
    }
  }

  /** The timeline, oldest first; consecutive progress events fold into one line. */
  function timelineItems(events) {
    const items = [];
    for (const ev of events) {
      const last = items[items.length - 1];
      if (ev.type === 'progress' && last && last.type === 'progress') {
        last.lastEv = ev;
        last.count += 1;
      } else if (ev.type === 'progress') {
        items.push({ type: 'progress', ev, lastEv: ev, count: 1 });
      } else {
        items.push({ type: ev.type, ev });
      }
    }
    return items.map((it) => {
      const text =
        it.type === 'progress'
          ? it.count === 1
            ? eventText(it.ev)
            : `${(it.ev.data || {}).done} → ${eventText(it.lastEv)} (${it.count} updates)`
          : eventText(it.ev);
      const at = it.type === 'progress' ? it.lastEv : it.ev;
      return h(
        'li',
        { class: `tl-item tl-${it.type}`, dataset: { type: it.type, eventId: String(at.id) } },
        timeEl(at.created_at, fmtClock(at.created_at)),
        h('span', { class: `badge event-${it.type}` }, it.type),
        h('span', { class: 'tl-text' }, text),
      );
    });
  }

  function DetailView(id) {
    const heading = h('h1', { tabindex: '-1', id: 'job-h' }, 'Job');
    const back = h('a', { href: S.lastJobsHash, class: 'back' }, '← Jobs');
    const error = h('p', { class: 'error', role: 'alert', id: 'job-error' });
    const facts = h('div', { class: 'job-facts' });
    const progressBox = h('div', { class: 'progress-box' });
    const inputBox = h('div');
    const outcomeHeading = h('h2', { id: 'outcome-h' }, 'Result');
    const outcomeBox = h('div', { id: 'job-outcome' });
    const timeline = h('ol', { class: 'timeline', id: 'timeline', 'aria-live': 'off' });
    const timelineNote = h('p', { class: 'muted' });

    const message = h('p', {
      class: 'message',
      id: 'action-message',
      role: 'status',
      tabindex: '-1',
    });
    const retryBtn = h(
      'button',
      { type: 'button', id: 'job-retry', class: 'button-primary', 'aria-describedby': 'action-hint' },
      'Retry',
    );
    const cancelBtn = h(
      'button',
      { type: 'button', id: 'job-cancel', class: 'button-danger', 'aria-describedby': 'action-hint' },
      'Cancel job',
    );
    const hint = h('p', { class: 'hint', id: 'action-hint' });
    const actions = isOps()
      ? h(
          'div',
          { class: 'actions', role: 'group', 'aria-label': 'Actions' },
          retryBtn,
          cancelBtn,
          hint,
        )
      : null;

    const root = h(
      'section',
      { class: 'view', id: 'job-detail', 'aria-labelledby': 'job-h' },
      back,
      heading,
      error,
      h(
        'div',
        { class: 'detail-grid' },
        h(
          'section',
          { class: 'card status-card', 'aria-labelledby': 'status-h' },
          h('h2', { id: 'status-h' }, 'Status'),
          facts,
          progressBox,
          actions,
          message,
        ),
        h(
          'section',
          { class: 'card', 'aria-labelledby': 'input-h' },
          h('h2', { id: 'input-h' }, 'Input'),
          inputBox,
        ),
        h('section', { class: 'card', 'aria-labelledby': 'outcome-h' }, outcomeHeading, outcomeBox),
        h(
          'section',
          { class: 'card timeline-card', 'aria-labelledby': 'timeline-h' },
          h('h2', { id: 'timeline-h' }, 'Events'),
          timeline,
          timelineNote,
        ),
      ),
    );
    main.replaceChildren(root);

    let job = null;
    const events = new Map(); // event id -> event
    let truncated = false;
    let refetchTimer = null;
    let frame = 0;
    let gone = false;
    let busy = false;

    function say(text, kind = 'info') {
      message.textContent = text;
      message.dataset.kind = kind;
      message.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    }

    function renderProgress() {
      if (!job) return;
      const p = job.progress || { done: 0, total: 0 };
      if (!p.total) {
        progressBox.replaceChildren();
        return;
      }
      let bar = $('#job-progress', progressBox);
      if (!bar) {
        bar = h('progress', { id: 'job-progress', 'aria-labelledby': 'progress-label' });
        progressBox.replaceChildren(
          h('span', { id: 'progress-label', class: 'progress-label' }, 'Progress'),
          bar,
          h('span', { class: 'progress-text', id: 'progress-text' }),
        );
      }
      bar.max = p.total;
      bar.value = p.done;
      bar.dataset.status = job.status;
      const pct = Math.floor((100 * p.done) / p.total);
      $('#progress-text', progressBox).textContent = `${p.done} of ${p.total} steps (${pct} %)`;
    }

    function renderFacts() {
      if (!job) return;
      heading.textContent = `${KIND_LABEL[job.kind] || job.kind} job`;
      document.title = `${KIND_LABEL[job.kind] || job.kind} job ${shortId(job.id)} · jobq`;
      const rows = [
        ['Status', statusBadge(job.status)],
        ['ID', h('code', { class: 'job-id' }, job.id)],
        ['Attempts', `${job.attempt} of ${job.max_attempts}`],
        ['Created', timeEl(job.created_at)],
        ['Started', job.started_at ? timeEl(job.started_at) : '—'],
        ['Finished', job.finished_at ? timeEl(job.finished_at) : '—'],
        ['Updated', timeEl(job.updated_at)],
      ];
      if (job.status === 'retrying' && job.next_attempt_at) {
        rows.push(['Next attempt', timeEl(job.next_attempt_at)]);
      }
      facts.replaceChildren(factList(rows));
      facts.dataset.status = job.status;
      renderProgress();
      inputBox.replaceChildren(factList(inputFacts(job.input)));
      if (job.result) {
        outcomeHeading.textContent = 'Result';
        outcomeBox.replaceChildren(factList(resultFacts(job.result), 'facts facts-wide'));
      } else if (job.last_error) {
        outcomeHeading.textContent = 'Last error';
        outcomeBox.replaceChildren(h('pre', { class: 'error-text', id: 'last-error' }, job.last_error));
      } else {
        outcomeHeading.textContent = 'Result';
        outcomeBox.replaceChildren(
          h('p', { class: 'muted' }, job.status === 'cancelled' ? 'Cancelled: no result.' : 'Not finished yet.'),
        );
      }
      if (actions) {
        const canRetry = RETRYABLE.has(job.status);
        const canCancel = CANCELLABLE.has(job.status);
        const hadFocus = document.activeElement;
        retryBtn.disabled = busy || !canRetry;
        cancelBtn.disabled = busy || !canCancel;
        hint.textContent = canRetry
          ? 'Retry queues the job again with fresh attempts.'
          : canCancel
            ? 'Cancel stops the job (a running one at its next safe point).'
            : 'Finished: nothing to do.';
        if ((hadFocus === retryBtn || hadFocus === cancelBtn) && hadFocus.disabled) message.focus();
      }
    }

    function renderTimeline() {
      const list = [...events.values()].sort((a, b) => a.id - b.id);
      timeline.replaceChildren(...timelineItems(list));
      timelineNote.textContent = truncated
        ? `Only the first ${EVENT_PAGES * 200} events were loaded; live events follow.`
        : list.length
          ? ''
          : 'No events yet.';
    }

    function scheduleRender() {
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        if (gone) return;
        renderFacts();
        renderTimeline();
      });
    }

    let liveProgress = null; // the newest progress seen live, for the attempt it belongs to
    let refreshFailed = false; // the message area shows a failed refresh (cleared by the next)

    async function loadJob() {
      try {
        const fresh = await api(`/v1/jobs/${encodeURIComponent(id)}`);
        if (gone) return;
        // A REST answer can be older than the progress events already shown: keep the newer.
        if (
          liveProgress &&
          fresh.status === 'running' &&
          liveProgress.attempt === fresh.attempt &&
          liveProgress.done > fresh.progress.done
        ) {
          fresh.progress = { done: liveProgress.done, total: liveProgress.total };
        }
        job = fresh;
        error.textContent = '';
        if (refreshFailed) {
          refreshFailed = false;
          say('');
        }
        scheduleRender();
      } catch (e) {
        if (gone) return;
        if (!job) {
          heading.textContent = 'Job not found';
          error.textContent =
            e instanceof ApiError && e.status === 404
              ? 'There is no job with this id that this key can see.'
              : describeError(e);
        } else {
          refreshFailed = true;
          say(`Could not refresh the job: ${describeError(e)}`, 'error');
        }
      }
    }

    async function loadEvents() {
      let after = null;
      for (let page = 0; page < EVENT_PAGES; page += 1) {
        const q = new URLSearchParams({ limit: '200' });
        if (after != null) q.set('after', String(after));
        let res;
        try {
          res = await api(`/v1/jobs/${encodeURIComponent(id)}/events?${q}`);
        } catch (e) {
          if (!gone && job) timelineNote.textContent = `Could not load events: ${describeError(e)}`;
          return;
        }
        if (gone) return;
        for (const ev of res.events) events.set(ev.id, ev);
        if (res.next_after == null) {
          truncated = false;
          scheduleRender();
          return;
        }
        after = res.next_after;
      }
      truncated = true;
      scheduleRender();
    }

    function refetchSoon() {
      clearTimeout(refetchTimer);
      refetchTimer = setTimeout(loadJob, 50);
    }

    const off = on((topic, ev) => {
      if (topic === 'resync') {
        loadJob();
        loadEvents();
        return;
      }
      if (topic === 'tick') return;
      if (topic !== 'event' || ev.job_id !== id) return;
      events.set(ev.id, ev);
      if (job) {
        applyEvent(job, ev);
        if (ev.type === 'progress') {
          liveProgress = { attempt: job.attempt, done: ev.data.done, total: ev.data.total };
        } else {
          if (ev.type === 'started' || ev.type === 'retried') liveProgress = null;
          refetchSoon(); // times, result, error: one GET, driven by the event
        }
      }
      scheduleRender();
    });

    async function act(action) {
      busy = true;
      retryBtn.disabled = true;
      cancelBtn.disabled = true;
      say(action === 'retry' ? 'Queuing the job again…' : 'Cancelling…');
      try {
        const updated = await api(`/v1/jobs/${encodeURIComponent(id)}/${action}`, {
          method: 'POST',
        });
        if (gone) return;
        job = updated;
        liveProgress = null;
        say(
          action === 'retry'
            ? `Retry accepted: the job is ${updated.status} again with fresh attempts.`
            : `Cancel accepted: the job is ${updated.status}.`,
          'success',
        );
      } catch (e) {
        if (gone) return;
        say(`${action === 'retry' ? 'Retry' : 'Cancel'} failed: ${describeError(e)}`, 'error');
      } finally {
        busy = false;
        if (!gone) {
          renderFacts();
          if (document.activeElement === document.body || document.activeElement?.disabled) {
            message.focus();
          }
        }
      }
    }
    if (actions) {
      retryBtn.disabled = true;
      cancelBtn.disabled = true;
      retryBtn.addEventListener('click', () => act('retry'));
      cancelBtn.addEventListener('click', () => act('cancel'));
    }

    loadJob().then(() => {
      if (!gone && job) loadEvents();
    });

    return {
      heading,
      unmount() {
        gone = true;
        off();
        clearTimeout(refetchTimer);
        if (frame) cancelAnimationFrame(frame);
        document.title = 'jobq dashboard';
      },
    };
  }

  function NotFoundView() {
    const heading = h('h1', { tabindex: '-1' }, 'Not found');
    main.replaceChildren(
      h(
        'section',
        { class: 'view' },
        heading,
        h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Go to the overview'), '.'),
      ),
    );
    return { heading, unmount() {} };
  }

  // ---------------------------------------------------------------------------------------------
  // Router: #/ (overview), #/jobs?<filter>, #/jobs/<id>

  let current = null;
  let routed = false;

  function unmountCurrent() {
    if (current) current.unmount();
    current = null;
  }

  function route() {
    if (!S.key) return;
    const raw = location.hash.replace(/^#/, '') || '/';
    const [path, query = ''] = raw.split('?');
    const params = new URLSearchParams(query);
    unmountCurrent();
    let navName = null;
    const m = path.match(/^\/jobs\/([^/]+)$/);
    if (path === '/' || path === '') {
      current = OverviewView();
      navName = 'overview';
    } else if (path === '/jobs') {
      current = JobsView(params);
      navName = 'jobs';
    } else if (m) {
      current = DetailView(decodeURIComponent(m[1]));
      navName = 'jobs';
    } else {
      current = NotFoundView();
    }
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === navName) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    // Keyboard and screen-reader users land on the new view's heading (not on the first load).
    if (routed && current.heading) current.heading.focus({ preventScroll: false });
    routed = true;
    window.scrollTo(0, 0);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  // The address's fragment is the router's: the skip link moves focus without changing it.
  $('.skip-link').addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', route);

  async function boot() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (!key) {
      showSignIn();
      return;
    }
    main.replaceChildren(h('p', { class: 'muted' }, 'Signing in…'));
    try {
      await startSession(key);
      route();
    } catch (e) {
      sessionStorage.removeItem(KEY_STORAGE);
      showSignIn(
        e instanceof ApiError && e.status === 401
          ? 'The saved key was refused (unknown or revoked). Sign in again.'
          : describeError(e),
      );
    }
  }

  boot();
})();
