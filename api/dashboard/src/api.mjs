// The REST API of the server that served this page, with the key kept in
// localStorage.

const STORE = 'clawdspace.apiKey';

/** An API answer that was not 2xx: the status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The key of this page when localStorage is unavailable (private mode).
let memoryKey = '';

/** The API key: stored, else the one given to this page. */
export function getKey() {
  try {
    return localStorage.getItem(STORE) || memoryKey;
  } catch {
    return memoryKey;
  }
}

export function setKey(key) {
  try {
    localStorage.setItem(STORE, key);
  } catch {
    // Private mode without storage: the key lasts as long as the page.
  }
  memoryKey = key;
}

/**
 * Takes `?key=` from the address (stores it, then removes it from the
 * address bar and history so it is not left in bookmarks or screenshots).
 */
export function adoptKeyFromUrl() {
  const url = new URL(location.href);
  const k = url.searchParams.get('key');
  if (k === null) return false;
  setKey(k);
  url.searchParams.delete('key');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  return true;
}

/** Calls `method path` with the key; resolves to the JSON body or throws ApiError. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${getKey()}` };
  const init = { method, headers };
  if (body instanceof Blob) {
    init.body = body; // raw bytes (uploads)
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `Cannot reach the server (${e.message})`);
  }
  let data = null;
  const text = await resp.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const msg = (data && data.error) || `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// The name of the node that served this page (from /api/nodes): its
// spaces are asked for directly, other nodes' through its relay.
let selfNode = null;

/** Tells the API module which node served this page. */
export function setSelfNode(name) {
  selfNode = name;
}

/** Path prefix of `node`'s API: '' for this server, else its relay. */
function base(node) {
  return !node || node === selfNode ? '' : `/api/nodes/${encodeURIComponent(node)}`;
}

const space = (node, name, rest = '') =>
  `${base(node)}/api/spaces/${encodeURIComponent(name)}${rest}`;

export const api = {
  nodes: () => call('GET', '/api/nodes'),
  placement: (gpus) => call('GET', `/api/nodes/placement?gpus=${gpus}`),
  spaces: (node) => call('GET', `${base(node)}/api/spaces`).then((d) => d.spaces),
  system: () => call('GET', '/api/system'),
  capabilities: () => call('GET', '/api/system/capabilities'),
  stats: (node, name) => call('GET', space(node, name, '/stats')).then((d) => d.stats),
  /** Stats, workspace disk and size, top processes, shell history tail. */
  observability: (node, name) =>
    call('GET', space(node, name, '/observability')).then((d) => d.observability),
  create: (node, body) => call('POST', `${base(node)}/api/spaces`, body).then((d) => d.space),
  stop: (node, name) => call('POST', space(node, name, '/stop')),
  start: (node, name) => call('POST', space(node, name, '/start')),
  destroy: (node, name) => call('DELETE', space(node, name)),
  exec: (node, name, command) => call('POST', space(node, name, '/exec'), { command }),
  openPort: (node, name, port, isPublic) =>
    call('POST', space(node, name, '/ports'), { port, public: isPublic }),
  previews: (node, name) => call('GET', space(node, name, '/ports')).then((d) => d.previews),
  revokePort: (node, name, port) => call('DELETE', space(node, name, `/ports?port=${port}`)),
  /** The last `limit` audit events of `node` (of space `name` when given), oldest first. */
  audit: (node, name, limit) =>
    call('GET', `${base(node)}/api/audit?limit=${limit}${name ? `&space=${encodeURIComponent(name)}` : ''}`)
      .then((d) => d.events),
  destroyWithVolume: (node, name) => call('DELETE', space(node, name, '?removeVolume=true')),
  templates: (node) => call('GET', `${base(node)}/api/templates`).then((d) => d.templates),
  template: (node, name) =>
    call('GET', `${base(node)}/api/templates/${encodeURIComponent(name)}`).then((d) => d.yaml),
  saveTemplate: (node, yaml) => call('PUT', `${base(node)}/api/templates`, { yaml }).then((d) => d.template),
  deleteTemplate: (node, name) => call('DELETE', `${base(node)}/api/templates/${encodeURIComponent(name)}`),
  /** A directory under /workspace (`rel` relative to it). */
  list: (node, name, rel) => call('GET', space(node, name, `/files?path=${encodeURIComponent(rel)}`)),
  /** The first `maxBytes` of a file under /workspace, base64. */
  head: (node, name, rel, maxBytes) =>
    call('GET', space(node, name, `/file?path=${encodeURIComponent(rel)}&maxBytes=${maxBytes}`)),
  /** Streams `blob` into the absolute path `abs`. */
  upload: (node, name, abs, blob) =>
    call('PUT', space(node, name, `/fs?path=${encodeURIComponent(abs)}&mkdirs=true`), blob),
  remove: (node, name, abs) => call('DELETE', space(node, name, `/fs?path=${encodeURIComponent(abs)}`)),
  /** The file `abs` as a Blob. */
  download: async (node, name, abs) => {
    let resp;
    try {
      resp = await fetch(space(node, name, `/fs?path=${encodeURIComponent(abs)}`),
        { headers: { Authorization: `Bearer ${getKey()}` } });
    } catch (e) {
      throw new ApiError(0, `Cannot reach the server (${e.message})`);
    }
    if (!resp.ok) {
      let msg = `HTTP ${resp.status}`;
      try {
        msg = (await resp.json()).error || msg;
      } catch {
        // not JSON
      }
      throw new ApiError(resp.status, msg);
    }
    return resp.blob();
  },
};

/**
 * A port URL as this page can open it. The server's answer names the host
 * it was asked at: for this server, this page's origin; for another node
 * (asked through the relay), that node's own address, which is right for
 * a public link and, for the keyed proxy, replaced by the relay path.
 */
export function portLink(node, url, isPublic) {
  const u = new URL(url);
  if (!node || node === selfNode) return `${location.origin}${u.pathname}`;
  return isPublic ? url : `${base(node)}${u.pathname}`;
}

/**
 * The WebSocket URL of streaming exec in space `name` of `node` (the key as
 * `?key=`: browsers cannot set headers).
 */
export function execSocketUrl(node, name) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${space(node, name, '/exec/ws')}?key=${encodeURIComponent(getKey())}`;
}
