// raftkv web console (docs/console.md). Plain JavaScript, no framework, no build step:
// kvnode serves this file as is. Everything on screen comes from the node's HTTP API with
// the user's own credentials; the page never builds HTML from data (text nodes only).
'use strict';

(() => {
  // The API lives next to /ui/: '' normally, a path prefix behind a proxy.
  const API = location.pathname.replace(/\/ui(\/.*)?$/, '');
  const PAGE_SIZES = [25, 50, 100, 500];
  const CLUSTER_REFRESH_MS = 2000;
  const HEX_LIMIT = 64 * 1024;

  // Session: the token lives in sessionStorage (this origin and this tab only, gone when the
  // tab closes) and goes out in x-raftkv-token, which also passes the Kubernetes API server's
  // service proxy (it consumes Authorization itself).
  const session = {
    get token() { return sessionStorage.getItem('raftkv.token'); },
    get user() { return sessionStorage.getItem('raftkv.user'); },
    set(token, user) { sessionStorage.setItem('raftkv.token', token); sessionStorage.setItem('raftkv.user', user); },
    clear() { sessionStorage.removeItem('raftkv.token'); sessionStorage.removeItem('raftkv.user'); },
  };
  const state = {
    authEnabled: false,
    whoami: null,
    afterLogin: '#/keys',
    // Per view: stopped when the route changes.
    view: { abort: new AbortController(), timers: [] },
    // Page starts of the key browser, for "Previous", per prefix.
    pages: { prefix: null, starts: [] },
  };

  // ------------------------------------------------------------------ DOM
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (sel) => document.querySelector(sel);
  const main = () => $('#main');
  function show(...nodes) { main().replaceChildren(...nodes.flat().filter(Boolean)); }
  let toastTimer = 0;
  function toast(msg) {
    const t = $('#toast');
    t.textContent = msg;
    t.classList.add('show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('show'), 3000);
  }
  const fmt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
  const encKey = (k) => encodeURIComponent(k);

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  async function api(path, opts = {}) {
    const headers = new Headers(opts.headers || {});
    if (session.token) headers.set('x-raftkv-token', session.token);
    const signal = opts.signal || state.view.abort.signal;
    const resp = await fetch(API + path, { ...opts, headers, signal, cache: 'no-store' });
    if (resp.ok) return resp;
    let code = null, message = `HTTP ${resp.status}`;
    try {
      const body = await resp.json();
      if (body && body.error) { code = body.error.code; message = body.error.message; }
    } catch (_) { /* not JSON */ }
    // 401: no valid token (expired, retired, or auth was switched on meanwhile): sign in.
    if (resp.status === 401) {
      state.authEnabled = true;
      const had = session.token;
      session.clear();
      state.whoami = null;
      if (!location.hash.startsWith('#/login')) state.afterLogin = location.hash;
      location.hash = '#/login';
      renderWho();
      throw new ApiError(401, code, had ? 'Your session ended; sign in again.' : message);
    }
    throw new ApiError(resp.status, code, message);
  }
  const apiJson = async (path, opts) => (await api(path, opts)).json();
  const jsonBody = (v) => ({ body: JSON.stringify(v), headers: { 'content-type': 'application/json' } });

  // ------------------------------------------------------------------ bytes
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  function asText(bytes) { try { return utf8.decode(bytes); } catch (_) { return null; } }
  function asJson(text) {
    if (text === null) return null;
    const t = text.trim();
    if (!t || !'{["'.includes(t[0]) && !/^(-?\d|true|false|null)/.test(t)) return null;
    try { return JSON.parse(t); } catch (_) { return null; }
  }
  function toBase64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function fromBase64(b64) {
    const s = atob(b64.replace(/\s+/g, ''));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function hexDump(bytes) {
    const lines = [];
    const n = Math.min(bytes.length, HEX_LIMIT);
    for (let off = 0; off < n; off += 16) {
      const row = bytes.subarray(off, Math.min(off + 16, n));
      const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
      const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
      lines.push(`${off.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
    }
    if (bytes.length > n) lines.push(`… first ${fmt(n)} of ${fmt(bytes.length)} bytes`);
    return lines.join('\n');
  }
  const b64Len = (s) => Math.floor((s.length * 3) / 4) - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0);
  function preview(item) {
    if (item.value === undefined) return '';
    if (item.value_encoding === 'base64') return `binary · ${fmt(b64Len(item.value))} bytes`;
    const v = item.value.replace(/\r?\n/g, ' ⏎ ');
    return v.length > 120 ? `${v.slice(0, 120)}…` : v;
  }
  // The parent "folder" of a key: what the key browser goes back to.
  function parentPrefix(key) { const i = key.lastIndexOf('/', key.length - 2); return i < 0 ? '' : key.slice(0, i + 1); }

  // ------------------------------------------------------------------ header
  function renderWho() {
    const who = $('#who');
    if (!state.authEnabled) {
      who.replaceChildren(h('span', { class: 'badge warn', title: 'Anyone who reaches this port can read and change every key' }, 'auth disabled'));
      return;
    }
    if (!session.token) { who.replaceChildren(h('span', {}, 'not signed in')); return; }
    const roles = state.whoami ? state.whoami.roles.join(', ') : '';
    who.replaceChildren(
      h('span', { id: 'who-name', title: roles ? `roles: ${roles}` : null }, session.user),
      h('button', { id: 'logout', type: 'button', onclick: logout }, 'Sign out'),
    );
  }
  function logout() {
    session.clear();
    state.whoami = null;
    state.afterLogin = '#/keys';
    renderWho();
    location.hash = '#/login';
    toast('Signed out');
  }
  function markNav(section) {
    for (const [id, s] of [['nav-keys', 'keys'], ['nav-cluster', 'cluster']]) {
      const a = document.getElementById(id);
      if (s === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
  }
  // What the signed-in user may read, as links: the answer to a 403.
  function readableList() {
    const perms = (state.whoami && state.whoami.permissions) || [];
    const items = perms.filter((p) => p.permission !== 'write').map((p) => {
      if (p.prefix) return h('li', {}, h('a', { href: `#/keys?prefix=${encKey(p.key)}` }, p.key === '' ? 'every key' : `${p.key}…`), ' (prefix)');
      if (p.range_end !== undefined) return h('li', {}, h('a', { href: `#/keys?prefix=&start=${encKey(p.key)}` }, `${p.key} … ${p.range_end}`), ' (range)');
      return h('li', {}, h('a', { href: `#/key/${encKey(p.key)}` }, p.key), ' (one key)');
    });
    return items.length ? h('div', {}, h('p', {}, 'You can read:'), h('ul', { id: 'readable' }, items))
      : h('p', {}, 'Your roles grant no read permission.');
  }
  function errorPanel(e, what) {
    if (e.status === 403) {
      return h('div', { class: 'panel bad', role: 'alert', id: 'denied' },
        h('h2', {}, `Not allowed: ${what}`), h('p', {}, e.message), readableList());
    }
    return h('div', { class: 'panel bad', role: 'alert' }, h('h2', {}, `Could not ${what}`),
      h('p', {}, e.message), e.code === 'no_leader' || e.status === 503 ? h('p', {}, 'The cluster may be electing a leader; retry in a moment.') : null);
  }

  // ------------------------------------------------------------------ login
  function renderLogin() {
    markNav(null);
    const err = h('p', { class: 'error', role: 'alert', id: 'login-error' });
    const name = h('input', { type: 'text', id: 'login-name', name: 'username', autocomplete: 'username', required: true });
    const pass = h('input', { type: 'password', id: 'login-password', name: 'password', autocomplete: 'current-password', required: true });
    const form = h('form', { class: 'stack', id: 'login' },
      h('label', {}, 'User', name), h('label', {}, 'Password', pass),
      h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Sign in')), err);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      try {
        const r = await apiJson('/v1/auth/authenticate', { method: 'POST', ...jsonBody({ name: name.value, password: pass.value }) });
        session.set(r.token, name.value);
        pass.value = '';
        state.whoami = await apiJson('/v1/auth/whoami');
        renderWho();
        location.hash = state.afterLogin || '#/keys';
      } catch (e) {
        err.textContent = e.status === 401 ? 'Wrong user name or password.' : e.message;
        pass.select();
      }
    });
    show(h('h1', {}, 'Sign in'),
      h('p', { class: 'muted' }, 'Authentication is enabled on this cluster. The console acts with your own permissions.'),
      form);
    name.focus();
  }

  // ------------------------------------------------------------------ keys
  function keysHash(p) {
    const q = new URLSearchParams();
    q.set('prefix', p.prefix || '');
    if (p.start) q.set('start', p.start);
    if (p.keysOnly) q.set('keys_only', '1');
    if (p.limit && p.limit !== 50) q.set('limit', String(p.limit));
    if (p.follow) q.set('follow', '1');
    return `#/keys?${q}`;
  }
  function crumbs(prefix, params) {
    const parts = [h('a', { href: keysHash({ ...params, prefix: '', start: '' }) }, 'all keys')];
    let acc = '';
    for (const seg of prefix.split('/').slice(0, -1)) {
      acc += `${seg}/`;
      parts.push(' / ', h('a', { href: keysHash({ ...params, prefix: acc, start: '' }) }, `${seg}/`));
    }
    const rest = prefix.slice(acc.length);
    if (rest) parts.push(' / ', h('span', { class: 'mono' }, `${rest}…`));
    return h('nav', { class: 'crumbs', 'aria-label': 'Prefix' }, parts);
  }

  async function renderKeys(q) {
    markNav('keys');
    const params = {
      prefix: q.get('prefix') || '',
      start: q.get('start') || '',
      keysOnly: q.get('keys_only') === '1',
      limit: PAGE_SIZES.includes(Number(q.get('limit'))) ? Number(q.get('limit')) : 50,
      follow: q.get('follow') === '1',
    };
    if (state.pages.prefix !== params.prefix) state.pages = { prefix: params.prefix, starts: [] };
    if (!params.start) state.pages.starts = [];

    const prefixInput = h('input', { type: 'search', id: 'prefix', name: 'prefix', value: params.prefix, placeholder: 'key prefix, e.g. app/', 'aria-label': 'Key prefix', autocomplete: 'off', spellcheck: 'false' });
    const keysOnly = h('input', { type: 'checkbox', id: 'keys-only', checked: params.keysOnly });
    const limit = h('select', { id: 'page-size', 'aria-label': 'Keys per page' },
      PAGE_SIZES.map((n) => h('option', { value: n, selected: n === params.limit }, `${n} per page`)));
    const follow = h('input', { type: 'checkbox', id: 'follow', checked: params.follow });
    const form = h('form', { class: 'toolbar', role: 'search', id: 'search' },
      h('div', { class: 'grow' }, prefixInput, h('button', { class: 'primary', type: 'submit' }, 'Search')),
      h('label', {}, keysOnly, 'Keys only'), limit,
      h('label', { title: 'Update the list as keys change (watch)' }, follow, 'Follow changes'),
      h('a', { class: 'button', id: 'new-key', href: `#/new?prefix=${encKey(params.prefix)}` }, 'New key'));
    const go = (over) => { location.hash = keysHash({ ...params, ...over }); };
    form.addEventListener('submit', (ev) => { ev.preventDefault(); go({ prefix: prefixInput.value, start: '' }); });
    keysOnly.addEventListener('change', () => go({ keysOnly: keysOnly.checked }));
    limit.addEventListener('change', () => go({ limit: Number(limit.value), start: '' }));
    follow.addEventListener('change', () => go({ follow: follow.checked }));

    const counts = h('div', { class: 'counts', id: 'counts', 'aria-live': 'polite' }, 'Counting…');
    const groups = h('ul', { class: 'groups', id: 'groups', 'aria-label': 'Prefixes under this one' });
    const tbody = h('tbody', { id: 'key-rows' });
    const table = h('table', { id: 'keys' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col', class: 'num' }, 'Revision'),
        params.keysOnly ? null : h('th', { scope: 'col', class: 'hide-narrow' }, 'Value'))), tbody);
    const prev = h('button', { type: 'button', id: 'prev', disabled: !params.start }, '← Previous');
    const next = h('button', { type: 'button', id: 'next', disabled: true }, 'Next →');
    const pageInfo = h('span', { class: 'muted', id: 'page-info' });
    const live = h('p', { class: 'muted', id: 'live', 'aria-live': 'polite' });
    const errors = h('div', { id: 'errors' });
    show(h('h1', {}, 'Keys'), form, crumbs(params.prefix, params), counts, groups, errors, table,
      h('div', { class: 'pager' }, prev, pageInfo, next), live);

    let nextStart = null;
    prev.addEventListener('click', () => {
      const starts = state.pages.starts;
      starts.pop();
      go({ start: starts.length ? starts[starts.length - 1] : '' });
    });
    next.addEventListener('click', () => {
      if (nextStart === null) return;
      state.pages.starts.push(nextStart);
      go({ start: nextStart });
    });

    const signal = state.view.abort.signal;
    let pageRevision = 0;
    async function loadPage(changed = new Set()) {
      const rq = new URLSearchParams({ prefix: params.prefix, limit: String(params.limit) });
      if (params.start) rq.set('start', params.start);
      if (params.keysOnly) rq.set('keys_only', 'true');
      const cq = new URLSearchParams({ prefix: params.prefix, count_only: 'true', delimiter: '/', max_groups: '200' });
      const [page, count] = await Promise.all([
        apiJson(`/v1/kv?${rq}`, { signal }), apiJson(`/v1/kv?${cq}`, { signal })]);
      pageRevision = page.revision;
      nextStart = page.next;
      next.disabled = page.next === null;
      const first = state.pages.starts.length * params.limit;
      pageInfo.textContent = page.items.length
        ? `Page ${state.pages.starts.length + 1} · keys ${fmt(first + 1)}–${fmt(first + page.items.length)}` : '';
      tbody.replaceChildren(...page.items.map((it) => h('tr', { class: changed.has(it.key) ? 'changed' : null },
        h('td', { class: 'key' }, h('a', { href: `#/key/${encKey(it.key)}` }, it.key)),
        h('td', { class: 'num' }, fmt(it.revision)),
        params.keysOnly ? null : h('td', { class: 'preview hide-narrow' }, preview(it)))));
      if (!page.items.length) {
        tbody.replaceChildren(h('tr', {}, h('td', { colspan: 3, class: 'muted' },
          params.prefix ? `No keys start with “${params.prefix}”.` : 'The store is empty.')));
      }
      const where = params.prefix ? ` under “${params.prefix}”` : '';
      counts.textContent = `${fmt(count.count)} key${count.count === 1 ? '' : 's'}${where} · store revision ${fmt(count.revision)}`;
      groups.replaceChildren(...(count.groups || []).map((g) => h('li', {},
        h('a', { href: keysHash({ ...params, prefix: g.prefix, start: '' }) }, g.prefix, h('span', {}, ` ${fmt(g.count)}`)))));
      if (count.groups_truncated) groups.append(h('li', { class: 'muted' }, '… more'));
    }
    try {
      await loadPage();
    } catch (e) {
      if (e.name === 'AbortError') return;
      counts.textContent = '';
      table.hidden = true;
      prev.parentElement.hidden = true;
      errors.replaceChildren(errorPanel(e, `list keys${params.prefix ? ` under “${params.prefix}”` : ''}`));
      return;
    }
    if (params.follow) followPrefix(params.prefix, pageRevision + 1, loadPage, live, signal);
  }

  // Watches the prefix from `from` on; each batch of changes reloads the page (debounced) and
  // flashes the changed keys. Resumes after a dropped stream from the last revision seen.
  async function followPrefix(prefix, from, reload, live, signal) {
    let next = from;
    let pending = new Set();
    let timer = 0;
    const flush = () => {
      const changed = pending;
      pending = new Set();
      reload(changed).catch((e) => { if (e.name !== 'AbortError') live.textContent = `Reload failed: ${e.message}`; });
    };
    live.textContent = `Following changes from revision ${fmt(from)}…`;
    while (!signal.aborted) {
      try {
        const q = new URLSearchParams({ prefix, start_revision: String(next), progress_interval_ms: '10000' });
        const resp = await api(`/v1/watch?${q}`, { signal });
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const ev = JSON.parse(line);
            if (ev.type === 'put' || ev.type === 'delete') {
              pending.add(ev.key);
              next = ev.revision + 1;
              live.textContent = `Following · ${ev.type} ${ev.key} at revision ${fmt(ev.revision)}`;
              clearTimeout(timer);
              timer = setTimeout(flush, 150);
            } else if (ev.type === 'progress') {
              next = Math.max(next, ev.revision + 1);
            } else if (ev.type === 'canceled') {
              // compacted: the history it needs is gone here; show the keys as they are and
              // follow from now on. Otherwise resume exactly where the node stopped.
              if (ev.code === 'compacted') { await reload(new Set()); next = 0; } else next = ev.resume_revision || next;
              throw new Error(ev.reason || ev.code);
            }
          }
        }
      } catch (e) {
        if (signal.aborted || e.name === 'AbortError') return;
        if (e.status === 403 || e.status === 401) { live.textContent = `Cannot follow: ${e.message}`; return; }
        live.textContent = `Watch interrupted (${e.message}); resuming…`;
        if (e.status === 410) { await reload(new Set()).catch(() => {}); next = 0; }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  // ------------------------------------------------------------------ one key
  async function renderKey(key) {
    markNav('keys');
    const back = h('a', { href: keysHash({ prefix: parentPrefix(key) }), id: 'back' }, `← ${parentPrefix(key) || 'all keys'}`);
    let resp;
    try {
      resp = await api(`/v1/kv/${encKey(key)}`);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 404) {
        show(back, h('h1', { class: 'mono' }, key), h('div', { class: 'panel', id: 'not-found' },
          h('p', {}, 'This key does not exist (or was just deleted).'),
          h('a', { class: 'button', href: `#/new?key=${encKey(key)}` }, 'Create it')));
      } else {
        show(back, h('h1', { class: 'mono' }, key), errorPanel(e, 'read this key'));
      }
      return;
    }
    const bytes = new Uint8Array(await resp.arrayBuffer());
    const revision = Number(resp.headers.get('x-raftkv-revision'));
    const text = asText(bytes);
    const json = asJson(text);
    const kind = json !== null ? 'JSON' : text !== null ? 'text' : 'binary';
    const views = [];
    if (json !== null) views.push(['JSON', () => JSON.stringify(json, null, 2)]);
    if (text !== null) views.push(['Text', () => text]);
    views.push(['Hex', () => hexDump(bytes)], ['Base64', () => toBase64(bytes)]);

    const pre = h('pre', { class: 'value', id: 'value', tabindex: '0', 'aria-label': 'Value' });
    const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Show the value as' });
    const select = (i) => {
      [...tabs.children].forEach((b, j) => b.setAttribute('aria-selected', String(i === j)));
      pre.textContent = views[i][1]();
    };
    views.forEach(([name], i) => tabs.append(h('button', { type: 'button', role: 'tab', id: `view-${name.toLowerCase()}`, onclick: () => select(i) }, name)));
    tabs.addEventListener('keydown', (ev) => {
      const cur = [...tabs.children].findIndex((b) => b.getAttribute('aria-selected') === 'true');
      const step = ev.key === 'ArrowRight' ? 1 : ev.key === 'ArrowLeft' ? -1 : 0;
      if (!step) return;
      const i = (cur + step + views.length) % views.length;
      select(i);
      tabs.children[i].focus();
    });
    select(0);

    const actions = h('div', { class: 'toolbar' },
      h('button', { type: 'button', id: 'edit', class: 'primary', onclick: () => renderEditor(key, bytes, revision, text) }, 'Edit'),
      h('button', { type: 'button', id: 'delete', class: 'danger', onclick: () => confirmDelete(key, revision, actions) }, 'Delete'));
    show(back, h('h1', { class: 'mono', id: 'key-name' }, key),
      h('dl', { class: 'meta' },
        h('dt', {}, 'Revision'), h('dd', { id: 'key-revision' }, fmt(revision)),
        h('dt', {}, 'Size'), h('dd', {}, `${fmt(bytes.length)} bytes`),
        h('dt', {}, 'Type'), h('dd', { id: 'key-kind' }, kind)),
      tabs, pre, actions);
  }

  function confirmDelete(key, revision, actions) {
    const msg = h('p', { class: 'error', role: 'alert' });
    const yes = h('button', { type: 'button', class: 'danger', id: 'confirm-delete' }, 'Delete it');
    const no = h('button', { type: 'button', id: 'cancel-delete', onclick: () => renderKey(key) }, 'Cancel');
    yes.addEventListener('click', async () => {
      try {
        const r = await apiJson(`/v1/kv/${encKey(key)}?if_revision=${revision}`, { method: 'DELETE' });
        toast(r.deleted ? `Deleted ${key}` : `${key} was already gone`);
        location.hash = keysHash({ prefix: parentPrefix(key) });
      } catch (e) {
        msg.textContent = e.status === 412
          ? 'Not deleted: the key changed since you opened it. Reload to see its current value.'
          : e.message;
      }
    });
    actions.replaceChildren(h('span', {}, `Delete “${key}”? `), yes, no, msg);
    no.focus();
  }

  function valueFromEditor(textarea, encoding) {
    if (encoding.value === 'base64') return fromBase64(textarea.value);
    return new TextEncoder().encode(textarea.value);
  }
  function encodingSelect(binary) {
    return h('select', { id: 'encoding', 'aria-label': 'Value encoding' },
      h('option', { value: 'text', selected: !binary }, 'text (UTF-8)'),
      h('option', { value: 'base64', selected: binary }, 'base64 (binary)'));
  }

  function renderEditor(key, bytes, revision, text) {
    const binary = text === null;
    const area = h('textarea', { id: 'editor', 'aria-label': 'New value', spellcheck: 'false' });
    area.value = binary ? toBase64(bytes) : text;
    const encoding = encodingSelect(binary);
    const note = h('p', { class: 'muted', id: 'editor-note', 'aria-live': 'polite' });
    const wasJson = asJson(text) !== null;
    area.addEventListener('input', () => {
      note.textContent = wasJson && encoding.value === 'text' && asJson(area.value) === null ? 'Not valid JSON (it was JSON before).' : '';
    });
    const status = h('div', { id: 'editor-status' });
    const save = h('button', { type: 'submit', class: 'primary', id: 'save' }, 'Save');
    const cancel = h('button', { type: 'button', id: 'cancel', onclick: () => renderKey(key) }, 'Cancel');
    const form = h('form', { id: 'edit-form' }, h('div', { class: 'toolbar' }, encoding,
      h('span', { class: 'muted' }, `Saving checks that the key is still at revision ${fmt(revision)}.`)), area, note,
    h('div', { class: 'toolbar' }, save, cancel), status);
    form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') renderKey(key); });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let body;
      try { body = valueFromEditor(area, encoding); } catch (_) { status.replaceChildren(h('p', { class: 'error', role: 'alert' }, 'That is not valid base64.')); return; }
      try {
        const r = await apiJson(`/v1/kv/${encKey(key)}?if_revision=${revision}`, { method: 'PUT', body });
        toast(`Saved ${key} at revision ${fmt(r.revision)}`);
        renderKey(key);
      } catch (e) {
        if (e.status !== 412) { status.replaceChildren(errorPanel(e, 'save')); return; }
        await showConflict(key, revision, body, status);
      }
    });
    show(h('a', { href: `#/key/${encKey(key)}`, onclick: (ev) => { ev.preventDefault(); renderKey(key); } }, '← back to the value'),
      h('h1', { class: 'mono' }, `Edit ${key}`), form);
    area.focus();
  }

  // The key moved on since the editor opened: show what it holds now next to the draft and let
  // the user choose; overwriting is again conditional, on the revision just shown.
  async function showConflict(key, revision, draft, status) {
    let current = null, currentRev = 0;
    try {
      const r = await api(`/v1/kv/${encKey(key)}`);
      current = new Uint8Array(await r.arrayBuffer());
      currentRev = Number(r.headers.get('x-raftkv-revision'));
    } catch (e) {
      if (e.status !== 404) { status.replaceChildren(errorPanel(e, 'read the current value')); return; }
    }
    const currentText = current === null ? '(deleted)' : asText(current) ?? toBase64(current);
    const overwrite = h('button', { type: 'button', class: 'danger', id: 'overwrite' }, 'Overwrite with my version');
    overwrite.addEventListener('click', async () => {
      const cond = current === null ? 'if_absent=true' : `if_revision=${currentRev}`;
      try {
        const r = await apiJson(`/v1/kv/${encKey(key)}?${cond}`, { method: 'PUT', body: draft });
        toast(`Saved ${key} at revision ${fmt(r.revision)}`);
        renderKey(key);
      } catch (e) {
        if (e.status === 412) await showConflict(key, revision, draft, status);
        else status.replaceChildren(errorPanel(e, 'save'));
      }
    });
    status.replaceChildren(h('div', { class: 'panel warn', role: 'alert', id: 'conflict' },
      h('h2', {}, 'Not saved: this key changed since you opened it'),
      h('p', {}, current === null ? `It was deleted after revision ${fmt(revision)}.`
        : `You edited revision ${fmt(revision)}; it is now at revision ${fmt(currentRev)}.`),
      h('div', { class: 'split' },
        h('div', {}, h('h2', {}, 'Now in the store'), h('pre', { class: 'value', id: 'conflict-current' }, currentText)),
        h('div', {}, h('h2', {}, 'Your version'), h('pre', { class: 'value' }, asText(draft) ?? toBase64(draft)))),
      h('div', { class: 'toolbar' }, overwrite,
        h('button', { type: 'button', id: 'discard', onclick: () => renderKey(key) }, 'Discard my edit'))));
    overwrite.focus();
  }

  function renderNew(q) {
    markNav('keys');
    const keyInput = h('input', { type: 'text', id: 'new-key-name', required: true, spellcheck: 'false', value: q.get('key') || q.get('prefix') || '' });
    const area = h('textarea', { id: 'new-value', spellcheck: 'false' });
    const encoding = encodingSelect(false);
    const status = h('div', { id: 'new-status' });
    const form = h('form', { class: 'stack', id: 'new-form' },
      h('label', {}, 'Key', keyInput), h('label', {}, 'Value', area), h('label', {}, 'Encoding', encoding),
      h('div', { class: 'toolbar' }, h('button', { type: 'submit', class: 'primary', id: 'create' }, 'Create'),
        h('a', { href: keysHash({ prefix: q.get('prefix') || '' }) }, 'Cancel')), status);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const key = keyInput.value;
      let body;
      try { body = valueFromEditor(area, encoding); } catch (_) { status.replaceChildren(h('p', { class: 'error', role: 'alert' }, 'That is not valid base64.')); return; }
      try {
        await apiJson(`/v1/kv/${encKey(key)}?if_absent=true`, { method: 'PUT', body });
        toast(`Created ${key}`);
        location.hash = `#/key/${encKey(key)}`;
      } catch (e) {
        status.replaceChildren(e.status === 412
          ? h('p', { class: 'error', role: 'alert' }, 'A key with this name already exists: ', h('a', { href: `#/key/${encKey(key)}` }, 'open it'), '.')
          : errorPanel(e, 'create the key'));
      }
    });
    show(h('h1', {}, 'New key'), form);
    keyInput.focus();
    keyInput.setSelectionRange(keyInput.value.length, keyInput.value.length);
  }

  // ------------------------------------------------------------------ cluster
  function renderCluster() {
    markNav('cluster');
    const auto = h('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
    const updated = h('span', { class: 'muted', id: 'updated' });
    const body = h('div', { id: 'cluster-body' }, h('p', { class: 'muted' }, 'Asking every member…'));
    const refreshNow = h('button', { type: 'button', id: 'refresh' }, 'Refresh now');
    show(h('h1', {}, 'Cluster'),
      h('div', { class: 'toolbar' }, h('label', {}, auto, `Refresh every ${CLUSTER_REFRESH_MS / 1000} s`), refreshNow, updated), body);
    const signal = state.view.abort.signal;
    let timer = 0;
    const tick = async () => {
      clearTimeout(timer);
      try {
        const health = await apiJson('/v1/cluster/health', { signal });
        body.replaceChildren(...clusterView(health));
        updated.textContent = `updated ${new Date().toLocaleTimeString()} (asked via node ${health.checked_by})`;
      } catch (e) {
        if (e.name === 'AbortError') return;
        body.replaceChildren(errorPanel(e, 'read the cluster status'));
      }
      if (auto.checked && !signal.aborted) timer = setTimeout(tick, CLUSTER_REFRESH_MS);
    };
    state.view.timers.push(() => clearTimeout(timer));
    auto.addEventListener('change', () => { if (auto.checked) tick(); else clearTimeout(timer); });
    refreshNow.addEventListener('click', tick);
    tick();
  }

  function clusterView(health) {
    const members = health.members;
    const statuses = members.map((m) => m.status).filter(Boolean);
    // The leader is whoever the highest term names; its own status carries follower lag.
    const top = statuses.reduce((a, s) => (!a || s.term > a.term ? s : a), null);
    const leaderId = top && top.leader ? top.leader.id : null;
    const leaderStatus = statuses.find((s) => s.id === leaderId && s.role === 'leader');
    const lag = new Map(((leaderStatus && leaderStatus.followers) || []).map((f) => [f.id, f.lag]));
    const healthy = members.filter((m) => m.healthy && m.ready).length;
    const voters = members.filter((m) => m.voter).length;
    const leader = members.find((m) => m.id === leaderId);
    const card = (label, value, id, cls) => h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: `value ${cls || ''}`, id }, value));
    const cards = h('div', { class: 'cards' },
      card('Leader', leader ? `${leader.name || leader.id} (id ${leader.id})` : 'none', 'leader', leader ? '' : 'bad'),
      card('Term', fmt(top ? top.term : null), 'term'),
      card('Members', `${voters} voter${voters === 1 ? '' : 's'}, ${members.length - voters} learner${members.length - voters === 1 ? '' : 's'}`, 'member-count'),
      card('Healthy and ready', `${healthy} of ${members.length}`, 'healthy-count', healthy === members.length ? 'ok' : 'bad'),
      card('Store revision', fmt(top ? top.revision : null), 'revision'));
    const rows = members.map((m) => {
      const s = m.status;
      const role = s ? s.role : 'unknown';
      const badge = !m.reason && m.healthy && m.ready ? h('span', { class: 'badge ok' }, 'healthy')
        : !m.healthy && m.rtt_ms === undefined ? h('span', { class: 'badge bad' }, 'unreachable')
          : !m.healthy ? h('span', { class: 'badge bad' }, 'unhealthy')
            : h('span', { class: 'badge warn' }, 'not ready');
      return h('tr', { class: m.id === leaderId ? 'leader' : null, 'data-member': m.id },
        h('td', {}, m.name || `node ${m.id}`, m.id === leaderId ? [' ', h('span', { class: 'badge ok' }, 'leader')] : null,
          h('div', { class: 'muted mono hide-narrow' }, m.client_url || '')),
        h('td', { class: 'num' }, m.id),
        h('td', {}, `${role}${m.voter ? '' : ' (learner)'}`),
        h('td', { class: 'health' }, badge, m.reason ? h('div', { class: 'muted' }, m.reason.replace(/^unreachable: /, '')) : null),
        h('td', { class: 'num hide-narrow' }, fmt(s && s.term)),
        h('td', { class: 'num' }, fmt(s && s.applied_index)),
        h('td', { class: 'num hide-narrow' }, fmt(s && s.committed_index)),
        h('td', { class: 'num' }, m.id === leaderId ? '–' : fmt(lag.get(m.id))),
        h('td', { class: 'num hide-narrow' }, m.rtt_ms === undefined ? '–' : `${m.rtt_ms} ms`));
    });
    const table = h('table', { id: 'members' },
      h('thead', {}, h('tr', {}, ['Member', 'ID', 'Role', 'Health', 'Term', 'Applied', 'Committed', 'Lag', 'RTT'].map((t, i) =>
        h('th', { scope: 'col', class: [[1, 4, 5, 6, 7, 8].includes(i) ? 'num' : '', [4, 6, 8].includes(i) ? 'hide-narrow' : ''].join(' ').trim() || null }, t)))),
      h('tbody', {}, rows));
    const id = top && top.cluster_id ? h('p', { class: 'muted' }, 'Cluster ID ', h('code', {}, top.cluster_id)) : null;
    return [cards, table, id,
      h('p', { class: 'muted' }, 'Lag: log entries the leader has that the member has not confirmed. Each member is asked over its client URL by the node serving this page.')];
  }

  // ------------------------------------------------------------------ routing
  function route() {
    state.view.abort.abort();
    state.view.timers.forEach((stop) => stop());
    state.view = { abort: new AbortController(), timers: [] };
    const hash = location.hash || '#/keys';
    const [path, query] = hash.slice(1).split('?');
    const q = new URLSearchParams(query || '');
    if (state.authEnabled && !session.token && path !== '/login') {
      state.afterLogin = hash;
      location.hash = '#/login';
      return;
    }
    const run = () => {
      if (path === '/login') return renderLogin();
      if (path === '/cluster') return renderCluster();
      if (path === '/new') return renderNew(q);
      if (path.startsWith('/key/')) return renderKey(decodeURIComponent(path.slice(5)));
      return renderKeys(q);
    };
    Promise.resolve(run()).catch((e) => {
      if (e.name !== 'AbortError') show(errorPanel(e, 'show this page'));
    });
    main().focus({ preventScroll: true });
  }

  document.addEventListener('keydown', (ev) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (ev.key === '/' && !typing && $('#prefix')) { ev.preventDefault(); $('#prefix').focus(); }
  });

  async function boot() {
    try {
      const s = await apiJson('/v1/auth/status', { signal: new AbortController().signal });
      state.authEnabled = s.enabled;
      if (!s.enabled) session.clear();
      if (!s.enabled || session.token) state.whoami = await apiJson('/v1/auth/whoami', { signal: new AbortController().signal });
    } catch (e) {
      if (e.status !== 401) { show(errorPanel(e, 'reach the node')); return; }
    }
    renderWho();
    window.addEventListener('hashchange', route);
    route();
  }
  boot();
})();
