// The wq dashboard: plain JavaScript, no build step, nothing loaded from
// elsewhere. It reads and acts through the server's JSON API under /api/.
//
// Every value from the API reaches the page as text (textContent, or an
// attribute value set with setAttribute): never as markup.
'use strict';

(() => {
  /** The API, relative to this page (/ui/), so a server mounted under a prefix works. */
  const API = new URL('../api/', location.href);
  /** Where the token is kept: this tab only, gone when it closes. */
  const TOKEN_KEY = 'wq.token';
  const STATES = ['scheduled', 'available', 'running', 'completed', 'dead', 'cancelled'];
  const POLL_MS = 1000;
  /** The chart's span. */
  const WINDOW_MS = 5 * 60 * 1000;
  /** Jobs/s figures are averaged over this. */
  const RATE_MS = 10 * 1000;
  /** Successive polls further apart than this leave a gap in the chart. */
  const GAP_MS = 5 * POLL_MS;
  const PAGE = 50;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM

  /**
   * A new element. `attrs` are set as attributes (`class` as the class
   * name); `children` are nodes or values, values become text nodes.
   */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Sets a node's text, leaving it alone when it already says so. */
  function setText(node, value) {
    const text = value === undefined || value === null ? '' : String(value);
    if (node.textContent !== text) node.textContent = text;
  }

  /**
   * Brings `tbody`'s rows in line with `items`, one row per key, reusing
   * the row of a key seen before: a row is not replaced under the pointer
   * every second, and a click on it lands.
   */
  function syncRows(tbody, items, keyOf, create, update) {
    const old = new Map();
    for (const row of tbody.rows) old.set(row.wqKey, row);
    const rows = items.map((item) => {
      const key = keyOf(item);
      let row = old.get(key);
      if (!row) {
        row = create(item);
        row.wqKey = key;
      }
      update(row, item);
      return row;
    });
    const same = rows.length === tbody.rows.length && rows.every((r, i) => tbody.rows[i] === r);
    if (!same) tbody.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- formats

  const numbers = new Intl.NumberFormat('en-US');

  function fmtCount(n) {
    return numbers.format(n);
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return '—';
    if (r === 0) return '0';
    if (r >= 100) return numbers.format(Math.round(r));
    if (r >= 10) return r.toFixed(1);
    return r.toFixed(2);
  }

  /** A stored time, as a local time (with the date when not today). */
  function fmtTime(s) {
    if (!s) return '—';
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return s;
    const time = d.toLocaleTimeString('en-GB', { hour12: false });
    return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString('en-CA')} ${time}`;
  }

  function fmtDuration(from, to) {
    const ms = new Date(to) - new Date(from);
    if (!Number.isFinite(ms) || ms < 0) return '—';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  }

  /** A job id, short: a UUIDv7 starts with its time, so its end tells jobs apart. */
  function shortId(id) {
    return `…${id.slice(-12)}`;
  }

  /** A time cell: local time shown, the stored value on hover. */
  function timeCell(cell, s) {
    setText(cell, fmtTime(s));
    cell.title = s || '';
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** A path segment, escaped. */
  const seg = (s) => encodeURIComponent(s);

  /** Calls the API; answers its JSON (null for 204), throws an ApiError. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(new URL(path, API), init);
    } catch {
      throw new ApiError(0, 'the server does not answer');
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  // ---------------------------------------------------------------- state

  /** What is open, from the address's hash: `#queue=q&state=dead&job=id`. */
  function readRoute() {
    const p = new URLSearchParams(location.hash.slice(1));
    const state = STATES.includes(p.get('state')) ? p.get('state') : 'available';
    return { queue: p.get('queue'), state, job: p.get('job') };
  }

  function go({ queue = null, state = 'available', job = null }) {
    const p = new URLSearchParams();
    if (queue) {
      p.set('queue', queue);
      p.set('state', state);
    }
    if (job) p.set('job', job);
    location.hash = p.toString();
  }

  let route = readRoute();
  /** The last answer of GET /api/queues. */
  let queues = [];
  /** Finished jobs per queue at each poll: what the chart is drawn from. */
  const samples = [];
  /** The job list shown: which queue and state, its pages so far. */
  let list = { key: null, jobs: [], next: null, pages: 0 };
  /** Whether the API asked for a token (polling stops until one is given). */
  let needToken = false;
  let pollTimer = null;
  let polling = false;
  let pollAgain = false;

  // ---------------------------------------------------------------- polling

  /** Polls now, then every second; a call during a poll polls once more after it. */
  async function refresh() {
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    clearTimeout(pollTimer);
    try {
      do {
        pollAgain = false;
        await poll();
      } while (pollAgain);
    } finally {
      polling = false;
    }
    if (!needToken) pollTimer = setTimeout(refresh, POLL_MS);
  }

  async function poll() {
    const r = route;
    try {
      queues = await api('GET', 'queues');
      record(queues);
      showApp();
      renderQueues();
      drawChart();
      await Promise.all([r.queue ? refreshQueue(r) : null, r.job ? refreshJob(r) : null]);
      setStatus('live', `live · ${fmtTime(new Date().toISOString())}`);
    } catch (e) {
      if (e.status === 401) askToken();
      // A tenant's token may not see whole queues: the dashboard needs an admin's.
      else if (e.status === 403 && $('app').hidden) askToken(`This token may not see whole queues: ${e.message}`);
      else setStatus('error', `not updated: ${e.message}`);
    }
  }

  function setStatus(kind, text) {
    const status = $('status');
    status.dataset.status = kind;
    setText(status, text);
  }

  // ---------------------------------------------------------------- token

  /** Stops polling and asks for a token; `why` tells what was wrong with the last one. */
  function askToken(why = 'The server refused that token.') {
    const refused = sessionStorage.getItem(TOKEN_KEY) !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    needToken = true;
    clearTimeout(pollTimer);
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !refused;
    setText($('login-error'), refused ? why : '');
    setStatus('idle', '');
    $('token').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = sessionStorage.getItem(TOKEN_KEY) === null;
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('login-error').hidden = true;
    needToken = false;
    setStatus('idle', 'connecting…');
    refresh();
  });

  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  // ---------------------------------------------------------------- actions

  let bannerTimer = null;

  /** Tells the outcome of an action, for a few seconds. */
  function notify(message, kind = 'ok') {
    const banner = $('banner');
    banner.dataset.kind = kind;
    setText(banner, message);
    banner.hidden = false;
    clearTimeout(bannerTimer);
    bannerTimer = setTimeout(() => (banner.hidden = true), kind === 'error' ? 10_000 : 4000);
  }

  $('banner').addEventListener('click', () => ($('banner').hidden = true));

  /**
   * Runs an action from `button`: disabled meanwhile, its outcome told,
   * then everything polled again. `confirmText`, when given, asks first.
   */
  async function act(button, confirmText, run) {
    if (confirmText && !window.confirm(confirmText)) return;
    button.disabled = true;
    try {
      const message = await run();
      if (message) notify(message);
    } catch (e) {
      if (e.status === 401) return askToken();
      notify(e.message, 'error');
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  /** A wait in milliseconds, as a person reads it; a dash when none. */
  function fmtWait(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms < 3600000) return `${Math.floor(ms / 60000)} min`;
    return `${(ms / 3600000).toFixed(1)} h`;
  }

  const jobsWord = (n) => (n === 1 ? '1 job' : `${fmtCount(n)} jobs`);

  // ---------------------------------------------------------------- throughput

  /** Keeps each queue's finished jobs at this poll. */
  function record(qs) {
    const t = Date.now();
    const finished = new Map();
    // `finished` counts every job that ever finished, pruned or not.
    for (const q of qs) finished.set(q.name, q.counts.finished);
    samples.push({ t, finished });
    // One sample older than the window stays: the first rate starts there.
    while (samples.length > 2 && samples[1].t < t - WINDOW_MS) samples.shift();
  }

  /**
   * Jobs finished between two polls, of `name` or of every queue. The
   * count only grows; a fall (a store emptied) counts as none finished.
   */
  function finishedBetween(a, b, name) {
    let n = 0;
    for (const [queue, after] of b.finished) {
      if (name !== undefined && queue !== name) continue;
      const before = a.finished.get(queue);
      if (before !== undefined) n += Math.max(0, after - before);
    }
    return n;
  }

  /** Jobs/s over the last RATE_MS, of `name` or of every queue; null before two polls. */
  function recentRate(name) {
    const since = Date.now() - RATE_MS;
    let jobs = 0;
    let ms = 0;
    for (let i = samples.length - 1; i > 0 && samples[i].t >= since; i--) {
      const a = samples[i - 1];
      const b = samples[i];
      if (b.t - a.t > GAP_MS) break;
      jobs += finishedBetween(a, b, name);
      ms += b.t - a.t;
    }
    return ms > 0 ? (jobs * 1000) / ms : null;
  }

  /** 1, 2 or 5 times a power of ten, at least `v`. */
  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const canvas = $('throughput');
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const now = Date.now();
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const ms = b.t - a.t;
      if (ms <= 0) continue;
      points.push({ t: b.t, gap: ms > GAP_MS, rate: (finishedBetween(a, b) * 1000) / ms });
    }
    // The span grows with what was measured, from a minute up to the window.
    const span = Math.min(WINDOW_MS, Math.max(60_000, now - (samples[0]?.t ?? now)));
    const visible = points.filter((p) => p.t >= now - span);
    const max = niceCeil(Math.max(1, ...visible.map((p) => p.rate)));
    const pad = { left: 48, right: 12, top: 10, bottom: 24 };
    const pw = w - pad.left - pad.right;
    const ph = h - pad.top - pad.bottom;
    const x = (t) => pad.left + pw * (1 - (now - t) / span);
    const y = (v) => pad.top + ph * (1 - v / max);

    ctx.font = '11px system-ui, -apple-system, "Segoe UI", sans-serif';
    ctx.lineWidth = 1;
    ctx.fillStyle = '#6b7280';
    ctx.strokeStyle = '#e5e7eb';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const v of [0, max / 2, max]) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, yy);
      ctx.lineTo(w - pad.right, yy);
      ctx.stroke();
      ctx.fillText(fmtRate(v), pad.left - 8, yy);
    }
    ctx.textBaseline = 'top';
    const step = span <= 60_000 ? 10_000 : span <= 180_000 ? 30_000 : 60_000;
    for (let ago = 0; ago <= span; ago += step) {
      const label = ago === 0 ? 'now' : ago % 60_000 === 0 ? `−${ago / 60_000} min` : `−${ago / 1000} s`;
      ctx.textAlign = ago === 0 ? 'right' : 'center';
      ctx.fillText(label, x(now - ago), h - pad.bottom + 8);
    }

    if (visible.length === 0) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText('Measuring…', pad.left + pw / 2, pad.top + ph / 2);
      return;
    }
    // Runs of points without a gap, each drawn as a filled line.
    const runs = [];
    for (const p of visible) {
      if (p.gap || runs.length === 0) runs.push([]);
      runs[runs.length - 1].push(p);
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.left, pad.top - 1, pw, ph + 2);
    ctx.clip();
    for (const run of runs) {
      ctx.beginPath();
      ctx.moveTo(x(run[0].t), y(0));
      for (const p of run) ctx.lineTo(x(p.t), y(p.rate));
      ctx.lineTo(x(run[run.length - 1].t), y(0));
      ctx.closePath();
      ctx.fillStyle = 'rgba(37, 99, 235, 0.12)';
      ctx.fill();
      ctx.beginPath();
      run.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.rate)) : ctx.lineTo(x(p.t), y(p.rate))));
      ctx.strokeStyle = '#2563eb';
      ctx.lineWidth = 1.5;
      ctx.lineJoin = 'round';
      ctx.stroke();
    }
    ctx.restore();
  }

  window.addEventListener('resize', drawChart);

  // ---------------------------------------------------------------- queues

  function queueRow(q) {
    const parts = {
      status: el('span', { class: 'badge' }),
      counts: STATES.map((s) => el('button', { type: 'button', class: 'count', 'data-count': s, 'data-state': s, title: `List the ${s} jobs` })),
      wait: el('td', { class: 'num muted', 'data-wait': '' }),
      rate: el('td', { class: 'num muted' }),
      toggle: el('button', { type: 'button', class: 'small' }),
    };
    const row = el(
      'tr',
      { 'data-queue': q.name },
      el('td', {}, el('button', { type: 'button', class: 'link mono', 'data-open': '' }, q.name)),
      el('td', {}, parts.status),
      parts.counts.map((b) => el('td', { class: 'num' }, b)),
      parts.wait,
      parts.rate,
      el('td', { class: 'actions' }, parts.toggle),
    );
    row.parts = parts;
    return row;
  }

  function updateQueueRow(row, q) {
    const { status, counts, wait, rate, toggle } = row.parts;
    setText(status, q.paused ? 'paused' : 'active');
    status.dataset.state = q.paused ? 'paused' : 'active';
    STATES.forEach((s, i) => {
      setText(counts[i], fmtCount(q.counts[s]));
      counts[i].classList.toggle('zero', q.counts[s] === 0);
    });
    setText(wait, fmtWait(q.oldest_wait_ms));
    setText(rate, fmtRate(recentRate(q.name)));
    setText(toggle, q.paused ? 'Resume' : 'Pause');
    toggle.dataset.action = q.paused ? 'resume' : 'pause';
    row.classList.toggle('selected', route.queue === q.name);
  }

  function renderQueues() {
    const tbody = $('queues').tBodies[0];
    syncRows(tbody, queues, (q) => q.name, queueRow, updateQueueRow);
    $('no-queues').hidden = queues.length > 0;
    setText($('rate'), samples.length > 1 ? `${fmtRate(recentRate())} jobs/s` : '');
  }

  /** The state a queue opens at: the first with jobs, busiest concerns first. */
  function openingState(name) {
    const q = queues.find((x) => x.name === name);
    const order = ['dead', 'running', 'available', 'scheduled', 'completed', 'cancelled'];
    return (q && order.find((s) => q.counts[s] > 0)) || 'available';
  }

  $('queues').tBodies[0].addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-queue]');
    if (!row) return;
    const name = row.dataset.queue;
    const count = e.target.closest('[data-count]');
    const action = e.target.closest('[data-action]');
    if (count) {
      go({ queue: name, state: count.dataset.count });
    } else if (action) {
      const verb = action.dataset.action;
      act(action, null, async () => {
        await api('POST', `queues/${seg(name)}/${verb}`);
        return `Queue ${name} ${verb === 'pause' ? 'paused' : 'resumed'}.`;
      });
    } else if (e.target.closest('[data-open]')) {
      go({ queue: name, state: openingState(name) });
    }
  });

  // ---------------------------------------------------------------- one queue

  /** What the list's time column shows, by state. */
  const WHEN = {
    scheduled: ['Runs at', (j) => j.run_at],
    available: ['Due since', (j) => j.run_at],
    running: ['Started', (j) => j.lease?.started_at ?? j.updated_at],
    completed: ['Finished', (j) => j.finished_at],
    dead: ['Died', (j) => j.finished_at ?? j.updated_at],
    cancelled: ['Cancelled', (j) => j.finished_at ?? j.updated_at],
  };

  const tabs = STATES.map((s) =>
    el('button', { type: 'button', role: 'tab', class: 'tab', 'data-state': s, 'data-tab': s }, el('span', {}, s), el('span', { class: 'tab-count' })),
  );
  $('state-tabs').replaceChildren(...tabs);
  $('state-tabs').addEventListener('click', (e) => {
    const tab = e.target.closest('[data-tab]');
    if (tab && route.queue) go({ queue: route.queue, state: tab.dataset.tab });
  });

  /** The queue's header and tabs, from the last queue counts. */
  function renderQueueHead() {
    const q = queues.find((x) => x.name === route.queue);
    setText($('queue-name'), route.queue);
    $('queue-paused').hidden = !q?.paused;
    for (const tab of tabs) {
      const s = tab.dataset.tab;
      tab.setAttribute('aria-selected', String(s === route.state));
      setText(tab.lastChild, q ? fmtCount(q.counts[s]) : '');
    }
    const dead = q?.counts.dead ?? 0;
    $('retry-all').hidden = route.state !== 'dead' || dead === 0;
    $('purge-all').hidden = route.state !== 'dead' || dead === 0;
    setText($('jobs-when'), WHEN[route.state][0]);
  }

  function listQuery(r, after) {
    const p = new URLSearchParams({ queue: r.queue, state: r.state, limit: String(PAGE) });
    if (after) p.set('after', after);
    return `jobs?${p}`;
  }

  async function refreshQueue(r) {
    const key = `${r.queue}\n${r.state}`;
    // The first page is read again at each poll; once more pages are shown,
    // the list stays as it is (until the state or queue changes).
    const reread = list.key !== key || list.pages <= 1;
    const before = list;
    const q = seg(r.queue);
    let answers;
    try {
      answers = await Promise.all([
        reread ? api('GET', listQuery(r)) : null,
        api('GET', `queues/${q}/groups/blocked`),
        api('GET', `queues/${q}/sessions`),
      ]);
    } catch (e) {
      // An unknown queue is this view's trouble, not the whole page's.
      if (e.status !== 404 && e.status !== 422) throw e;
      if (route === r) {
        setText($('queue-error'), e.message);
        $('queue-error').hidden = false;
      }
      return;
    }
    if (route !== r) return;
    $('queue-error').hidden = true;
    const [page, blocked, sessions] = answers;
    // Unless a page was added meanwhile ("Load more"): that list stays.
    if (page && list === before) list = { key, jobs: page.jobs, next: page.next, pages: 1 };
    renderQueueHead();
    renderJobs();
    renderBlocked(blocked);
    renderSessions(sessions);
  }

  function jobRow(j) {
    const parts = {
      group: el('td', { class: 'mono' }),
      session: el('td', { class: 'mono' }),
      attempt: el('td', { class: 'num' }),
      when: el('td', {}),
      error: el('td', { class: 'error-cell' }),
    };
    const row = el(
      'tr',
      { 'data-job-id': j.id, class: 'clickable' },
      el('td', {}, el('button', { type: 'button', class: 'link mono', title: j.id }, shortId(j.id))),
      parts.group,
      parts.session,
      parts.attempt,
      parts.when,
      parts.error,
    );
    row.parts = parts;
    return row;
  }

  function updateJobRow(row, j) {
    const { group, session, attempt, when, error } = row.parts;
    setText(group, j.group ?? '—');
    setText(session, j.session ?? '—');
    setText(attempt, `${j.attempt} / ${j.max_attempts}`);
    timeCell(when, WHEN[route.state][1](j));
    setText(error, j.last_error ?? '');
    error.title = j.last_error ?? '';
    row.classList.toggle('selected', route.job === j.id);
  }

  function renderJobs() {
    syncRows($('jobs').tBodies[0], list.jobs, (j) => j.id, jobRow, updateJobRow);
    $('no-jobs').hidden = list.jobs.length > 0;
    $('more').hidden = !list.next;
  }

  $('jobs').tBodies[0].addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-job-id]');
    if (row) go({ queue: route.queue, state: route.state, job: row.dataset.jobId });
  });

  $('more').addEventListener('click', () => {
    const r = route;
    const button = $('more');
    act(button, null, async () => {
      const page = await api('GET', listQuery(r, list.next));
      if (route !== r) return;
      list = { ...list, jobs: list.jobs.concat(page.jobs), next: page.next, pages: list.pages + 1 };
      renderJobs();
    });
  });

  $('retry-all').addEventListener('click', (e) => {
    const queue = route.queue;
    act(e.currentTarget, `Run every dead job of ${queue} again?`, async () => {
      const { affected } = await api('POST', `queues/${seg(queue)}/dead/retry`, {});
      return `${jobsWord(affected)} retried.`;
    });
  });

  $('purge-all').addEventListener('click', (e) => {
    const queue = route.queue;
    act(e.currentTarget, `Delete every dead job of ${queue}? This cannot be undone.`, async () => {
      const { affected } = await api('POST', `queues/${seg(queue)}/dead/purge`, {});
      return `${jobsWord(affected)} purged.`;
    });
  });

  $('queue-close').addEventListener('click', () => go({}));

  function blockedRow(b) {
    const parts = {
      head: el('button', { type: 'button', class: 'link mono', 'data-open-job': '' }),
      state: el('span', { class: 'badge' }),
      behind: el('td', { class: 'num' }),
      error: el('td', { class: 'error-cell' }),
      unblock: el('button', { type: 'button', class: 'small', 'data-action': 'unblock' }, 'Unblock'),
    };
    const row = el(
      'tr',
      { 'data-group': b.group },
      el('td', { class: 'mono' }, b.group),
      el('td', {}, parts.head),
      el('td', {}, parts.state),
      parts.behind,
      parts.error,
      el('td', { class: 'actions' }, parts.unblock, el('button', { type: 'button', class: 'small danger', 'data-action': 'skip' }, 'Skip')),
    );
    row.parts = parts;
    return row;
  }

  function updateBlockedRow(row, b) {
    const { head, state, behind, error, unblock } = row.parts;
    setText(head, shortId(b.head.id));
    head.title = b.head.id;
    head.dataset.jobId = b.head.id;
    setText(state, b.head.state);
    state.dataset.state = b.head.state;
    setText(behind, fmtCount(b.behind));
    setText(error, b.head.last_error ?? '');
    error.title = b.head.last_error ?? '';
    // Only a dead head can be run again now; one waiting to retry runs at its time.
    unblock.hidden = b.head.state !== 'dead';
  }

  function renderBlocked(blocked) {
    syncRows($('blocked').tBodies[0], blocked, (b) => b.group, blockedRow, updateBlockedRow);
    $('no-blocked').hidden = blocked.length > 0;
  }

  $('blocked').tBodies[0].addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-group]');
    if (!row) return;
    const group = row.dataset.group;
    const queue = route.queue;
    const head = e.target.closest('[data-open-job]');
    const action = e.target.closest('[data-action]');
    if (head) {
      go({ queue, state: route.state, job: head.dataset.jobId });
    } else if (action?.dataset.action === 'unblock') {
      act(action, null, async () => {
        await api('POST', `queues/${seg(queue)}/groups/${seg(group)}/unblock`);
        return `Group ${group}: its head runs again.`;
      });
    } else if (action?.dataset.action === 'skip') {
      act(action, `Skip the head of group ${group}? A dead head is deleted, one waiting to retry is cancelled.`, async () => {
        await api('POST', `queues/${seg(queue)}/groups/${seg(group)}/skip`);
        return `Group ${group} moved past its head.`;
      });
    }
  });

  function sessionRow(s) {
    const parts = {
      status: el('span', { class: 'badge' }),
      reason: el('span', { class: 'muted reason' }),
      running: el('td', { class: 'num' }),
      waiting: el('td', { class: 'num' }),
      max: el('td', { class: 'num' }),
      next: el('td', {}),
      toggle: el('button', { type: 'button', class: 'small' }),
    };
    const row = el(
      'tr',
      { 'data-session': s.session },
      el('td', { class: 'mono' }, s.session),
      el('td', {}, parts.status, parts.reason),
      parts.running,
      parts.waiting,
      parts.max,
      parts.next,
      el('td', { class: 'actions' }, parts.toggle),
    );
    row.parts = parts;
    return row;
  }

  function updateSessionRow(row, s) {
    const { status, reason, running, waiting, max, next, toggle } = row.parts;
    setText(status, s.paused ? 'paused' : 'active');
    status.dataset.state = s.paused ? 'paused' : 'active';
    setText(reason, s.paused && s.pause_reason ? s.pause_reason : '');
    setText(running, fmtCount(s.running));
    setText(waiting, fmtCount(s.waiting));
    setText(max, s.max_running ?? '—');
    timeCell(next, s.next_start);
    setText(toggle, s.paused ? 'Resume' : 'Pause');
    toggle.dataset.action = s.paused ? 'resume' : 'pause';
  }

  function renderSessions(sessions) {
    syncRows($('sessions').tBodies[0], sessions, (s) => s.session, sessionRow, updateSessionRow);
    $('no-sessions').hidden = sessions.length > 0;
  }

  $('sessions').tBodies[0].addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-session]');
    const action = e.target.closest('[data-action]');
    if (!row || !action) return;
    const session = row.dataset.session;
    const queue = route.queue;
    const verb = action.dataset.action;
    act(action, null, async () => {
      await api('POST', `queues/${seg(queue)}/sessions/${seg(session)}/${verb}`);
      return `Session ${session} ${verb === 'pause' ? 'paused' : 'resumed'}.`;
    });
  });

  // ---------------------------------------------------------------- one job

  /** The job shown, as last read. */
  let shownJob = null;

  async function refreshJob(r) {
    let job;
    try {
      job = await api('GET', `jobs/${seg(r.job)}`);
    } catch (e) {
      // Not found, or not a job id at all.
      if (e.status !== 404 && e.status !== 422) throw e;
      job = null;
    }
    if (route !== r) return;
    shownJob = job;
    renderJob(r.job, job);
  }

  function renderJob(id, job) {
    setText($('job-id'), id);
    const state = $('job-state');
    setText(state, job ? job.state : 'gone');
    state.dataset.state = job ? job.state : 'gone';
    const waiting = job && ['scheduled', 'available', 'running'].includes(job.state);
    $('cancel').hidden = !waiting;
    $('cancel').disabled = Boolean(job?.cancel_requested);
    setText($('cancel'), job?.cancel_requested ? 'Cancelling…' : 'Cancel');
    $('retry').hidden = job?.state !== 'dead';
    $('purge').hidden = job?.state !== 'dead';

    if (!job) {
      $('job-fields').replaceChildren(el('dt', {}, 'Job'), el('dd', {}, 'No such job: it was purged or pruned, or never was.'));
      for (const box of ['job-error-box', 'job-output-box']) $(box).hidden = true;
      $('job-payload').textContent = '';
      $('job-history').tBodies[0].replaceChildren();
      $('no-history').hidden = true;
      return;
    }

    const fields = [
      ['Queue', job.queue],
      ['Tenant', job.tenant],
      ['Group', job.group],
      ['Session', job.session],
      ['Priority', job.priority],
      ['Attempt', `${job.attempt} of ${job.max_attempts}`],
      ['Step', job.step],
      ['Idempotency key', job.idempotency_key],
      ['Run at', job.run_at, true],
      ['Created', job.created_at, true],
      ['Updated', job.updated_at, true],
      ['Finished', job.finished_at, true],
    ];
    if (job.lease) {
      fields.push(['Worker', job.lease.worker], ['Lease until', job.lease.expires_at, true]);
    }
    if (job.cancel_requested) fields.push(['Cancel', 'requested: ends when its handler hears of it']);
    $('job-fields').replaceChildren(
      ...fields.flatMap(([name, value, isTime]) => {
        const dd = el('dd', { class: isTime ? '' : 'mono' });
        if (isTime) timeCell(dd, value);
        else setText(dd, value ?? '—');
        return [el('dt', {}, name), dd];
      }),
    );

    $('job-error-box').hidden = !job.last_error;
    setText($('job-error'), job.last_error ?? '');
    setText($('job-payload'), JSON.stringify(job.payload, null, 2));
    $('job-output-box').hidden = job.output === null || job.output === undefined;
    setText($('job-output'), job.output == null ? '' : JSON.stringify(job.output, null, 2));

    $('job-history').tBodies[0].replaceChildren(
      ...job.history.map((a) =>
        el(
          'tr',
          { 'data-attempt': a.attempt },
          el('td', { class: 'num' }, a.attempt),
          el('td', {}, el('span', { class: 'badge', 'data-outcome': a.outcome }, a.outcome)),
          el('td', { title: a.started_at }, fmtTime(a.started_at)),
          el('td', { class: 'num' }, fmtDuration(a.started_at, a.ended_at)),
          el('td', { class: 'error-cell', title: a.error ?? '' }, a.error ?? ''),
        ),
      ),
    );
    $('no-history').hidden = job.history.length > 0;
  }

  $('cancel').addEventListener('click', (e) => {
    const job = shownJob;
    if (!job) return;
    act(e.currentTarget, 'Cancel this job?', async () => {
      const after = await api('POST', `jobs/${seg(job.id)}/cancel`);
      return after.state === 'cancelled' ? 'Job cancelled.' : 'Cancellation requested: the job ends when its handler hears of it.';
    });
  });

  $('retry').addEventListener('click', (e) => {
    const job = shownJob;
    if (!job) return;
    act(e.currentTarget, null, async () => {
      const { affected } = await api('POST', `queues/${seg(job.queue)}/dead/retry`, { ids: [job.id] });
      return affected ? 'Job retried: it waits for a worker.' : 'Nothing retried: the job is no longer dead.';
    });
  });

  $('purge').addEventListener('click', (e) => {
    const job = shownJob;
    if (!job) return;
    act(e.currentTarget, 'Delete this dead job? This cannot be undone.', async () => {
      const { affected } = await api('POST', `queues/${seg(job.queue)}/dead/purge`, { ids: [job.id] });
      if (affected && route.job === job.id) go({ queue: route.queue, state: route.state });
      return affected ? 'Job purged.' : 'Nothing purged: the job is no longer dead.';
    });
  });

  $('job-close').addEventListener('click', () => go({ queue: route.queue, state: route.state }));

  // ---------------------------------------------------------------- layout

  /** Shows what the route opens, from what is known, and polls for the rest. */
  function applyRoute() {
    $('queue-view').hidden = !route.queue;
    $('job-view').hidden = !route.job;
    document.querySelector('.split').classList.toggle('two', Boolean(route.queue && route.job));
    $('queue-error').hidden = true;
    if (route.queue) {
      renderQueueHead();
      if (list.key !== `${route.queue}\n${route.state}`) {
        list = { key: null, jobs: [], next: null, pages: 0 };
        renderJobs();
        $('no-jobs').hidden = true;
      } else {
        renderJobs();
      }
    }
    if (route.job && shownJob?.id !== route.job) {
      shownJob = null;
      setText($('job-id'), route.job);
      setText($('job-state'), '…');
      for (const id of ['cancel', 'retry', 'purge']) $(id).hidden = true;
    }
    for (const row of $('queues').tBodies[0].rows) row.classList.toggle('selected', row.dataset.queue === route.queue);
  }

  window.addEventListener('hashchange', () => {
    route = readRoute();
    applyRoute();
    if (!needToken) refresh();
  });

  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || e.target.closest('input')) return;
    if (route.job) go({ queue: route.queue, state: route.state });
    else if (route.queue) go({});
  });

  applyRoute();
  setStatus('idle', 'connecting…');
  refresh();
})();
