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

export const api = {
  spaces: () => call('GET', '/api/spaces').then((d) => d.spaces),
  system: () => call('GET', '/api/system'),
  capabilities: () => call('GET', '/api/system/capabilities'),
  stats: (name) => call('GET', `/api/spaces/${encodeURIComponent(name)}/stats`).then((d) => d.stats),
  create: (body) => call('POST', '/api/spaces', body).then((d) => d.space),
  stop: (name) => call('POST', `/api/spaces/${encodeURIComponent(name)}/stop`),
  start: (name) => call('POST', `/api/spaces/${encodeURIComponent(name)}/start`),
  destroy: (name) => call('DELETE', `/api/spaces/${encodeURIComponent(name)}`),
  exec: (name, command) =>
    call('POST', `/api/spaces/${encodeURIComponent(name)}/exec`, { command }),
  destroyWithVolume: (name) =>
    call('DELETE', `/api/spaces/${encodeURIComponent(name)}?removeVolume=true`),
  /** A directory under /workspace (`rel` relative to it). */
  list: (name, rel) => call('GET', `${files(name)}/files?path=${encodeURIComponent(rel)}`),
  /** The first `maxBytes` of a file under /workspace, base64. */
  head: (name, rel, maxBytes) =>
    call('GET', `${files(name)}/file?path=${encodeURIComponent(rel)}&maxBytes=${maxBytes}`),
  /** Streams `blob` into the absolute path `abs`. */
  upload: (name, abs, blob) =>
    call('PUT', `${files(name)}/fs?path=${encodeURIComponent(abs)}&mkdirs=true`, blob),
  remove: (name, abs) => call('DELETE', `${files(name)}/fs?path=${encodeURIComponent(abs)}`),
  /** The file `abs` as a Blob. */
  download: async (name, abs) => {
    let resp;
    try {
      resp = await fetch(`${files(name)}/fs?path=${encodeURIComponent(abs)}`,
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

function files(name) {
  return `/api/spaces/${encodeURIComponent(name)}`;
}

/** The WebSocket URL of streaming exec in `name` (the key as `?key=`: browsers cannot set headers). */
export function execSocketUrl(name) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/spaces/${encodeURIComponent(name)}/exec/ws?key=${encodeURIComponent(getKey())}`;
}
