// The file browser of a space: its /workspace volume, listed through the
// files API; upload (file picker or drag and drop), download, view text,
// delete (asks once more on the same button).

import { api } from './api.mjs';
import * as fmt from './format.mjs';

const $ = (id) => document.getElementById(id);
const VIEW_BYTES = 262144;

let space = null;
let cwd = '/'; // relative to /workspace
let deps = null;

/** Wires the dialog; `d` gives the page's dialog helpers. */
export function initFiles(d) {
  deps = d;
  $('files-up').addEventListener('click', () => {
    if (cwd === '/') return;
    cwd = cwd.replace(/\/[^/]+\/?$/, '') || '/';
    load();
  });
  $('files-upload').addEventListener('change', async (ev) => {
    await upload([...ev.target.files]);
    ev.target.value = '';
  });
  const drop = $('files-drop');
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    await upload([...(ev.dataTransfer?.files || [])]);
  });
}

/** Opens the browser on the /workspace of space `name`. */
export function openFiles(name) {
  space = name;
  cwd = '/';
  $('files-title').textContent = `Files: ${name}`;
  $('files-view').hidden = true;
  deps.openDialog($('dlg-files'), $('files-upload'));
  load();
}

const abs = (rel) => `/workspace${rel === '/' ? '' : rel}`;
const join = (dir, n) => (dir.endsWith('/') ? `${dir}${n}` : `${dir}/${n}`);

function progress(text) {
  $('files-progress').textContent = text;
}

async function load() {
  deps.showError($('files-error'), '');
  $('files-cwd').textContent = abs(cwd);
  $('files-up').disabled = cwd === '/';
  let listing;
  try {
    listing = await api.list(space, cwd);
  } catch (e) {
    deps.showError($('files-error'), e.message);
    return;
  }
  const body = $('files-body');
  body.replaceChildren();
  const entries = listing.entries.slice().sort((a, b) =>
    (a.type === 'dir') === (b.type === 'dir') ? a.name.localeCompare(b.name) : a.type === 'dir' ? -1 : 1);
  for (const e of entries) body.append(row(e));
  $('files-empty').hidden = entries.length > 0;
}

function button(text, label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

function row(e) {
  const tr = document.createElement('tr');
  tr.dataset.file = e.name;
  const name = document.createElement('th');
  name.scope = 'row';
  const rel = join(cwd, e.name);
  if (e.type === 'dir') {
    name.append(button(`${e.name}/`, `Open folder ${e.name}`, () => {
      cwd = rel;
      load();
    }));
    name.firstChild.className = 'link';
  } else {
    name.textContent = e.type === 'symlink' ? `${e.name} →` : e.name;
  }
  const size = document.createElement('td');
  size.textContent = e.type === 'file' ? fmt.bytes(e.size) : '';
  const when = document.createElement('td');
  when.textContent = new Date(e.mtimeMs).toLocaleString();
  const actions = document.createElement('td');
  const box = document.createElement('div');
  box.className = 'actions';
  if (e.type === 'file') {
    box.append(
      button('View', `View ${e.name}`, () => view(e.name, rel)),
      button('Download', `Download ${e.name}`, () => download(e.name, rel)),
    );
  }
  const del = button('Delete', `Delete ${e.name}`, async () => {
    if (!del.dataset.armed) {
      del.dataset.armed = '1';
      del.textContent = 'Really delete?';
      del.classList.add('danger');
      return;
    }
    try {
      await api.remove(space, abs(rel));
      load();
    } catch (err) {
      deps.showError($('files-error'), err.message);
    }
  });
  box.append(del);
  actions.append(box);
  tr.append(name, size, when, actions);
  return tr;
}

async function upload(list) {
  deps.showError($('files-error'), '');
  for (const f of list) {
    progress(`Uploading ${f.name} (${fmt.bytes(f.size)})…`);
    try {
      await api.upload(space, abs(join(cwd, f.name)), f);
    } catch (e) {
      deps.showError($('files-error'), `${f.name}: ${e.message}`);
      break;
    }
  }
  progress('');
  load();
}

async function download(name, rel) {
  deps.showError($('files-error'), '');
  progress(`Downloading ${name}…`);
  try {
    const blob = await api.download(space, abs(rel));
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    deps.showError($('files-error'), e.message);
  }
  progress('');
}

async function view(name, rel) {
  deps.showError($('files-error'), '');
  let r;
  try {
    r = await api.head(space, rel, VIEW_BYTES);
  } catch (e) {
    deps.showError($('files-error'), e.message);
    return;
  }
  const bin = atob(r.contentBase64);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: !r.truncated }).decode(bytes);
    if (text.includes('\u0000')) throw new Error('binary');
  } catch {
    text = null;
  }
  $('files-view-name').textContent = r.truncated ? `${name} (first ${fmt.bytes(VIEW_BYTES)})` : name;
  $('files-view-text').textContent = text ?? 'A binary file: download it to see it.';
  $('files-view').hidden = false;
}
