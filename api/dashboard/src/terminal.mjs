// The web terminal: xterm.js on the daemon's WebSocket exec with a PTY
// (docs/API.md, "WebSocket exec"). xterm.js is embedded only when the daemon
// was built after `npm ci` in api/dashboard; build.mjs says whether it was.

import { HAS_XTERM } from './build.mjs';
import { execSocketUrl } from './api.mjs';

/** The same shell the CLI's `clawdspace shell` starts. */
const SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi';

export const terminalAvailable = HAS_XTERM;

export const MISSING_TEXT =
  'The web terminal is not built into this server: xterm.js was missing when clawdspaced ' +
  'was compiled. Run `npm ci` in api/dashboard (scripts/install does it) and rebuild.';

let lib = null;
async function load() {
  if (!lib) {
    const [{ Terminal }, { FitAddon }] = await Promise.all([
      import('./vendor/xterm.mjs'),
      import('./vendor/addon-fit.mjs'),
    ]);
    if (!document.querySelector('link[data-xterm]')) {
      const css = document.createElement('link');
      css.rel = 'stylesheet';
      css.href = '/assets/vendor/xterm.css';
      css.dataset.xterm = '';
      document.head.append(css);
    }
    lib = { Terminal, FitAddon };
  }
  return lib;
}

/**
 * Opens a shell in space `name` of `node` inside `el`. `onStatus(text)` is told about
 * the connection. Returns `{ close() }`; close ends the session (the server
 * kills the shell's process group).
 */
export async function openTerminal(node, name, el, onStatus) {
  const { Terminal, FitAddon } = await load();
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
    fontSize: 14,
    scrollback: 5000,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const ws = new WebSocket(execSocketUrl(node, name));
  ws.binaryType = 'arraybuffer';
  const enc = new TextEncoder();
  let open = false;
  let closed = false;
  onStatus('connecting…');

  const send = (obj) => {
    if (open && ws.readyState === WebSocket.OPEN) ws.send(obj);
  };
  ws.addEventListener('open', () => {
    if (closed) return;
    open = true;
    ws.send(JSON.stringify({
      command: SHELL,
      tty: true,
      cols: term.cols,
      rows: term.rows,
      env: { TERM: 'xterm-256color' },
    }));
    onStatus('connected');
    term.focus();
  });
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data !== 'string') {
      const bytes = new Uint8Array(ev.data);
      if (bytes.length > 1) term.write(bytes.subarray(1));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === 'exit') {
      term.write(`\r\n[exited with code ${msg.exitCode}]\r\n`);
      onStatus(`exited (${msg.exitCode})`);
    } else if (msg.type === 'error') {
      term.write(`\r\n[error: ${msg.error}]\r\n`);
      onStatus(`error: ${msg.error}`);
    }
  });
  ws.addEventListener('close', () => {
    open = false;
    if (!closed) onStatus('disconnected');
  });
  ws.addEventListener('error', () => onStatus('connection failed'));

  term.onData((d) => send(enc.encode(d)));
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: 'resize', cols, rows })));
  const ro = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      // Not laid out (dialog closing).
    }
  });
  ro.observe(el);
  const ping = setInterval(() => send(JSON.stringify({ type: 'ping' })), 30000);

  return {
    term,
    close() {
      closed = true;
      clearInterval(ping);
      ro.disconnect();
      if (ws.readyState === WebSocket.OPEN) ws.close();
      // Closing before the handshake ends would log a browser error.
      else if (ws.readyState === WebSocket.CONNECTING) ws.addEventListener('open', () => ws.close());
      term.dispose();
    },
  };
}
