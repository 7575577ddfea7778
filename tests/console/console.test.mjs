// The web console in a real browser: Playwright (playwright-core) drives Debian's Chromium
// against a real 3-node kvnode cluster on loopback. Each test does what a user does and
// checks the result both on the page and through the HTTP API. Screenshots of the main pages
// go to $RAFTKV_CONSOLE_SHOTS (default docs/console/), which docs/console.md shows.
//
// Run with tests/console/run.sh (installs what is missing, builds nothing: it needs kvnode in
// $RAFTKV_BIN_DIR or $CARGO_TARGET_DIR/debug).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const BIN_DIR = process.env.RAFTKV_BIN_DIR
  || path.join(process.env.CARGO_TARGET_DIR || path.join(process.env.HOME, '.cache/raftkv/target'), 'debug');
const KVNODE = path.join(BIN_DIR, 'kvnode');
const CHROMIUM = process.env.RAFTKV_CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.RAFTKV_CONSOLE_SHOTS || path.join(REPO, 'docs/console');
const UI_WAIT = 15000;

const ITEMS = 1200; // app/items/0000 .. 1199: 24 pages of 50
const ROOT_PW = 'root-pw-for-console-test';
const ALICE_PW = 'alice-pw-for-console-test';

let dir;
const nodes = []; // {id, client, peer, proc}
let browser;

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = UI_WAIT) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { if (await fn()) return; } catch (e) { last = e; }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// The HTTP API, as a second client beside the browser.
let token = null;
async function http(method, p, body, node = nodes[0]) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload = body;
  if (body !== undefined && !(body instanceof Uint8Array) && typeof body !== 'string') {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const r = await fetch(`${node.client}${p}`, { method, headers, body: payload });
  const buf = new Uint8Array(await r.arrayBuffer());
  return { status: r.status, bytes: buf, text: new TextDecoder().decode(buf), headers: r.headers };
}
async function ok(method, p, body) {
  const r = await http(method, p, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${p}: ${r.status} ${r.text}`);
  return r.text ? JSON.parse(r.text) : null;
}
const kv = (key) => `/v1/kv/${encodeURIComponent(key)}`;

async function startNode(n) {
  const log = openSync(path.join(dir, `node${n.id}.log`), 'a');
  n.proc = spawn(KVNODE, ['--id', String(n.id), '--name', `node${n.id}`, '--data-dir', path.join(dir, `node${n.id}`),
    '--client-addr', `127.0.0.1:${n.clientPort}`, '--peer-addr', `127.0.0.1:${n.peerPort}`],
  { stdio: ['ignore', log, log] });
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

async function newPage(viewport = { width: 1280, height: 800 }) {
  const ctx = await browser.newContext({ viewport, colorScheme: 'light', locale: 'en-US' });
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  return page;
}
// Closes the page's context; a script error on the page fails the test.
async function done(page) {
  await page.context().close();
  assert.deepEqual(page.errors, [], 'errors in the page');
}
const ui = (hash = '') => `${nodes[0].client}/ui/${hash}`;

before(async () => {
  readFileSync(KVNODE); // a clear error when it was not built
  dir = mkdtempSync(path.join(tmpdir(), 'raftkv-console-'));
  for (const id of [1, 2, 3]) {
    const n = { id, clientPort: await freePort(), peerPort: await freePort() };
    n.client = `http://127.0.0.1:${n.clientPort}`;
    n.peer = `http://127.0.0.1:${n.peerPort}`;
    nodes.push(n);
    await startNode(n);
  }
  for (const n of nodes) await until(`node ${n.id} /healthz`, async () => (await http('GET', '/healthz', undefined, n)).status === 200, 30000);
  const members = Object.fromEntries(nodes.map((n) => [String(n.id), { peer_url: n.peer, client_url: n.client, name: `node${n.id}` }]));
  await ok('POST', '/v1/cluster/init', { members });
  for (const n of nodes) await until(`node ${n.id} /readyz`, async () => (await http('GET', '/readyz', undefined, n)).status === 200, 30000);

  // Data: 1200 items in transactions of 100, a JSON document, a binary value, keys elsewhere.
  for (let i = 0; i < ITEMS; i += 100) {
    const success = [];
    for (let j = i; j < i + 100; j++) success.push({ op: 'put', key: `app/items/${String(j).padStart(4, '0')}`, value: `item ${j}` });
    await ok('POST', '/v1/txn', { compare: [], success, failure: [] });
  }
  await ok('PUT', kv('app/config.json'), JSON.stringify({ replicas: 3, features: { console: true }, owner: 'platform' }));
  await ok('PUT', kv('app/blob.bin'), new Uint8Array([0, 1, 2, 0xff, 0xfe, 0x41, 0x42, 0x43]));
  await ok('PUT', kv('other/greeting'), 'hello');
  await ok('PUT', kv('other/to-delete'), 'bye');
  await ok('PUT', kv('secret/token'), 's3cr3t');

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // This machine has no network beyond loopback: keep Chromium from trying.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const n of nodes) if (n.proc && n.proc.exitCode === null) n.proc.kill('SIGKILL');
  if (dir && !process.env.RAFTKV_KEEP) rmSync(dir, { recursive: true, force: true });
});

test('search by prefix, groups with counts, and paging', async () => {
  const page = await newPage();
  await page.goto(ui('#/keys'));
  await page.locator('#counts').filter({ hasText: 'keys' }).waitFor();
  // Every key, and the "folders" below the root with their counts.
  assert.match(await page.locator('#counts').innerText(), new RegExp(`^${(ITEMS + 5).toLocaleString('en-US')} keys`));
  assert.deepEqual(await page.locator('#groups a').allInnerTexts(),
    [`app/ ${(ITEMS + 2).toLocaleString('en-US')}`, 'other/ 2', 'secret/ 1']);
  await shot(page, 'keys');

  await page.fill('#prefix', 'app/items/');
  await page.press('#prefix', 'Enter');
  await page.locator('#counts').filter({ hasText: 'under “app/items/”' }).waitFor();
  assert.match(await page.locator('#counts').innerText(), /^1,200 keys under “app\/items\/”/);
  const keys = () => page.locator('#key-rows td.key').allInnerTexts();
  assert.equal((await keys()).length, 50);
  assert.equal((await keys())[0], 'app/items/0000');
  assert.equal(await page.locator('#page-info').innerText(), 'Page 1 · keys 1–50');

  await page.click('#next');
  await page.locator('#page-info').filter({ hasText: 'Page 2' }).waitFor();
  assert.equal((await keys())[0], 'app/items/0050');
  await page.click('#next');
  await page.locator('#page-info').filter({ hasText: 'Page 3' }).waitFor();
  assert.equal((await keys())[0], 'app/items/0100');
  await page.click('#prev');
  await page.locator('#page-info').filter({ hasText: 'Page 2' }).waitFor();
  assert.equal((await keys())[0], 'app/items/0050');

  // Keys only: no value column; a bigger page.
  await page.click('#keys-only');
  await page.locator('#keys th').filter({ hasText: 'Value' }).waitFor({ state: 'detached' });
  await page.selectOption('#page-size', '500');
  await page.locator('#page-info').filter({ hasText: 'keys 1–500' }).waitFor();

  // The breadcrumb goes back up; the keyboard reaches the search box and a key.
  await page.click('nav.crumbs a:text-is("app/")');
  await page.locator('#counts').filter({ hasText: 'under “app/”' }).waitFor();
  await page.locator('body').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'prefix');
  await done(page);
});

test('a phone-width window shows the key list without the value column', async () => {
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(ui('#/keys?prefix=app%2F'));
  await page.locator('#key-rows td.key').first().waitFor();
  assert.equal(await page.locator('#keys th.hide-narrow').isVisible(), false);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
  await shot(page, 'keys-phone');
  await done(page);
});

test('a binary value opens as hex and base64, a JSON value pretty-printed', async () => {
  const page = await newPage();
  await page.goto(ui('#/keys?prefix=app%2F'));
  await page.click('#key-rows a:text-is("app/blob.bin")');
  await page.locator('#key-kind').filter({ hasText: 'binary' }).waitFor();
  assert.equal(await page.locator('#view-hex').getAttribute('aria-selected'), 'true');
  assert.match(await page.locator('#value').innerText(), /^00000000 {2}00 01 02 ff fe 41 42 43 +\.\.\.\.\.ABC$/);
  await page.click('#view-base64');
  assert.equal(await page.locator('#value').innerText(), 'AAEC//5BQkM=');
  assert.equal(await page.locator('#view-text').count(), 0, 'no text view for bytes that are not UTF-8');

  await page.goto(ui(`#/key/${encodeURIComponent('app/config.json')}`));
  await page.locator('#key-kind').filter({ hasText: 'JSON' }).waitFor();
  const rev = (await http('GET', kv('app/config.json'))).headers.get('x-raftkv-revision');
  assert.equal(await page.locator('#key-revision').innerText(), Number(rev).toLocaleString('en-US'));
  assert.equal(await page.locator('#value').innerText(), JSON.stringify({ replicas: 3, features: { console: true }, owner: 'platform' }, null, 2));
  await shot(page, 'value-json');
  await done(page);
});

test('an edit of a value that changed meanwhile is refused, shown, and can overwrite', async () => {
  const page = await newPage();
  await page.goto(ui(`#/key/${encodeURIComponent('other/greeting')}`));
  await page.locator('#key-kind').filter({ hasText: 'text' }).waitFor();
  await page.click('#edit');
  await page.fill('#editor', 'hello from the console');
  // Another client writes first.
  const other = await ok('PUT', kv('other/greeting'), 'hello from someone else');
  await page.click('#save');
  await page.locator('#conflict').waitFor();
  assert.match(await page.locator('#conflict').innerText(), new RegExp(`it is now at revision ${other.revision.toLocaleString('en-US')}`));
  assert.equal(await page.locator('#conflict-current').innerText(), 'hello from someone else');
  assert.equal((await http('GET', kv('other/greeting'))).text, 'hello from someone else', 'the conflicting save wrote nothing');
  await shot(page, 'edit-conflict');

  await page.click('#overwrite');
  await page.locator('#value').filter({ hasText: 'hello from the console' }).waitFor();
  const now = await http('GET', kv('other/greeting'));
  assert.equal(now.text, 'hello from the console');
  assert.ok(Number(now.headers.get('x-raftkv-revision')) > other.revision);

  // Without a conflict a save just works, and the page shows the new revision.
  await page.click('#edit');
  await page.fill('#editor', 'second edit');
  await page.click('#save');
  await page.locator('#value').filter({ hasText: 'second edit' }).waitFor();
  assert.equal((await http('GET', kv('other/greeting'))).text, 'second edit');
  await done(page);
});

test('create and delete a key', async () => {
  const page = await newPage();
  await page.goto(ui('#/keys?prefix=other%2F'));
  await page.click('#new-key');
  await page.fill('#new-key-name', 'other/created');
  await page.fill('#new-value', '{"made": "in the console"}');
  await page.click('#create');
  await page.locator('#key-kind').filter({ hasText: 'JSON' }).waitFor();
  assert.equal((await http('GET', kv('other/created'))).text, '{"made": "in the console"}');
  // Creating it again is refused: it exists.
  await page.goto(ui('#/new?prefix=other%2F'));
  await page.fill('#new-key-name', 'other/created');
  await page.fill('#new-value', 'again');
  await page.click('#create');
  await page.locator('#new-status').filter({ hasText: 'already exists' }).waitFor();
  assert.equal((await http('GET', kv('other/created'))).text, '{"made": "in the console"}');

  await page.goto(ui(`#/key/${encodeURIComponent('other/to-delete')}`));
  await page.click('#delete');
  await page.click('#confirm-delete');
  await page.locator('#counts').filter({ hasText: 'under “other/”' }).waitFor();
  assert.equal((await http('GET', kv('other/to-delete'))).status, 404);
  assert.deepEqual(await page.locator('#key-rows td.key').allInnerTexts(), ['other/created', 'other/greeting']);
  await done(page);
});

test('follow: the list updates as keys change', async () => {
  const page = await newPage();
  await page.goto(ui('#/keys?prefix=live%2F&follow=1'));
  await page.locator('#live').filter({ hasText: 'Following' }).waitFor();
  await ok('PUT', kv('live/a'), 'first');
  await page.locator('#key-rows td.key a:text-is("live/a")').waitFor();
  await page.locator('#counts').filter({ hasText: /^1 key under/ }).waitFor();
  await ok('PUT', kv('live/b'), 'second');
  await ok('DELETE', kv('live/a'));
  await page.locator('#key-rows td.key a:text-is("live/a")').waitFor({ state: 'detached' });
  assert.deepEqual(await page.locator('#key-rows td.key').allInnerTexts(), ['live/b']);
  await done(page);
});

test('the cluster page shows every member, and a killed node turns unreachable', async () => {
  const page = await newPage();
  await page.goto(ui('#/cluster'));
  await page.locator('#healthy-count').filter({ hasText: '3 of 3' }).waitFor();
  const leaderName = await page.locator('#leader').innerText();
  const status = await ok('GET', '/v1/cluster/status');
  assert.equal(leaderName, `${status.leader.name} (id ${status.leader.id})`);
  assert.equal(await page.locator('#members tbody tr').count(), 3);
  for (const id of [1, 2, 3]) {
    assert.match(await page.locator(`#members tr[data-member="${id}"] td.health`).innerText(), /healthy/);
  }
  await shot(page, 'cluster');

  // Kill a node the page is not served by; the page refreshes by itself.
  const victim = nodes[2];
  victim.proc.kill('SIGKILL');
  await page.locator(`#members tr[data-member="${victim.id}"] td.health`).filter({ hasText: 'unreachable' }).waitFor();
  await page.locator('#healthy-count').filter({ hasText: '2 of 3' }).waitFor();
  await shot(page, 'cluster-node-down');

  // Back: it rejoins and the page says so.
  await startNode(victim);
  await page.locator('#healthy-count').filter({ hasText: '3 of 3' }).waitFor({ timeout: 30000 });
  await done(page);
});

test('with auth enabled: login, own permissions only, logout', async () => {
  await ok('POST', '/v1/auth/users', { name: 'root', password: ROOT_PW, roles: ['root'] });
  await ok('POST', '/v1/auth/roles', { name: 'app-reader' });
  await ok('POST', '/v1/auth/roles/app-reader/permissions', { permission: 'read', key: 'app/', prefix: true });
  await ok('POST', '/v1/auth/users', { name: 'alice', password: ALICE_PW, roles: ['app-reader'] });
  await ok('POST', '/v1/auth/enable');
  const login = await ok('POST', '/v1/auth/authenticate', { name: 'root', password: ROOT_PW });
  token = login.token;

  const page = await newPage();
  await page.goto(ui('#/keys'));
  await page.locator('#login').waitFor();
  await shot(page, 'login');
  await page.fill('#login-name', 'alice');
  await page.fill('#login-password', 'wrong');
  await page.click('#login button[type=submit]');
  await page.locator('#login-error').filter({ hasText: 'Wrong user name or password' }).waitFor();

  await page.fill('#login-name', 'alice');
  await page.fill('#login-password', ALICE_PW);
  await page.click('#login button[type=submit]');
  await page.locator('#who-name').filter({ hasText: 'alice' }).waitFor();
  // Every key is more than alice may read: refused, with what she may read instead.
  await page.locator('#denied').waitFor();
  assert.equal(await page.locator('#keys').isVisible(), false);
  assert.equal(await page.locator('text=secret/').count(), 0, 'nothing of keys she cannot read');
  assert.deepEqual(await page.locator('#readable a').allInnerTexts(), ['app/…']);
  await shot(page, 'permission-denied');
  await page.click('#readable a');
  await page.locator('#counts').filter({ hasText: `${(ITEMS + 2).toLocaleString('en-US')} keys under “app/”` }).waitFor();

  // Reading is allowed, writing is not: the save is refused and nothing changes.
  await page.goto(ui(`#/key/${encodeURIComponent('app/config.json')}`));
  await page.locator('#key-kind').filter({ hasText: 'JSON' }).waitFor();
  const before = (await http('GET', kv('app/config.json'))).text;
  await page.click('#edit');
  await page.fill('#editor', '{"replicas": 5}');
  await page.click('#save');
  await page.locator('#editor-status').filter({ hasText: 'Not allowed' }).waitFor();
  assert.equal((await http('GET', kv('app/config.json'))).text, before);
  // A key outside her grant, opened directly.
  await page.goto(ui(`#/key/${encodeURIComponent('secret/token')}`));
  await page.locator('#denied').waitFor();
  assert.equal(await page.locator('text=s3cr3t').count(), 0);

  // The token is in this tab's sessionStorage, nowhere else (no cookie, no localStorage).
  const stored = await page.evaluate(() => ({
    session: sessionStorage.getItem('raftkv.token'), local: localStorage.length, cookie: document.cookie,
  }));
  assert.ok(stored.session && stored.session.split('.').length === 3);
  assert.equal(stored.local, 0);
  assert.equal(stored.cookie, '');

  await page.click('#logout');
  await page.locator('#login').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('raftkv.token')), null);
  // Signed out, a key page asks for the login again.
  await page.goto(ui(`#/key/${encodeURIComponent('app/config.json')}`));
  await page.locator('#login').waitFor();

  // root sees everything, the cluster page included.
  await page.fill('#login-name', 'root');
  await page.fill('#login-password', ROOT_PW);
  await page.click('#login button[type=submit]');
  await page.locator('#key-kind').filter({ hasText: 'JSON' }).waitFor();
  await page.goto(ui('#/keys?prefix=secret%2F'));
  await page.locator('#key-rows td.key a:text-is("secret/token")').waitFor();
  await page.goto(ui('#/cluster'));
  await page.locator('#healthy-count').filter({ hasText: '3 of 3' }).waitFor({ timeout: 30000 });
  await done(page);
});
