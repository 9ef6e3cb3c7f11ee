// The details dialog of one space: GET …/observability (live figures, the
// disk and size of /workspace, its busiest processes, the tail of its shell
// history), refreshed while the dialog is open, with a link to its audit
// events.

import { api } from './api.mjs';
import * as fmt from './format.mjs';

const $ = (id) => document.getElementById(id);
// Each answer walks the workspace (capped at 200 000 entries or 2 s): not
// every few seconds.
const REFRESH_MS = 10000;

let deps = null;
let current = null; // {node, name}
let timer = null;
let seq = 0;

/**
 * Wires the dialog. `d`: the page's `openDialog`, `showError`,
 * `handleError`, `title(verb, node, name)` and `openAudit(node, name)`.
 */
export function initDetails(d) {
  deps = d;
  $('details-refresh').addEventListener('click', () => load());
  $('details-audit').addEventListener('click', () => {
    const { node, name } = current;
    $('dlg-details').close();
    deps.openAudit(node, name);
  });
  $('dlg-details').addEventListener('close', () => {
    clearTimeout(timer);
    timer = null;
    current = null;
    seq += 1; // answers still on their way are dropped
  });
}

/** Opens the dialog for space `name` of `node`. */
export function openDetails(node, name) {
  current = { node, name };
  $('details-title').textContent = deps.title('Details of', node, name);
  deps.showError($('details-error'), '');
  for (const id of ['details-figures', 'details-disk', 'details-top', 'details-history']) {
    $(id).replaceChildren();
  }
  $('details-status').textContent = 'Loading…';
  deps.openDialog($('dlg-details'), $('details-refresh'));
  load();
}

/** One `<dt>`/`<dd>` pair per figure. */
function figures(el, pairs) {
  el.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    el.append(dt, dd);
  }
}

/** The figures of an observability answer, as label/text pairs. */
export function statFigures(s) {
  const pairs = [
    ['CPU', `${fmt.percent(s.cpuPercent) ?? 0}%`],
    ['Memory', `${fmt.bytes(s.memoryUsageBytes)} of ${fmt.bytes(s.memoryLimitBytes)}`],
    ['Processes', String(s.pids)],
    ['Network', `${fmt.bytes(s.networkRxBytes)} in · ${fmt.bytes(s.networkTxBytes)} out`],
    ['Disk I/O', `${fmt.bytes(s.blockReadBytes)} read · ${fmt.bytes(s.blockWriteBytes)} written`],
  ];
  if (s.egressDroppedPackets !== undefined) {
    pairs.push(['Blocked by policy', `${s.egressDroppedPackets} packets (${fmt.bytes(s.egressDroppedBytes)})`]);
  }
  return pairs;
}

function render(o) {
  figures($('details-figures'), statFigures(o.stats));

  const disk = $('details-disk');
  disk.replaceChildren();
  if (o.workspaceDisk) {
    const d = o.workspaceDisk;
    const p = document.createElement('p');
    p.textContent = `${fmt.bytes(d.usedBytes)} used of ${fmt.bytes(d.totalBytes)} (${d.usedPercent.toFixed(1)}%), ${fmt.bytes(d.availBytes)} free`;
    const meter = document.createElement('span');
    meter.className = 'meter';
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-label', 'Workspace disk used');
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', '100');
    meter.setAttribute('aria-valuenow', String(d.usedPercent));
    const bar = document.createElement('span');
    bar.style.width = `${Math.min(100, d.usedPercent)}%`;
    meter.append(bar);
    disk.append(p, meter);
  }
  const size = document.createElement('p');
  size.id = 'details-size';
  if (o.workspaceSizeBytes !== undefined) {
    const partial = o.workspaceSizeComplete === false ? ' (at least: the count stopped early)' : '';
    size.textContent = `Files in /workspace: ${fmt.bytes(o.workspaceSizeBytes)}${partial}`;
  } else {
    size.textContent = 'This space has no /workspace volume.';
  }
  disk.append(size);

  const top = $('details-top');
  top.replaceChildren();
  for (const p of o.top) {
    const tr = document.createElement('tr');
    tr.dataset.pid = String(p.pid);
    for (const text of [String(p.pid), p.command, `${p.cpu.toFixed(1)}%`, `${p.mem.toFixed(1)}%`, p.etime]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    top.append(tr);
  }
  $('details-top-empty').hidden = o.top.length > 0;

  const hist = $('details-history');
  hist.textContent = o.bashHistoryTail ?? '';
  hist.hidden = !o.bashHistoryTail;
  $('details-history-empty').hidden = Boolean(o.bashHistoryTail);
}

async function load() {
  if (!current) return;
  clearTimeout(timer);
  const mine = ++seq;
  const { node, name } = current;
  try {
    const o = await api.observability(node, name);
    if (mine !== seq) return;
    deps.showError($('details-error'), '');
    render(o);
    $('details-status').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (mine !== seq) return;
    $('details-status').textContent = '';
    if (!deps.handleError(e)) deps.showError($('details-error'), e.message);
  }
  if (mine === seq && $('dlg-details').open) timer = setTimeout(load, REFRESH_MS);
}
