// The dashboard: polls the API every 2 s, keeps a few minutes of history for
// the charts, and drives the dialogs (key, create, exec, destroy, terminal).

import { api, ApiError, adoptKeyFromUrl, getKey, portLink, setKey, setSelfNode } from './api.mjs';
import { Series, draw } from './charts.mjs';
import * as fmt from './format.mjs';
import { MISSING_TEXT, openTerminal, terminalAvailable } from './terminal.mjs';
import { initFiles, openFiles } from './files.mjs';
import { initAudit, openAudit } from './audit.mjs';
import { initDetails, openDetails } from './details.mjs';

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const HISTORY = 150; // 5 minutes of 2 s samples
const ROW_HISTORY = 30; // 1 minute per space
const NAME_RE = /^[a-zA-Z0-9_-]{1,63}$/;

const hist = {
  cpu: new Series(HISTORY),
  mem: new Series(HISTORY),
  running: new Series(HISTORY),
};
const state = {
  spaces: [], // every node's, each with its `node`
  stats: new Map(), // key -> stats
  cpuHist: new Map(), // key -> Series of cpuPercent
  rows: new Map(), // key -> <tr>
  nodes: [], // /api/nodes: this server first
  self: '',
  lastSpaces: new Map(), // node -> its spaces when it last answered
  filter: '', // a node name, or '' for all
  caps: null,
  cpus: 1,
  authFailed: false,
  askedKey: false,
  keyless: false, // the server asks for no key (CLAWDSPACE_AUTH_DISABLED)
  timer: null,
  inFlight: false,
  again: false,
};

// ---------- banner and dialogs ----------

function banner(text, kind = 'error') {
  const b = $('banner');
  if (!text) {
    b.hidden = true;
    b.textContent = '';
    return;
  }
  b.className = `banner ${kind}`;
  b.textContent = text;
  b.hidden = false;
}

function showError(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

function openDialog(dlg, focus) {
  dlg.opener = document.activeElement;
  if (!dlg.open) dlg.showModal();
  (focus || dlg.querySelector('input, button:not([data-close])'))?.focus();
}

for (const dlg of document.querySelectorAll('dialog')) {
  dlg.addEventListener('close', () => {
    const o = dlg.opener;
    if (o && o.isConnected && o !== document.body) o.focus();
    else $('spaces-heading').focus();
  });
  for (const b of dlg.querySelectorAll('[data-close]')) {
    b.addEventListener('click', () => dlg.close());
  }
}

// ---------- the key ----------

const KEY_HELP = 'Enter the API key of this server.';

function askKey(message) {
  showError($('key-error'), message);
  $('key-input').value = '';
  openDialog($('dlg-key'), $('key-input'));
}

$('form-key').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const k = $('key-input').value.trim();
  if (!k) {
    showError($('key-error'), 'The key cannot be empty.');
    return;
  }
  setKey(k);
  state.authFailed = false;
  state.caps = null;
  banner('');
  $('dlg-key').close();
  refreshNow();
});
$('btn-key').addEventListener('click', () => askKey(''));

function handleError(e) {
  if (e instanceof ApiError && e.status === 401) {
    if (!state.authFailed) {
      state.authFailed = true;
      const text = 'Wrong API key: the server refused it (401 Unauthorized). Enter the right key.';
      banner(text);
      askKey(text);
    }
    return true;
  }
  return false;
}

// ---------- system panel ----------

function renderSystem(sys) {
  const [l1, l5, l15] = sys.loadAverage;
  state.cpus = sys.cpus;
  $('host').textContent =
    `${sys.hostname} · ${sys.platform}/${sys.arch} · up ${sys.uptime} · ${sys.docker.version}`;
  $('sys-cpu').textContent = l1.toFixed(2);
  $('sys-cpu-detail').textContent =
    `load on ${sys.cpus} CPU${sys.cpus === 1 ? '' : 's'} · 5 min ${l5.toFixed(2)} · 15 min ${l15.toFixed(2)}`;
  hist.cpu.push(l1);
  const memPct = fmt.percent(sys.memory.percentage) ?? 0;
  $('sys-mem').textContent = sys.memory.percentage;
  $('sys-mem-detail').textContent = `${sys.memory.used} of ${sys.memory.total} used`;
  hist.mem.push(memPct);
  if (sys.disk) {
    $('sys-disk').textContent = sys.disk.percentage;
    $('sys-disk-detail').textContent =
      `${sys.disk.used} of ${sys.disk.total} used · ${sys.disk.available} free`;
    $('sys-disk-bar').style.width = `${fmt.percent(sys.disk.percentage) ?? 0}%`;
  } else {
    $('sys-disk').textContent = 'unknown';
    $('sys-disk-detail').textContent = '';
  }
  const d = sys.docker;
  const stopped = Math.max(0, d.containers - d.containersRunning - d.containersPaused);
  $('sys-count').textContent = `${d.containersRunning} running`;
  $('sys-count-detail').textContent =
    `${d.containersPaused} paused · ${stopped} stopped · ${d.containers} total · ${d.images} image${d.images === 1 ? '' : 's'}`;
  hist.running.push(d.containersRunning);
  drawCharts();
}

function drawCharts() {
  draw($('chart-cpu'), hist.cpu, Math.max(state.cpus, ...hist.cpu.values));
  draw($('chart-mem'), hist.mem, 100);
  draw($('chart-count'), hist.running, Math.max(4, ...hist.running.values));
  for (const [name, tr] of state.rows) {
    const s = state.cpuHist.get(name);
    if (s) draw(tr.querySelector('canvas'), s, Math.max(100, ...s.values));
  }
}

function renderCaps(caps) {
  state.caps = caps;
  if (caps.gpu) {
    $('sys-gpu').textContent = caps.gpuCount > 1 ? `${caps.gpuCount} × ${caps.gpuName}` : caps.gpuName;
    $('sys-gpu-detail').textContent = [caps.gpuMemory, caps.driverVersion && `driver ${caps.driverVersion}`,
      caps.cudaVersion && `CUDA ${caps.cudaVersion}`,
      caps.gpuRuntime ? `via ${caps.gpuRuntime}` : 'no GPU runtime (see docs)'].filter(Boolean).join(' · ');
  } else {
    $('sys-gpu').textContent = 'None';
    $('sys-gpu-detail').textContent = 'No NVIDIA GPU on this server';
  }
  $('create-gpu-row').hidden = !caps.gpu || !caps.gpuRuntime;
}

// ---------- nodes ----------

/** Whether this dashboard shows a fleet (more than this server). */
const fleet = () => state.nodes.length > 1;

/** A space's key in the maps: node and name. */
const keyOf = (node, name) => `${node}/${name}`;

/** `Pause dev`, or `Pause dev on gpu-box` when there are several nodes. */
const label = (verb, s) => `${verb} ${s.name}${fleet() ? ` on ${s.node}` : ''}`;

function renderNodes() {
  const nodes = state.nodes;
  $('nodes').hidden = !fleet();
  $('spaces-table').classList.toggle('fleet', fleet());
  const body = $('nodes-body');
  body.replaceChildren();
  for (const n of nodes) {
    const tr = document.createElement('tr');
    tr.dataset.node = n.name;
    const cells = [
      n.name + (n.source === 'self' ? ' (this server)' : ''),
      n.status,
      n.latencyMs === undefined ? '–' : `${n.latencyMs} ms`,
      n.memoryFree === undefined ? '–' : fmt.bytes(n.memoryFree),
      n.spacesRunning === undefined ? '–' : String(n.spacesRunning),
      n.gpusAvailable ? String(n.gpusAvailable) : n.status === 'online' ? '0' : '–',
      n.error || '',
    ];
    const cols = ['name', 'status', 'latency', 'memory', 'running', 'gpus', 'note'];
    cells.forEach((text, i) => {
      const el = document.createElement(i === 0 ? 'th' : 'td');
      if (i === 0) el.scope = 'row';
      el.dataset.col = cols[i];
      el.dataset.label = $('nodes-table').tHead.rows[0].cells[i].textContent;
      if (cols[i] === 'status') {
        const b = document.createElement('span');
        b.className = `status status-${n.status === 'online' ? 'running' : 'stopped'}`;
        b.textContent = n.status;
        el.append(b);
      } else {
        el.textContent = text;
      }
      tr.append(el);
    });
    body.append(tr);
  }
  // The node filter and the create dialog's node choice.
  const filter = $('node-filter');
  const keep = filter.value;
  filter.replaceChildren(new Option('All nodes', ''));
  for (const n of nodes) filter.append(new Option(`${n.name}${n.status === 'online' ? '' : ' (offline)'}`, n.name));
  filter.value = nodes.some((n) => n.name === keep) ? keep : '';
  state.filter = filter.value;
  $('create-node-row').hidden = !fleet();
  $('create-gpu-row').hidden = !(state.caps?.gpu && state.caps?.gpuRuntime)
    && !nodes.some((n) => n.status === 'online' && n.gpusAvailable > 0);
}

$('node-filter').addEventListener('change', () => {
  state.filter = $('node-filter').value;
  renderSpaces(state.spaces);
});

/** Every node's spaces: live from the online ones, last known (stale) from the others. */
async function loadSpaces() {
  const nodes = state.nodes;
  const results = await Promise.allSettled(
    nodes.map((n) => (n.status === 'online' || n.source === 'self'
      ? api.spaces(n.name)
      : Promise.reject(new Error('offline')))),
  );
  const all = [];
  results.forEach((r, i) => {
    const n = nodes[i];
    if (r.status === 'fulfilled') {
      state.lastSpaces.set(n.name, r.value);
      for (const s of r.value) all.push({ ...s, node: n.name, stale: false });
    } else {
      // This server's own failure is the page's error (a wrong key, say).
      if (n.source === 'self') throw r.reason;
      for (const s of state.lastSpaces.get(n.name) || []) all.push({ ...s, node: n.name, stale: true });
    }
  });
  return all;
}

// ---------- spaces table ----------

const COLUMNS = ['name', 'node', 'status', 'image', 'memory', 'cpus', 'uptime', 'activity', 'cpuUse', 'memUse', 'actions'];
const LABELS = ['Name', 'Node', 'Status', 'Image', 'Memory', 'CPUs', 'Uptime', 'Last activity', 'CPU use', 'Memory use', ''];

function button(text, label, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.setAttribute('aria-label', label);
  if (cls) b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function buildRow(s) {
  const tr = document.createElement('tr');
  tr.dataset.space = s.name;
  tr.dataset.node = s.node;
  COLUMNS.forEach((c, i) => {
    const el = document.createElement(i === 0 ? 'th' : 'td');
    if (i === 0) el.scope = 'row';
    el.dataset.col = c;
    if (LABELS[i]) el.dataset.label = LABELS[i];
    tr.append(el);
  });
  const cpu = tr.querySelector('[data-col=cpuUse]');
  cpu.innerHTML = '<span class="cell"><span class="num"></span><canvas class="spark" aria-hidden="true"></canvas></span>';
  const mem = tr.querySelector('[data-col=memUse]');
  mem.innerHTML = '<span class="cell"><span class="num"></span><span class="meter small" aria-hidden="true"><span></span></span></span>';
  const actions = document.createElement('div');
  actions.className = 'actions';
  tr.querySelector('[data-col=actions]').append(actions);
  const { node, name } = s;
  // The name opens the space's details.
  tr.querySelector('[data-col=name]').append(
    button(name, label('Details of', s), () => openDetails(node, name), 'link details'),
  );
  actions.append(
    button('Run', label('Run a command in', s), () => openExec(node, name), 'run'),
    button('Terminal', label('Open a terminal in', s), () => openTerm(node, name), 'term'),
    button('Files', label('Files of', s), () => openFiles(node, name), 'files'),
    button('Ports', label('Ports of', s), () => openPorts(node, name), 'ports'),
    button('Pause', label('Pause', s), (ev) => toggle(node, name, ev.currentTarget), 'toggle'),
    button('Destroy', label('Destroy', s), () => askDestroy(node, name), 'danger'),
  );
  return tr;
}

function setText(tr, col, text) {
  const el = tr.querySelector(`[data-col=${col}]`);
  if (el.textContent !== text) el.textContent = text;
}

function updateRow(tr, s, now) {
  const nameBtn = tr.querySelector('button.details');
  if (nameBtn.textContent !== s.name) nameBtn.textContent = s.name;
  nameBtn.disabled = s.stale;
  setText(tr, 'node', s.node);
  tr.classList.toggle('stale', s.stale);
  tr.title = s.stale ? `${s.node} is offline: last known state` : '';
  for (const b of tr.querySelectorAll('.actions button')) b.disabled = s.stale;
  tr.querySelector('button.details').setAttribute('aria-label', label('Details of', s));
  tr.querySelector('button.run').setAttribute('aria-label', label('Run a command in', s));
  tr.querySelector('button.term').setAttribute('aria-label', label('Open a terminal in', s));
  tr.querySelector('button.files').setAttribute('aria-label', label('Files of', s));
  tr.querySelector('button.ports').setAttribute('aria-label', label('Ports of', s));
  tr.querySelector('button.danger').setAttribute('aria-label', label('Destroy', s));
  const st = tr.querySelector('[data-col=status]');
  if (st.dataset.status !== s.status) {
    st.dataset.status = s.status;
    st.innerHTML = '';
    const badge = document.createElement('span');
    badge.className = `status status-${s.status}`;
    badge.textContent = s.status;
    st.append(badge);
  }
  setText(tr, 'image', s.image);
  setText(tr, 'memory', fmt.bytes(s.memory));
  setText(tr, 'cpus', String(s.cpus));
  setText(tr, 'uptime', s.status === 'stopped' ? '–' : fmt.duration((now - Date.parse(s.started)) / 1000));
  setText(tr, 'activity', fmt.ago(s.lastActivity, now));
  const stats = state.stats.get(keyOf(s.node, s.name));
  const live = stats && s.status !== 'stopped' && !s.stale;
  tr.querySelector('[data-col=cpuUse] .num').textContent = live ? `${stats.cpuPercent.toFixed(1)}%` : '–';
  tr.querySelector('[data-col=memUse] .num').textContent = live
    ? `${fmt.bytes(stats.memoryUsageBytes)} / ${fmt.bytes(stats.memoryLimitBytes)}`
    : '–';
  const pct = live && stats.memoryLimitBytes ? (100 * stats.memoryUsageBytes) / stats.memoryLimitBytes : 0;
  tr.querySelector('[data-col=memUse] .meter span').style.width = `${Math.min(100, pct)}%`;
  const t = tr.querySelector('button.toggle');
  const [text, verb] = s.status === 'running' ? ['Pause', 'Pause'] : s.status === 'paused' ? ['Resume', 'Resume'] : ['Start', 'Start'];
  if (t.textContent !== text || t.getAttribute('aria-label') !== label(verb, s)) {
    t.textContent = text;
    t.setAttribute('aria-label', label(verb, s));
  }
}

function renderSpaces(spaces) {
  state.spaces = spaces;
  const now = Date.now();
  const body = $('spaces-body');
  const seen = new Set();
  let prev = null;
  const shown = spaces.filter((s) => !state.filter || s.node === state.filter);
  for (const s of shown) {
    const key = keyOf(s.node, s.name);
    seen.add(key);
    let tr = state.rows.get(key);
    if (!tr) {
      tr = buildRow(s);
      state.rows.set(key, tr);
    }
    updateRow(tr, s, now);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    prev = tr;
  }
  for (const [key, tr] of state.rows) {
    if (seen.has(key)) continue;
    const hadFocus = tr.contains(document.activeElement);
    tr.remove();
    state.rows.delete(key);
    state.stats.delete(key);
    state.cpuHist.delete(key);
    if (hadFocus) $('spaces-heading').focus();
  }
  $('spaces-empty').hidden = shown.length > 0;
  $('spaces-table').hidden = shown.length === 0;
}

async function loadStats(spaces) {
  const live = spaces.filter((s) => s.status !== 'stopped' && !s.stale);
  const results = await Promise.allSettled(live.map((s) => api.stats(s.node, s.name)));
  results.forEach((r, i) => {
    const name = keyOf(live[i].node, live[i].name);
    if (r.status !== 'fulfilled') return;
    state.stats.set(name, r.value);
    let s = state.cpuHist.get(name);
    if (!s) {
      s = new Series(ROW_HISTORY);
      state.cpuHist.set(name, s);
    }
    s.push(r.value.cpuPercent);
  });
}

// ---------- polling ----------

async function refresh() {
  if (state.authFailed) return;
  if (!getKey() && !state.keyless) {
    // A server with authentication disabled (loopback only) needs none.
    try {
      await api.nodes();
      state.keyless = true;
    } catch {
      // It needs one.
    }
  }
  if (!getKey() && !state.keyless) {
    banner('No API key yet. ' + KEY_HELP, 'info');
    if (!state.askedKey) {
      state.askedKey = true;
      askKey(KEY_HELP);
    }
    return;
  }
  try {
    const doc = await api.nodes();
    state.nodes = doc.nodes;
    state.self = doc.nodes[0]?.name || '';
    setSelfNode(state.self);
    const [spaces, sys] = await Promise.all([loadSpaces(), api.system()]);
    if (!state.caps) renderCaps(await api.capabilities());
    renderNodes();
    await loadStats(spaces);
    renderSpaces(spaces);
    renderSystem(sys);
    if (!$('banner').classList.contains('action')) banner('');
  } catch (e) {
    if (!handleError(e)) banner(e.message);
  }
}

async function tick() {
  clearTimeout(state.timer);
  // A hidden tab does not poll; it catches up when shown again.
  if (document.visibilityState === 'hidden') return;
  if (state.inFlight) {
    state.again = true;
    return;
  }
  state.inFlight = true;
  try {
    await refresh();
  } finally {
    state.inFlight = false;
  }
  if (state.again) {
    state.again = false;
    tick();
    return;
  }
  state.timer = setTimeout(tick, POLL_MS);
}

function refreshNow() {
  tick();
}

// ---------- actions ----------

async function toggle(node, name, btn) {
  const s = state.spaces.find((x) => x.node === node && x.name === name);
  if (!s) return;
  btn.disabled = true;
  try {
    if (s.status === 'running') await api.stop(node, name);
    else await api.start(node, name);
    banner('');
  } catch (e) {
    if (!handleError(e)) actionError(`${name}: ${e.message}`);
  } finally {
    btn.disabled = false;
    refreshNow();
  }
}

/** A banner that the next polls leave alone for 8 s. */
function sticky(text, kind = 'error') {
  banner(text, kind);
  $('banner').classList.add('action');
  setTimeout(() => $('banner').classList.remove('action'), 8000);
}

function actionError(text) {
  sticky(text);
}

/** Runs a dialog's action with its submit button busy; errors go to `errorEl`. */
async function submitting(btn, busyText, errorEl, action) {
  const text = btn.textContent;
  btn.disabled = true;
  btn.textContent = busyText;
  showError(errorEl, '');
  try {
    await action();
  } catch (e) {
    if (!handleError(e)) showError(errorEl, e.message);
  } finally {
    btn.disabled = false;
    btn.textContent = text;
  }
}

// Create
$('btn-create').addEventListener('click', () => {
  $('form-create').reset();
  const sel = $('create-node');
  sel.replaceChildren(new Option('Automatic (placement)', ''));
  for (const n of state.nodes) {
    if (n.status === 'online') sel.append(new Option(n.name, n.name));
  }
  showError($('create-error'), '');
  $('create-name').removeAttribute('aria-invalid');
  applyTemplateChoice();
  openDialog($('dlg-create'), $('create-name'));
  loadTemplateChoices();
});

/** Fills the create dialog's template list from the chosen node (or this server). */
async function loadTemplateChoices() {
  const sel = $('create-template');
  const keep = sel.value;
  try {
    const list = await api.templates((fleet() && $('create-node').value) || state.self);
    sel.replaceChildren(new Option('None', ''));
    for (const t of list) sel.append(new Option(t.description ? `${t.name} — ${t.description}` : t.name, t.name));
    sel.value = list.some((t) => t.name === keep) ? keep : '';
  } catch (e) {
    if (!handleError(e)) showError($('create-error'), `Templates: ${e.message}`);
  }
  applyTemplateChoice();
}

/**
 * With a template, what is left empty is the template's: memory, CPUs and
 * network start empty; without one, the server's defaults are shown.
 */
function applyTemplateChoice() {
  const withTemplate = $('create-template').value !== '';
  const wasTemplate = $('create-network-template').hidden === false;
  if (withTemplate === wasTemplate) return;
  $('create-network-template').hidden = !withTemplate;
  $('create-memory').value = withTemplate ? '' : '2g';
  $('create-cpus').value = withTemplate ? '' : '1';
  $('create-memory').placeholder = withTemplate ? "template's" : '';
  $('create-cpus').placeholder = withTemplate ? "template's" : '';
  $('create-network').value = withTemplate ? '' : 'internet';
}
$('create-template').addEventListener('change', applyTemplateChoice);
$('create-node').addEventListener('change', loadTemplateChoices);

$('form-create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('create-name').value.trim();
  if (!NAME_RE.test(name)) {
    showError($('create-error'), 'Invalid name (alphanumeric, _, - only)');
    $('create-name').setAttribute('aria-invalid', 'true');
    $('create-name').focus();
    return;
  }
  $('create-name').removeAttribute('aria-invalid');
  const body = { name };
  const image = $('create-image').value.trim();
  if (image) body.image = image;
  const memory = $('create-memory').value.trim();
  if (memory) body.memory = memory;
  const cpus = $('create-cpus').value.trim();
  if (cpus) body.cpus = Number.isNaN(Number(cpus)) ? cpus : Number(cpus);
  const network = $('create-network').value;
  if (network) body.network = network;
  // A policy: the network as an object (the server checks every entry).
  const list = (id) => $(id).value.split(',').map((x) => x.trim()).filter(Boolean);
  const blockCidrs = list('create-block');
  const allowDomains = list('create-allow');
  if (blockCidrs.length || allowDomains.length) {
    body.network = { mode: network || 'internet' };
    if (blockCidrs.length) body.network.blockCidrs = blockCidrs;
    if (allowDomains.length) body.network.allowDomains = allowDomains;
  }
  const template = $('create-template').value;
  if (template) body.template = template;
  if ($('create-gpu').checked) body.gpu = true;
  await submitting($('create-submit'), 'Creating…', $('create-error'), async () => {
    // One placement rule for the fleet: the server's (GET /api/nodes/placement).
    let node = fleet() ? $('create-node').value : state.self;
    let reason = '';
    if (!node) {
      const p = await api.placement(body.gpu ? 1 : 0);
      node = p.node;
      reason = p.reason;
    }
    await api.create(node, body);
    $('dlg-create').close();
    if (reason) sticky(`${name}: ${reason}`, 'info');
    refreshNow();
  });
});

// Templates (this server's)
const TEMPLATE_SKELETON = `name: my-template
description: What it is for
resources:
  memory: 2g
  cpus: 1
network:
  mode: internet
`;

async function listTemplates() {
  const body = $('templates-body');
  const list = await api.templates(state.self);
  body.replaceChildren();
  for (const t of list) {
    const tr = document.createElement('tr');
    tr.dataset.template = t.name;
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = t.name;
    const desc = document.createElement('td');
    desc.textContent = t.description;
    const actions = document.createElement('td');
    actions.append(
      button('Edit', `Edit template ${t.name}`, () => editTemplate(t.name)),
      button('Delete', `Delete template ${t.name}`, (ev) => deleteTemplate(t.name, ev.currentTarget), 'danger'),
    );
    tr.append(th, desc, actions);
    body.append(tr);
  }
}

function templateError(e) {
  if (!handleError(e)) showError($('templates-error'), e.message);
}

async function editTemplate(name) {
  showError($('templates-error'), '');
  try {
    $('templates-yaml').value = await api.template(state.self, name);
    $('templates-editing').textContent = `(editing ${name})`;
    $('templates-yaml').focus();
  } catch (e) {
    templateError(e);
  }
}

async function deleteTemplate(name, btn) {
  // A second press on the same button deletes.
  if (btn.dataset.confirm !== 'yes') {
    btn.dataset.confirm = 'yes';
    btn.textContent = 'Really delete?';
    return;
  }
  showError($('templates-error'), '');
  try {
    await api.deleteTemplate(state.self, name);
    await listTemplates();
  } catch (e) {
    templateError(e);
  }
}

$('btn-templates').addEventListener('click', async () => {
  showError($('templates-error'), '');
  $('templates-yaml').value = TEMPLATE_SKELETON;
  $('templates-editing').textContent = '(new)';
  openDialog($('dlg-templates'), $('templates-yaml'));
  try {
    await listTemplates();
  } catch (e) {
    templateError(e);
  }
});

$('templates-new').addEventListener('click', () => {
  $('templates-yaml').value = TEMPLATE_SKELETON;
  $('templates-editing').textContent = '(new)';
  $('templates-yaml').focus();
});

$('form-templates').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  await submitting($('templates-save'), 'Saving…', $('templates-error'), async () => {
    const t = await api.saveTemplate(state.self, $('templates-yaml').value);
    $('templates-editing').textContent = `(saved ${t.name})`;
    await listTemplates();
  });
});

// Files
initFiles({ openDialog, showError });

// Audit log
initAudit({
  openDialog,
  showError,
  handleError,
  nodes: () => (state.nodes.length ? state.nodes.map((n) => n.name) : [state.self]),
  spaces: () => state.spaces,
});
$('btn-audit').addEventListener('click', () => openAudit(state.filter || state.self, ''));

// Details (observability) of a space
initDetails({
  openDialog,
  showError,
  handleError,
  title: (verb, node, name) => label(verb, { node, name }),
  openAudit,
});

// Exec
let execSpace = null;
function openExec(node, name) {
  execSpace = { node, name };
  $('exec-title').textContent = `Run a command in ${name}${fleet() ? ` on ${node}` : ''}`;
  showError($('exec-error'), '');
  $('exec-result').hidden = true;
  openDialog($('dlg-exec'), $('exec-command'));
}

$('form-exec').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const command = $('exec-command').value;
  if (!command.trim()) {
    showError($('exec-error'), 'Command required');
    return;
  }
  await submitting($('exec-submit'), 'Running…', $('exec-error'), async () => {
    const r = await api.exec(execSpace.node, execSpace.name, command);
    $('exec-code').textContent = String(r.exitCode);
    $('exec-flags').textContent = [r.timedOut && ' (timed out)', r.truncated && ' (output truncated)']
      .filter(Boolean).join('');
    $('exec-stdout').textContent = r.stdout;
    $('exec-stderr').textContent = r.stderr;
    $('exec-result').hidden = false;
  });
});

// Ports
let portsSpace = null;
async function listPreviews() {
  const { node, name } = portsSpace;
  const list = $('ports-list');
  list.replaceChildren();
  const previews = await api.previews(node, name);
  $('ports-none').hidden = previews.length > 0;
  for (const p of previews) {
    const li = document.createElement('li');
    li.textContent = `Port ${p.port} · link ${p.id} · expires ${new Date(p.expiresAt).toLocaleString()} `;
    li.append(button('Revoke', `Revoke the links to port ${p.port}`, async () => {
      try {
        await api.revokePort(node, name, p.port);
        await listPreviews();
      } catch (e) {
        if (!handleError(e)) showError($('ports-error'), e.message);
      }
    }));
    list.append(li);
  }
}

function openPorts(node, name) {
  portsSpace = { node, name };
  $('ports-title').textContent = `Ports of ${name}${fleet() ? ` on ${node}` : ''}`;
  showError($('ports-error'), '');
  $('ports-result').hidden = true;
  openDialog($('dlg-ports'), $('ports-port'));
  listPreviews().catch((e) => { if (!handleError(e)) showError($('ports-error'), e.message); });
}

$('form-ports').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const port = Number($('ports-port').value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    showError($('ports-error'), 'Invalid port (1-65535)');
    return;
  }
  await submitting($('ports-submit'), 'Getting…', $('ports-error'), async () => {
    const { node, name } = portsSpace;
    const r = await api.openPort(node, name, port, $('ports-public').checked);
    // The authenticated URL opens with the key in the address (?key=).
    const link = portLink(node, r.url, r.public);
    $('ports-link').href = r.public ? link : `${link}?key=${encodeURIComponent(getKey())}`;
    $('ports-link').textContent = r.public ? link : `${link} (opens with your key)`;
    $('ports-result').hidden = false;
    if (r.public) await listPreviews();
  });
});

// Destroy
let destroySpace = null;
function askDestroy(node, name) {
  destroySpace = { node, name };
  $('destroy-name').textContent = name;
  $('destroy-node').textContent = fleet() ? ` on ${node}` : '';
  $('destroy-volume').checked = false;
  showError($('destroy-error'), '');
  openDialog($('dlg-destroy'), $('destroy-cancel'));
}

$('form-destroy').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  await submitting($('destroy-submit'), 'Destroying…', $('destroy-error'), async () => {
    await ($('destroy-volume').checked ? api.destroyWithVolume : api.destroy)(destroySpace.node, destroySpace.name);
    $('dlg-destroy').close();
    refreshNow();
  });
});

// Terminal
let session = null;
async function openTerm(node, name) {
  const dlg = $('dlg-term');
  $('term-title').textContent = `Terminal: ${name}${fleet() ? ` on ${node}` : ''}`;
  $('term-status').textContent = '';
  showError($('term-error'), '');
  openDialog(dlg, dlg.querySelector('[data-close]'));
  if (!terminalAvailable) {
    showError($('term-error'), MISSING_TEXT);
    return;
  }
  try {
    session = await openTerminal(node, name, $('term'), (s) => {
      $('term-status').textContent = s;
    });
  } catch (e) {
    showError($('term-error'), `Cannot start the terminal: ${e.message}`);
  }
}

$('dlg-term').addEventListener('close', () => {
  if (session) session.close();
  session = null;
  $('term').replaceChildren();
});
// Escape belongs to the program in the terminal (vi, less); Shift+Escape or
// the Close button leaves.
$('dlg-term').addEventListener('cancel', (ev) => {
  if (document.activeElement?.closest('#term')) ev.preventDefault();
});
$('dlg-term').addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && ev.shiftKey) {
    ev.preventDefault();
    $('dlg-term').close();
  }
}, true);

// ---------- start ----------

adoptKeyFromUrl();
window.addEventListener('resize', drawCharts);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') refreshNow();
});
tick();
