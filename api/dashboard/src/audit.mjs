// The audit log dialog: the last events of a node (GET /api/audit), newest
// first, optionally of one space; each event's details summed up in a line.

import { api } from './api.mjs';

const $ = (id) => document.getElementById(id);
const LIMIT = 200;

let deps = null;

/** A line about an event's meta (names and numbers only, as recorded). */
export function details(e) {
  const m = e.meta || {};
  if (e.type === 'space.exec') {
    const cmd = Array.isArray(m.command) ? m.command.join(' ') : String(m.command ?? '');
    const parts = [`${cmd} → exit ${m.exitCode}`];
    if (m.durationMs !== undefined) parts.push(`${m.durationMs} ms`);
    if (m.user) parts.push(`as ${m.user}`);
    if (m.envNames?.length) parts.push(`env ${m.envNames.join(', ')}`);
    if (m.timedOut) parts.push('timed out');
    return parts.join(' · ');
  }
  return Object.entries(m)
    .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(' · ');
}

/**
 * Wires the dialog. `d`: the page's `openDialog`, `showError`,
 * `handleError`, and `nodes()` / `spaces()` giving the node names and the
 * known spaces ({node, name}) for the filters.
 */
export function initAudit(d) {
  deps = d;
  $('form-audit').addEventListener('submit', (ev) => {
    ev.preventDefault();
    load();
  });
  $('audit-node').addEventListener('change', () => {
    fillSpaces();
    load();
  });
}

function fillSpaces() {
  const node = $('audit-node').value;
  const list = $('audit-spaces');
  list.replaceChildren();
  const names = new Set(deps.spaces().filter((s) => !node || s.node === node).map((s) => s.name));
  for (const n of [...names].sort()) {
    const o = document.createElement('option');
    o.value = n;
    list.append(o);
  }
}

/** Opens the dialog, filtered to `space` of `node` when given. */
export function openAudit(node, space) {
  const nodes = deps.nodes();
  const sel = $('audit-node');
  sel.replaceChildren();
  for (const n of nodes) {
    const o = document.createElement('option');
    o.value = n;
    o.textContent = n;
    sel.append(o);
  }
  if (node) sel.value = node;
  $('audit-node-row').hidden = nodes.length < 2;
  $('audit-space').value = space || '';
  fillSpaces();
  deps.showError($('audit-error'), '');
  deps.openDialog($('dlg-audit'), $('audit-space'));
  load();
}

async function load() {
  const node = $('audit-node').value;
  const space = $('audit-space').value.trim();
  const body = $('audit-body');
  $('audit-status').textContent = 'Loading…';
  try {
    const events = await api.audit(node, space, LIMIT);
    deps.showError($('audit-error'), '');
    body.replaceChildren();
    for (const e of events.reverse()) {
      const tr = document.createElement('tr');
      tr.dataset.type = e.type;
      const when = document.createElement('td');
      const t = document.createElement('time');
      t.dateTime = e.ts;
      t.textContent = new Date(e.ts).toLocaleString();
      when.append(t);
      const cells = [when];
      for (const text of [e.space || '—', e.type, details(e)]) {
        const td = document.createElement('td');
        td.textContent = text;
        cells.push(td);
      }
      cells[3].className = 'audit-details';
      tr.append(...cells);
      body.append(tr);
    }
    $('audit-empty').hidden = events.length > 0;
    $('audit-status').textContent =
      `${events.length} event${events.length === 1 ? '' : 's'}${events.length === LIMIT ? ` (the last ${LIMIT})` : ''}`;
  } catch (e) {
    $('audit-status').textContent = '';
    if (!deps.handleError(e)) deps.showError($('audit-error'), e.message);
  }
}
