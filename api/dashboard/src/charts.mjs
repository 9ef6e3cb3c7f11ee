// Tiny line charts on <canvas>: the last few minutes of a figure.

/** A fixed-length history of numbers. */
export class Series {
  constructor(size) {
    this.size = size;
    this.values = [];
  }

  push(v) {
    this.values.push(v);
    if (this.values.length > this.size) this.values.shift();
  }
}

/**
 * Draws `series` into `canvas` as a filled line, scaled to `max` (or to the
 * largest value when max is not given). Colours come from the CSS custom
 * properties --chart-line and --chart-fill of the canvas.
 */
export function draw(canvas, series, max) {
  const rect = canvas.getBoundingClientRect();
  if (rect.width === 0 || rect.height === 0) return;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(rect.width * dpr);
  const h = Math.round(rect.height * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(canvas);
  // Baseline across the whole time window, so a young history reads as such.
  ctx.fillStyle = style.getPropertyValue('--chart-base').trim() || 'rgba(128,128,128,.3)';
  ctx.fillRect(0, h - dpr, w, dpr);
  const vals = series.values;
  if (vals.length < 2) return;
  const top = max ?? Math.max(1, ...vals);
  const step = w / (series.size - 1);
  const x0 = w - (vals.length - 1) * step;
  const y = (v) => h - 1 - (Math.min(v, top) / top) * (h - 2);
  ctx.beginPath();
  ctx.moveTo(x0, h);
  vals.forEach((v, i) => ctx.lineTo(x0 + i * step, y(v)));
  ctx.lineTo(w, h);
  ctx.closePath();
  ctx.fillStyle = style.getPropertyValue('--chart-fill').trim() || 'rgba(80,140,255,.2)';
  ctx.fill();
  ctx.beginPath();
  vals.forEach((v, i) => (i ? ctx.lineTo(x0 + i * step, y(v)) : ctx.moveTo(x0, y(v))));
  ctx.lineWidth = 1.5 * dpr;
  ctx.strokeStyle = style.getPropertyValue('--chart-line').trim() || '#4a7dff';
  ctx.stroke();
}
