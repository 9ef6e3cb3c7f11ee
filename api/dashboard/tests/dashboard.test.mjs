// End-to-end test of the dashboard in headless Chromium against a real
// clawdspaced with real spaces (scripts/test-dashboard starts the daemon and
// cleans up). Environment: CLAWDSPACE_URL, CLAWDSPACE_KEY, SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium).
//
// The main flow must log no console error at all; the wrong-key and
// error-message checks run in a second browser context, where the browser's
// own "401"/"400" resource messages are expected.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.CLAWDSPACE_URL;
const KEY = process.env.CLAWDSPACE_KEY;
const SHOTS = process.env.SCREENSHOT_DIR || 'target';
const TIMEOUT = 30000;
if (!URL || !KEY) {
  console.error('set CLAWDSPACE_URL and CLAWDSPACE_KEY');
  process.exit(2);
}

const results = [];
async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}

/** Text of the terminal's screen (xterm's DOM renderer). */
const screen = (page) => page.locator('#term .xterm-rows').innerText();

async function waitScreen(page, re) {
  const end = Date.now() + TIMEOUT;
  let text = '';
  while (Date.now() < end) {
    text = await screen(page);
    if (re.test(text)) return text;
    await page.waitForTimeout(100);
  }
  throw new Error(`terminal never showed ${re}; it shows:\n${text}`);
}

async function typeInTerminal(page, line) {
  await page.locator('#term .xterm-helper-textarea').focus();
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const name = `dash-${process.pid}`;
let failed = false;
try {
  mkdirSync(SHOTS, { recursive: true });

  // ---------- main flow: no console errors allowed ----------
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  ctx.setDefaultTimeout(TIMEOUT);
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));

  await step('loads with ?key= and forgets it from the address bar', async () => {
    await page.goto(`${URL}/?key=${encodeURIComponent(KEY)}`);
    await page.locator('#sys-cpu').filter({ hasNotText: '–' }).waitFor();
    assert.equal(new globalThis.URL(page.url()).search, '');
    assert.equal(await page.evaluate(() => localStorage.getItem('clawdspace.apiKey')), KEY);
    assert.match(await page.locator('#sys-count').innerText(), /running/);
    assert.match(await page.locator('#sys-mem').innerText(), /%$/);
  });

  await step('keyboard: Tab reaches "New space", Enter opens it on Name, Escape returns focus', async () => {
    await page.locator('body').focus();
    await page.keyboard.press('Tab'); // the skip link
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'New space');
    await page.keyboard.press('Enter');
    await page.locator('#dlg-create').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.id), 'create-name');
    await page.keyboard.press('Escape');
    await page.locator('#dlg-create').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'New space');
  });

  await step('creates a space through the dialog and sees it running', async () => {
    await page.getByRole('button', { name: 'New space' }).click();
    const dlg = page.locator('#dlg-create');
    await dlg.getByLabel('Name').fill(name);
    await dlg.getByLabel('Memory').fill('256m');
    await dlg.getByLabel('Network').selectOption('none');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await page.locator('#dlg-create').waitFor({ state: 'hidden' });
    const row = page.locator(`tr[data-space="${name}"]`);
    await row.locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    assert.equal(await row.locator('[data-col=memory]').innerText(), '256 MiB');
    // Live per-space figures arrive with the next poll.
    await row.locator('[data-col=memUse] .num').filter({ hasText: 'MiB' }).waitFor();
    assert.match(await row.locator('[data-col=cpuUse] .num').innerText(), /%$/);
    // The dialog's network choice reached the API.
    const r = await fetch(`${URL}/api/spaces/${name}`, { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal((await r.json()).space.network, 'none');
  });

  await step('templates: lists the defaults, saves one, a space is created from it, deleted', async () => {
    const tname = `dash-tpl-${process.pid}`;
    const auth = { Authorization: `Bearer ${KEY}` };
    await page.getByRole('button', { name: 'Templates', exact: true }).click();
    const dlg = page.locator('#dlg-templates');
    await dlg.locator('tr[data-template="default"]').waitFor();
    for (const n of ['gpu', 'lan', 'offline']) {
      assert.equal(await dlg.locator(`tr[data-template="${n}"]`).count(), 1, n);
    }
    await dlg.getByRole('button', { name: 'Edit template offline' }).click();
    await page.locator('#templates-editing').filter({ hasText: 'editing offline' }).waitFor();
    assert.match(await page.locator('#templates-yaml').inputValue(), /mode: none/);
    await dlg.getByRole('button', { name: 'New', exact: true }).click();
    await page.locator('#templates-yaml').fill(
      `name: ${tname}\ndescription: from the dashboard\nresources:\n  memory: 300\n  cpus: 0.5\nnetwork:\n  mode: none\n`);
    await dlg.getByRole('button', { name: 'Save' }).click();
    await dlg.locator(`tr[data-template="${tname}"]`).waitFor();
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
    // The create dialog offers it; memory and CPUs are then the template's.
    await page.getByRole('button', { name: 'New space' }).click();
    const c = page.locator('#dlg-create');
    await c.getByLabel('Name').fill(`${name}-t`);
    await page.locator(`#create-template option[value="${tname}"]`).waitFor({ state: 'attached' });
    await c.getByLabel('Template', { exact: true }).selectOption(tname);
    assert.equal(await c.getByLabel('Memory').inputValue(), '');
    await c.getByRole('button', { name: 'Create' }).click();
    await c.waitFor({ state: 'hidden' });
    const row = page.locator(`tr[data-space="${name}-t"]`);
    await row.locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    assert.equal(await row.locator('[data-col=memory]').innerText(), '300 MiB');
    assert.equal(await row.locator('[data-col=cpus]').innerText(), '0.5');
    const r = await fetch(`${URL}/api/spaces/${name}-t`, { headers: auth });
    assert.equal((await r.json()).space.network, 'none');
    await fetch(`${URL}/api/spaces/${name}-t`, { method: 'DELETE', headers: auth });
    await row.waitFor({ state: 'detached' });
    // Delete asks once more on the same button.
    await page.getByRole('button', { name: 'Templates', exact: true }).click();
    const del = dlg.getByRole('button', { name: `Delete template ${tname}` });
    await del.click();
    await del.click();
    await dlg.locator(`tr[data-template="${tname}"]`).waitFor({ state: 'detached' });
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
  });

  await step('runs echo hello and reads hello, exit code 0; Escape closes', async () => {
    const run = page.getByRole('button', { name: `Run a command in ${name}` });
    await run.click();
    await page.locator('#dlg-exec').getByLabel(/^Command/).fill('echo hello; echo oops >&2');
    await page.locator('#exec-submit').click();
    await page.locator('#exec-result').waitFor();
    assert.equal(await page.locator('#exec-stdout').innerText(), 'hello');
    assert.equal(await page.locator('#exec-stderr').innerText(), 'oops');
    assert.equal(await page.locator('#exec-code').innerText(), '0');
    await page.keyboard.press('Escape');
    await page.locator('#dlg-exec').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')),
      `Run a command in ${name}`);
  });

  await step('ports: a public link to a server in the space opens without the key', async () => {
    const r = await fetch(`${URL}/api/spaces/${name}/exec`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ command: 'mkdir -p $HOME/www && echo hello-preview > $HOME/www/index.html && httpd -p 127.0.0.1:8000 -h $HOME/www' }),
    });
    assert.equal((await r.json()).exitCode, 0);
    await page.getByRole('button', { name: `Ports of ${name}` }).click();
    const dlg = page.locator('#dlg-ports');
    await dlg.getByLabel('Port').fill('8000');
    await dlg.getByLabel('Public link (24 h)').check();
    await dlg.getByRole('button', { name: 'Get link' }).click();
    const link = page.locator('#ports-link');
    await link.waitFor();
    const href = await link.getAttribute('href');
    assert.match(href, /\/p\/[0-9a-f]{48}\/$/);
    await page.locator('#ports-list li').first().waitFor();
    // Opened in a fresh context: no key anywhere.
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await p2.goto(href);
    assert.equal((await p2.locator('body').innerText()).trim(), 'hello-preview');
    await other.close();
    await dlg.getByRole('button', { name: 'Revoke the links to port 8000' }).click();
    await page.locator('#ports-none').waitFor({ state: 'visible' });
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
  });

  await step('files: upload by picker and by drop, view, download, delete', async () => {
    await page.getByRole('button', { name: `Files of ${name}` }).click();
    const dlg = page.locator('#dlg-files');
    await dlg.waitFor();
    assert.equal(await page.locator('#files-cwd').innerText(), '/workspace');
    const text = 'hello from the browser\n';
    await page.locator('#files-upload').setInputFiles(
      { name: 'hello.txt', mimeType: 'text/plain', buffer: Buffer.from(text) });
    await dlg.locator('tr[data-file="hello.txt"]').waitFor();
    // Drag and drop.
    const dt = await page.evaluateHandle(() => {
      const t = new DataTransfer();
      t.items.add(new File(['dropped bytes'], 'drop.txt', { type: 'text/plain' }));
      return t;
    });
    await page.dispatchEvent('#files-drop', 'drop', { dataTransfer: dt });
    await dlg.locator('tr[data-file="drop.txt"]').waitFor();
    // The space has them, owned by its user.
    const r = await fetch(`${URL}/api/spaces/${name}/fs?path=/workspace/drop.txt`,
      { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(await r.text(), 'dropped bytes');
    const st = await (await fetch(`${URL}/api/spaces/${name}/fs/stat?path=/workspace/hello.txt`,
      { headers: { Authorization: `Bearer ${KEY}` } })).json();
    assert.equal(st.uid, 1000);
    await page.getByRole('button', { name: 'View hello.txt' }).click();
    await page.locator('#files-view-text').filter({ hasText: 'hello from the browser' }).waitFor();
    await page.screenshot({ path: join(SHOTS, 'dashboard-files.png') });
    const [dl] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download hello.txt' }).click(),
    ]);
    assert.equal(dl.suggestedFilename(), 'hello.txt');
    const { readFile } = await import('node:fs/promises');
    assert.equal(await readFile(await dl.path(), 'utf8'), text);
    // Delete asks once more on the same button.
    const del = page.getByRole('button', { name: 'Delete drop.txt' });
    await del.click();
    assert.equal(await dlg.locator('tr[data-file="drop.txt"]').count(), 1);
    await del.click();
    await dlg.locator('tr[data-file="drop.txt"]').waitFor({ state: 'detached' });
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
  });

  await step('web terminal: typed input is echoed, the shell answers, resize reaches the PTY', async () => {
    await page.getByRole('button', { name: `Open a terminal in ${name}` }).click();
    await page.locator('#term-status').filter({ hasText: 'connected' }).waitFor();
    await page.locator('#term .xterm-rows').waitFor();
    await typeInTerminal(page, 'echo typed-$((6*7))');
    await waitScreen(page, /echo typed-\$\(\(6\*7\)\)/); // the echo of what was typed
    await waitScreen(page, /^typed-42$/m); // the shell's answer
    await typeInTerminal(page, 'stty size');
    const before = (await waitScreen(page, /^\d+ \d+$/m)).match(/^(\d+) (\d+)$/m);
    await page.setViewportSize({ width: 900, height: 600 });
    await page.waitForTimeout(300);
    await typeInTerminal(page, 'clear; stty size');
    const end = Date.now() + TIMEOUT;
    let after = before;
    while (Date.now() < end) {
      const m = (await screen(page)).match(/^(\d+) (\d+)$/m);
      if (m && m[0] !== before[0]) { after = m; break; }
      await page.waitForTimeout(100);
    }
    assert.notEqual(after[0], before[0], `terminal size did not change from ${before[0]}`);
    assert.ok(Number(after[2]) < Number(before[2]), `columns ${before[2]} -> ${after[2]}`);
    await page.screenshot({ path: join(SHOTS, 'dashboard-terminal.png') });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.locator('#dlg-term').getByRole('button', { name: 'Close' }).click();
    await page.locator('#dlg-term').waitFor({ state: 'hidden' });
  });

  await step('screenshots of the main view (desktop and phone width)', async () => {
    // A few polls, so that the charts have lines.
    await page.waitForTimeout(4500);
    await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
    await page.setViewportSize({ width: 375, height: 780 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 375, `page is ${overflow} px wide at 375 px`);
    await page.getByRole('button', { name: `Pause ${name}` }).waitFor();
    await page.screenshot({ path: join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await step('details: live figures, workspace disk and size, busiest processes, shell history', async () => {
    const r = await fetch(`${URL}/api/spaces/${name}/exec`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        command: "printf 'ls -la\\nmake test-details\\n' > /workspace/.bash_history && head -c 3145728 /dev/urandom > /workspace/blob",
      }),
    });
    assert.equal(r.status, 200, await r.text());
    await page.getByRole('button', { name: `Details of ${name}` }).click();
    const dlg = page.locator('#dlg-details');
    await dlg.waitFor();
    assert.equal(await page.locator('#details-title').innerText(), `Details of ${name}`);
    await dlg.locator('#details-figures dd').first().waitFor();
    const figs = await dlg.locator('#details-figures').innerText();
    assert.match(figs, /Memory\s+[\d.]+ (KiB|MiB) of 256 MiB/);
    assert.match(figs, /Processes\s+\d+/);
    // 3 MiB of random data plus the history file, counted as du does.
    await dlg.locator('#details-size').filter({ hasText: /Files in \/workspace: 3\.\d MiB/ }).waitFor();
    assert.match(await dlg.locator('#details-disk').innerText(), /used of .* free/);
    // The space's init is pid 1 in its own namespace.
    await dlg.locator('#details-top tr[data-pid="1"]').waitFor();
    await dlg.locator('#details-history').filter({ hasText: 'make test-details' }).waitFor();
    assert.ok(await page.locator('#details-history-empty').isHidden());
    await page.screenshot({ path: join(SHOTS, 'dashboard-details.png') });
    // It refreshes itself while open.
    const before = await page.locator('#details-status').innerText();
    await page.locator('#details-status').filter({ hasNotText: before }).waitFor();
    // On to this space's audit events.
    await dlg.getByRole('button', { name: 'Audit log of this space' }).click();
    await dlg.waitFor({ state: 'hidden' });
    const audit = page.locator('#dlg-audit');
    await audit.waitFor();
    assert.equal(await audit.getByLabel('Space').inputValue(), name);
    await audit.locator('tr[data-type="space.exec"]').first().waitFor();
    await page.keyboard.press('Escape');
    await audit.waitFor({ state: 'hidden' });
  });

  await step('pause shows paused, resume shows running', async () => {
    const status = page.locator(`tr[data-space="${name}"] [data-col=status]`);
    await page.getByRole('button', { name: `Pause ${name}` }).click();
    await status.filter({ hasText: 'paused' }).waitFor();
    await page.getByRole('button', { name: `Resume ${name}` }).click();
    await status.filter({ hasText: 'running' }).waitFor();
  });

  await step('the audit log lists this session\'s actions, newest first, filtered by space', async () => {
    await page.getByRole('button', { name: 'Audit log' }).click();
    const dlg = page.locator('#dlg-audit');
    await dlg.waitFor();
    await dlg.getByLabel('Space').fill(name);
    await dlg.getByRole('button', { name: 'Show' }).click();
    // The list opened unfiltered: wait for the filtered one to replace it.
    await page.waitForFunction((space) => {
      const trs = [...document.querySelectorAll('#audit-body tr')];
      return trs.some((tr) => tr.dataset.type === 'space.start')
        && trs.every((tr) => tr.children[1]?.textContent === space);
    }, name);
    const rows = dlg.locator('#audit-body tr');
    // Shell history lines (the details step wrote some) come in on their
    // own schedule: left out here.
    const types = (await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.type)))
      .filter((t) => t !== 'space.shell');
    // Newest first: resume, pause, …, create last.
    assert.equal(types[0], 'space.start');
    assert.equal(types[1], 'space.pause');
    assert.equal(types.at(-1), 'space.create');
    for (const t of ['space.exec', 'space.file.write', 'port.publish', 'port.revoke']) {
      assert.ok(types.includes(t), `${t} in ${types}`);
    }
    const spaces = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[1].textContent));
    assert.ok(spaces.every((s) => s === name), spaces.join());
    const echo = dlg.locator('tr[data-type="space.exec"]').filter({ hasText: 'echo hello; echo oops' });
    assert.match(await echo.locator('.audit-details').innerText(), /echo hello; echo oops >&2 → exit 0 · \d+ ms/);
    await page.screenshot({ path: join(SHOTS, 'dashboard-audit.png') });
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
  });

  await step('destroy asks first, then the space disappears', async () => {
    await page.getByRole('button', { name: `Destroy ${name}` }).click();
    const dlg = page.locator('#dlg-destroy');
    await dlg.waitFor();
    assert.equal(await page.locator('#destroy-name').innerText(), name);
    // Cancel keeps it.
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    await dlg.waitFor({ state: 'hidden' });
    assert.equal(await page.locator(`tr[data-space="${name}"]`).count(), 1);
    await page.getByRole('button', { name: `Destroy ${name}` }).click();
    await dlg.getByRole('button', { name: 'Destroy' }).click();
    await page.locator(`tr[data-space="${name}"]`).waitFor({ state: 'detached' });
    await page.locator('#spaces-empty').waitFor();
  });

  await step('no console errors in the main flow', async () => {
    assert.deepEqual(errors, []);
  });
  await ctx.close();

  // ---------- error paths ----------
  const ctx2 = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  ctx2.setDefaultTimeout(TIMEOUT);
  const page2 = await ctx2.newPage();
  const pageErrors = [];
  page2.on('pageerror', (e) => pageErrors.push(e.message));

  await step('a wrong key shows a clear error, the right one fixes it', async () => {
    await page2.goto(`${URL}/?key=wrong-key`);
    await page2.locator('#banner').filter({ hasText: 'Wrong API key' }).waitFor();
    await page2.locator('#key-error').filter({ hasText: '401' }).waitFor();
    assert.ok(await page2.locator('#dlg-key').isVisible());
    await page2.locator('#dlg-key').getByLabel('Key', { exact: true }).fill(KEY);
    await page2.getByRole('button', { name: 'Save' }).click();
    await page2.locator('#banner').waitFor({ state: 'hidden' });
    await page2.locator('#sys-cpu').filter({ hasNotText: '–' }).waitFor();
  });

  await step('network policy: blocked ranges and allowed domains reach the API; a bad one shows its error', async () => {
    const pname = `${name}-pol`;
    const auth = { Authorization: `Bearer ${KEY}` };
    await page2.getByRole('button', { name: 'New space' }).click();
    const dlg = page2.locator('#dlg-create');
    await dlg.getByLabel('Name').fill(pname);
    await dlg.getByLabel('Memory').fill('128m');
    await dlg.getByLabel('Network').selectOption('lan');
    await dlg.getByLabel(/^Blocked ranges/).fill('not-a-cidr');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await page2.locator('#create-error').filter({ hasText: 'blockCidrs' }).waitFor();
    await dlg.getByLabel(/^Blocked ranges/).fill('203.0.113.0/24, 198.51.100.7');
    await dlg.getByLabel(/^Allowed domains/).fill('pypi.org, *.github.com');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await dlg.waitFor({ state: 'hidden' });
    const sp = (await (await fetch(`${URL}/api/spaces/${pname}`, { headers: auth })).json()).space;
    assert.equal(sp.network, 'lan');
    assert.deepEqual(sp.blockCidrs, ['203.0.113.0/24', '198.51.100.7/32']);
    assert.deepEqual(sp.allowDomains, ['pypi.org', '*.github.com']);
    const d = await fetch(`${URL}/api/spaces/${pname}`, { method: 'DELETE', headers: auth });
    assert.equal(d.status, 200);
    // The fields start empty again.
    await page2.getByRole('button', { name: 'New space' }).click();
    await dlg.waitFor();
    assert.equal(await dlg.getByLabel(/^Blocked ranges/).inputValue(), '');
    assert.equal(await dlg.getByLabel(/^Allowed domains/).inputValue(), '');
    await page2.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
  });

  await step('the create dialog shows name validation and the API\'s error text', async () => {
    await page2.getByRole('button', { name: 'New space' }).click();
    const dlg = page2.locator('#dlg-create');
    await dlg.getByLabel('Name').fill('bad name!');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await page2.locator('#create-error').filter({ hasText: 'Invalid name (alphanumeric, _, - only)' }).waitFor();
    await dlg.getByLabel('Name').fill(`${name}-x`);
    await dlg.getByLabel('Memory').fill('1k');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await page2.locator('#create-error').filter({ hasText: 'Invalid memory: at least 6 MiB' }).waitFor();
    await page2.keyboard.press('Escape');
    await page2.locator('#dlg-create').waitFor({ state: 'hidden' });
    assert.deepEqual(pageErrors, []);
  });

  await step('the templates dialog shows the API\'s YAML and schema errors', async () => {
    await page2.getByRole('button', { name: 'Templates', exact: true }).click();
    const dlg = page2.locator('#dlg-templates');
    await dlg.locator('tr[data-template="default"]').waitFor();
    await page2.locator('#templates-yaml').fill('name: [unclosed');
    await dlg.getByRole('button', { name: 'Save' }).click();
    await page2.locator('#templates-error').filter({ hasText: 'Invalid YAML' }).waitFor();
    await page2.locator('#templates-yaml').fill('name: x\nresources:\n  cpus: 65\n');
    await dlg.getByRole('button', { name: 'Save' }).click();
    await page2.locator('#templates-error')
      .filter({ hasText: 'resources.cpus: Number must be less than or equal to 64' }).waitFor();
    await page2.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
    assert.deepEqual(pageErrors, []);
  });
  await ctx2.close();
} catch {
  failed = true;
} finally {
  await browser.close();
}
const passed = results.filter(([, ok]) => ok).length;
console.log(`dashboard: ${passed} passed, ${results.length - passed} failed${failed ? ' (stopped at the first failure)' : ''}`);
process.exit(failed ? 1 : 0);
