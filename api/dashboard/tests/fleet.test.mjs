// The dashboard of one node working the whole fleet, in headless Chromium
// against three real daemons (scripts/test-dashboard starts them on
// 127.0.0.1-3 and cleans up). Environment: FLEET_URLS and FLEET_PIDS
// (space-separated, node1 first), CLAWDSPACE_KEY, CHROMIUM.
//
// The page is node1's; node2 and node3 are reached through node1's relay.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const URLS = (process.env.FLEET_URLS || '').split(' ').filter(Boolean);
const PIDS = (process.env.FLEET_PIDS || '').split(' ').filter(Boolean).map(Number);
const KEY = process.env.CLAWDSPACE_KEY;
const TIMEOUT = 30000;
if (URLS.length !== 3 || PIDS.length !== 3 || !KEY) {
  console.error('set FLEET_URLS, FLEET_PIDS (three each) and CLAWDSPACE_KEY');
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

/** A space's JSON straight from a node (not through the dashboard). */
async function spaceOn(i, name) {
  const r = await fetch(`${URLS[i]}/api/spaces/${name}`, { headers: { Authorization: `Bearer ${KEY}` } });
  return r.status === 200 ? (await r.json()).space : null;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const tag = `fl${process.pid}`;
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(TIMEOUT);
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  const row = (node, name) => page.locator(`#spaces-body tr[data-node="${node}"][data-space="${name}"]`);
  const nodeRow = (node) => page.locator(`#nodes-body tr[data-node="${node}"]`);

  await step('fleet: the nodes panel lists all three nodes online', async () => {
    await page.goto(`${URLS[0]}/?key=${encodeURIComponent(KEY)}`);
    await page.locator('#nodes').waitFor();
    for (const n of ['node1', 'node2', 'node3']) {
      await nodeRow(n).locator('[data-col=status]').filter({ hasText: 'online' }).waitFor();
    }
    assert.match(await nodeRow('node1').locator('[data-col=name]').innerText(), /this server/);
    assert.match(await nodeRow('node3').locator('[data-col=memory]').innerText(), /iB$/);
  });

  await step('fleet: create on a chosen node, listed with its node', async () => {
    await page.getByRole('button', { name: 'New space' }).click();
    const dlg = page.locator('#dlg-create');
    await dlg.getByLabel('Node').selectOption('node3');
    await dlg.getByLabel('Name').fill(`${tag}-a`);
    await dlg.getByLabel('Memory').fill('128m');
    await dlg.getByLabel('Network').selectOption('none');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await dlg.waitFor({ state: 'hidden' });
    await row('node3', `${tag}-a`).locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    assert.equal(await row('node3', `${tag}-a`).locator('[data-col=node]').innerText(), 'node3');
    assert.equal((await spaceOn(2, `${tag}-a`))?.status, 'running');
    assert.equal(await spaceOn(0, `${tag}-a`), null);
  });

  await step('fleet: run a command on another node', async () => {
    await page.getByRole('button', { name: `Run a command in ${tag}-a on node3` }).click();
    await page.locator('#dlg-exec').getByLabel(/^Command/).fill('echo hello-from-$(hostname)');
    await page.locator('#exec-submit').click();
    await page.locator('#exec-result').waitFor();
    assert.equal(await page.locator('#exec-stdout').innerText(), `hello-from-${tag}-a`);
    await page.keyboard.press('Escape');
    await page.locator('#dlg-exec').waitFor({ state: 'hidden' });
  });

  await step('fleet: a terminal on another node', async () => {
    await page.getByRole('button', { name: `Open a terminal in ${tag}-a on node3` }).click();
    await page.locator('#term-status').filter({ hasText: 'connected' }).waitFor();
    await page.locator('#term .xterm-helper-textarea').focus();
    await page.keyboard.type('echo fleet-$((6*7))');
    await page.keyboard.press('Enter');
    const end = Date.now() + TIMEOUT;
    let text = '';
    while (Date.now() < end && !/^fleet-42$/m.test(text)) {
      text = await page.locator('#term .xterm-rows').innerText();
      await page.waitForTimeout(100);
    }
    assert.match(text, /^fleet-42$/m);
    await page.locator('#dlg-term').getByRole('button', { name: 'Close' }).click();
    await page.locator('#dlg-term').waitFor({ state: 'hidden' });
  });

  await step('fleet: automatic placement creates where the server says, and says why', async () => {
    await page.getByRole('button', { name: 'New space' }).click();
    const dlg = page.locator('#dlg-create');
    assert.equal(await dlg.getByLabel('Node').inputValue(), '');
    await dlg.getByLabel('Name').fill(`${tag}-b`);
    await dlg.getByLabel('Memory').fill('128m');
    await dlg.getByLabel('Network').selectOption('none');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await dlg.waitFor({ state: 'hidden' });
    await page.locator('#banner').filter({ hasText: 'Auto-selected server' }).waitFor();
    const placed = page.locator(`#spaces-body tr[data-space="${tag}-b"]`);
    await placed.locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    const node = await placed.getAttribute('data-node');
    assert.ok(['node1', 'node2', 'node3'].includes(node), node);
    assert.match(await page.locator('#banner').innerText(), new RegExp(`server ${node}`));
  });

  await step('fleet: the node filter shows one node\'s spaces', async () => {
    await page.locator('#node-filter').selectOption('node3');
    await page.locator(`#spaces-body tr[data-node]:not([data-node="node3"])`).first()
      .waitFor({ state: 'detached' });
    assert.equal(await row('node3', `${tag}-a`).count(), 1);
    await page.locator('#node-filter').selectOption('');
    await page.locator(`#spaces-body tr[data-space="${tag}-b"]`).waitFor();
  });

  await step('fleet: pause and destroy on another node', async () => {
    await page.getByRole('button', { name: `Pause ${tag}-a on node3` }).click();
    await row('node3', `${tag}-a`).locator('[data-col=status]').filter({ hasText: 'paused' }).waitFor();
    assert.equal((await spaceOn(2, `${tag}-a`))?.status, 'paused');
    await page.getByRole('button', { name: `Destroy ${tag}-a on node3` }).click();
    await page.locator('#dlg-destroy').getByRole('button', { name: 'Destroy' }).click();
    await row('node3', `${tag}-a`).waitFor({ state: 'detached' });
    assert.equal(await spaceOn(2, `${tag}-a`), null);
  });

  await step('fleet: no console errors while every node is up', async () => {
    assert.deepEqual(errors, []);
  });

  await step('fleet: a stopped node shows offline, its spaces greyed, the page keeps working', async () => {
    const made = await fetch(`${URLS[1]}/api/spaces`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: `${tag}-c`, memory: '64m', network: 'none' }),
    });
    assert.equal(made.status, 201);
    await row('node2', `${tag}-c`).locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    process.kill(PIDS[1], 'SIGTERM');
    await nodeRow('node2').locator('[data-col=status]').filter({ hasText: 'offline' }).waitFor();
    const stale = row('node2', `${tag}-c`);
    await page.waitForFunction((sel) => document.querySelector(sel)?.classList.contains('stale'),
      `#spaces-body tr[data-node="node2"][data-space="${tag}-c"]`);
    assert.ok(await stale.getByRole('button', { name: `Destroy ${tag}-c on node2` }).isDisabled());
    // The rest still works: a new space on node1 appears.
    await page.getByRole('button', { name: 'New space' }).click();
    const dlg = page.locator('#dlg-create');
    await dlg.getByLabel('Node').selectOption('node1');
    await dlg.getByLabel('Name').fill(`${tag}-d`);
    await dlg.getByLabel('Memory').fill('64m');
    await dlg.getByLabel('Network').selectOption('none');
    await dlg.getByRole('button', { name: 'Create' }).click();
    await dlg.waitFor({ state: 'hidden' });
    await row('node1', `${tag}-d`).locator('[data-col=status]').filter({ hasText: 'running' }).waitFor();
    assert.equal(await page.locator('#banner.error:not([hidden])').count(), 0);
    assert.equal(await stale.count(), 1, 'the offline node\'s space is still listed');
  });
  await ctx.close();
} catch {
  failed = true;
} finally {
  await browser.close();
}
const passed = results.filter(([, ok]) => ok).length;
console.log(`dashboard: ${passed} passed, ${results.length - passed} failed${failed ? ' (stopped at the first failure)' : ''}`);
process.exit(failed ? 1 : 0);
