// Small formatting helpers for figures shown in the page.

/** 1024-based bytes with one decimal: `512.0 MiB`. */
export function bytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** A duration in seconds as `3d 4h`, `2h 5m`, `4m 10s`, `12s`. */
export function duration(secs) {
  const s = Math.max(0, Math.floor(secs));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** How long ago an ISO time was: `just now`, `5m ago`. */
export function ago(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '–';
  const s = (now - t) / 1000;
  return s < 5 ? 'just now' : `${duration(s)} ago`;
}

/** `"25.0%"` → 25. */
export function percent(s) {
  const v = parseFloat(String(s));
  return Number.isNaN(v) ? null : v;
}
