// The dashboard: polls the API every 2 s, keeps a few minutes of history for
// the charts, and drives the dialogs (key, create, exec, destroy, terminal).

import { api, ApiError, adoptKeyFromUrl, getKey, setKey } from './api.mjs';
import { Series, draw } from './charts.mjs';
import * as fmt from './format.mjs';
import { MISSING_TEXT, openTerminal, terminalAvailable } from './terminal.mjs';
import { initFiles, openFiles } from './files.mjs';

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
  spaces: [],
  stats: new Map(), // name -> stats
  cpuHist: new Map(), // name -> Series of cpuPercent
  rows: new Map(), // name -> <tr>
  caps: null,
  cpus: 1,
  authFailed: false,
  askedKey: false,
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

// ---------- spaces table ----------

const COLUMNS = ['name', 'status', 'image', 'memory', 'cpus', 'uptime', 'activity', 'cpuUse', 'memUse', 'actions'];
const LABELS = ['Name', 'Status', 'Image', 'Memory', 'CPUs', 'Uptime', 'Last activity', 'CPU use', 'Memory use', ''];

function button(text, label, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.setAttribute('aria-label', label);
  if (cls) b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function buildRow(name) {
  const tr = document.createElement('tr');
  tr.dataset.space = name;
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
  actions.append(
    button('Run', `Run a command in ${name}`, () => openExec(name)),
    button('Terminal', `Open a terminal in ${name}`, () => openTerm(name)),
    button('Files', `Files of ${name}`, () => openFiles(name)),
    button('Pause', `Pause ${name}`, (ev) => toggle(name, ev.currentTarget), 'toggle'),
    button('Destroy', `Destroy ${name}`, () => askDestroy(name), 'danger'),
  );
  return tr;
}

function setText(tr, col, text) {
  const el = tr.querySelector(`[data-col=${col}]`);
  if (el.textContent !== text) el.textContent = text;
}

function updateRow(tr, s, now) {
  setText(tr, 'name', s.name);
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
  const stats = state.stats.get(s.name);
  const live = stats && s.status !== 'stopped';
  tr.querySelector('[data-col=cpuUse] .num').textContent = live ? `${stats.cpuPercent.toFixed(1)}%` : '–';
  tr.querySelector('[data-col=memUse] .num').textContent = live
    ? `${fmt.bytes(stats.memoryUsageBytes)} / ${fmt.bytes(stats.memoryLimitBytes)}`
    : '–';
  const pct = live && stats.memoryLimitBytes ? (100 * stats.memoryUsageBytes) / stats.memoryLimitBytes : 0;
  tr.querySelector('[data-col=memUse] .meter span').style.width = `${Math.min(100, pct)}%`;
  const t = tr.querySelector('button.toggle');
  const [text, verb] = s.status === 'running' ? ['Pause', 'Pause'] : s.status === 'paused' ? ['Resume', 'Resume'] : ['Start', 'Start'];
  if (t.textContent !== text) {
    t.textContent = text;
    t.setAttribute('aria-label', `${verb} ${s.name}`);
  }
}

function renderSpaces(spaces) {
  state.spaces = spaces;
  const now = Date.now();
  const body = $('spaces-body');
  const seen = new Set();
  let prev = null;
  for (const s of spaces) {
    seen.add(s.name);
    let tr = state.rows.get(s.name);
    if (!tr) {
      tr = buildRow(s.name);
      state.rows.set(s.name, tr);
    }
    updateRow(tr, s, now);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    prev = tr;
  }
  for (const [name, tr] of state.rows) {
    if (seen.has(name)) continue;
    const hadFocus = tr.contains(document.activeElement);
    tr.remove();
    state.rows.delete(name);
    state.stats.delete(name);
    state.cpuHist.delete(name);
    if (hadFocus) $('spaces-heading').focus();
  }
  $('spaces-empty').hidden = spaces.length > 0;
  $('spaces-table').hidden = spaces.length === 0;
}

async function loadStats(spaces) {
  const live = spaces.filter((s) => s.status !== 'stopped');
  const results = await Promise.allSettled(live.map((s) => api.stats(s.name)));
  results.forEach((r, i) => {
    const name = live[i].name;
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
  if (!getKey()) {
    banner('No API key yet. ' + KEY_HELP, 'info');
    if (!state.askedKey) {
      state.askedKey = true;
      askKey(KEY_HELP);
    }
    return;
  }
  try {
    const [spaces, sys] = await Promise.all([api.spaces(), api.system()]);
    if (!state.caps) renderCaps(await api.capabilities());
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

async function toggle(name, btn) {
  const s = state.spaces.find((x) => x.name === name);
  if (!s) return;
  btn.disabled = true;
  try {
    if (s.status === 'running') await api.stop(name);
    else await api.start(name);
    banner('');
  } catch (e) {
    if (!handleError(e)) actionError(`${name}: ${e.message}`);
  } finally {
    btn.disabled = false;
    refreshNow();
  }
}

function actionError(text) {
  banner(text);
  $('banner').classList.add('action');
  setTimeout(() => $('banner').classList.remove('action'), 8000);
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
  showError($('create-error'), '');
  $('create-name').removeAttribute('aria-invalid');
  openDialog($('dlg-create'), $('create-name'));
});

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
  body.network = $('create-network').value;
  if ($('create-gpu').checked) body.gpu = true;
  await submitting($('create-submit'), 'Creating…', $('create-error'), async () => {
    await api.create(body);
    $('dlg-create').close();
    refreshNow();
  });
});

// Files
initFiles({ openDialog, showError });

// Exec
let execSpace = null;
function openExec(name) {
  execSpace = name;
  $('exec-title').textContent = `Run a command in ${name}`;
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
    const r = await api.exec(execSpace, command);
    $('exec-code').textContent = String(r.exitCode);
    $('exec-flags').textContent = [r.timedOut && ' (timed out)', r.truncated && ' (output truncated)']
      .filter(Boolean).join('');
    $('exec-stdout').textContent = r.stdout;
    $('exec-stderr').textContent = r.stderr;
    $('exec-result').hidden = false;
  });
});

// Destroy
let destroySpace = null;
function askDestroy(name) {
  destroySpace = name;
  $('destroy-name').textContent = name;
  $('destroy-volume').checked = false;
  showError($('destroy-error'), '');
  openDialog($('dlg-destroy'), $('destroy-cancel'));
}

$('form-destroy').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  await submitting($('destroy-submit'), 'Destroying…', $('destroy-error'), async () => {
    await ($('destroy-volume').checked ? api.destroyWithVolume : api.destroy)(destroySpace);
    $('dlg-destroy').close();
    refreshNow();
  });
});

// Terminal
let session = null;
async function openTerm(name) {
  const dlg = $('dlg-term');
  $('term-title').textContent = `Terminal: ${name}`;
  $('term-status').textContent = '';
  showError($('term-error'), '');
  openDialog(dlg, dlg.querySelector('[data-close]'));
  if (!terminalAvailable) {
    showError($('term-error'), MISSING_TEXT);
    return;
  }
  try {
    session = await openTerminal(name, $('term'), (s) => {
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
