// A small canvas line chart for bucketed series: each bucket is [x, min, max, last, count]
// (plus a non-finite count). It draws the min..max band (so spikes stay visible however far
// the view is zoomed out), the last value as a line, an optional EMA of it, red markers for
// buckets that held NaN/inf, vertical markers (checkpoints, restarts), a hover read-out and
// drag-to-zoom. The owner re-requests finer buckets for the zoomed range through onZoom.

import { h, frameThrottle, fmtNum, fmtCount, fmtDuration } from './ui.js';

const PAD = { l: 52, r: 12, t: 10, b: 22 };

export function normalizePoint(p) {
  if (Array.isArray(p)) {
    const [x, min, max, last, count, nonfinite] = p;
    return fix({ x, min, max, last, count: count ?? 1, nonfinite: nonfinite ?? 0 });
  }
  return fix({ x: p.x, min: p.min, max: p.max, last: p.last ?? p.value ?? p.y, count: p.count ?? 1, nonfinite: p.nonfinite ?? 0 });
}

function fix(b) {
  const ok = (v) => typeof v === 'number' && Number.isFinite(v);
  if (!ok(b.min) || !ok(b.max) || !ok(b.last)) {
    // A bucket whose values are null / "NaN" strings still counts as non-finite.
    if (!b.nonfinite) b.nonfinite = 1;
    const finite = [b.min, b.max, b.last].filter(ok);
    b.min = ok(b.min) ? b.min : finite.length ? Math.min(...finite) : null;
    b.max = ok(b.max) ? b.max : finite.length ? Math.max(...finite) : null;
    b.last = ok(b.last) ? b.last : null;
  }
  return b;
}

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

export class Chart {
  constructor({ title, series, height = 220, yLog = false, xKind = 'step', onZoom, yFormat }) {
    this.series = series.map((s) => ({ ...s, points: [] }));
    this.markers = [];
    this.yLog = yLog;
    this.xKind = xKind;
    this.smoothing = 0;
    this.zoom = null;
    this.xRange = null;
    this.onZoom = onZoom;
    this.yFormat = yFormat || ((v) => fmtNum(v, 3));
    this.hover = null;
    this.drag = null;
    this.canvas = h('canvas', { tabindex: '0', role: 'img', 'aria-label': `${title} chart; drag to zoom, Escape resets` });
    this.legend = h('div', { class: 'chart-legend' });
    this.tip = h('div', { class: 'chart-tip', hidden: true });
    this.el = h('div', { class: 'chart' },
      h('div', { class: 'chart-head' }, h('span', { class: 'chart-title' }, title), this.legend),
      h('div', { class: 'chart-body', style: { height: `${height}px` } }, this.canvas, this.tip));
    this.redraw = frameThrottle(() => this.draw());
    this.renderLegend();
    this.bind();
    this.ro = new ResizeObserver(() => this.redraw());
    this.ro.observe(this.canvas);
  }

  destroy() { this.ro.disconnect(); }

  // Buckets wanted for the current width: about two per pixel.
  buckets() { return Math.max(50, Math.round((this.canvas.clientWidth || 600) * 2)); }

  renderLegend() {
    this.legend.replaceChildren(...this.series.map((s) =>
      h('span', { class: 'legend-item' }, h('i', { style: { background: s.color } }), s.label)));
  }

  setSeriesList(series) {
    this.series = series.map((s) => ({ ...s, points: s.points || [] }));
    this.renderLegend();
    this.redraw();
  }

  setPoints(key, points, xRange) {
    const s = this.series.find((x) => x.key === key);
    if (!s) return;
    s.points = points.map(normalizePoint).filter((p) => typeof p.x === 'number').sort((a, b) => a.x - b.x);
    if (xRange && !this.zoom) this.xRange = xRange;
    this.redraw();
  }

  // A live value: merged into the last bucket when x repeats, else appended.
  append(key, x, v) {
    const s = this.series.find((q) => q.key === key);
    if (!s || typeof x !== 'number') return;
    const nf = typeof v !== 'number' || !Number.isFinite(v);
    const last = s.points[s.points.length - 1];
    if (last && x < last.x) return; // already covered by the stored buckets
    if (last && x === last.x) {
      if (nf) last.nonfinite++;
      else { last.last = v; last.min = Math.min(last.min ?? v, v); last.max = Math.max(last.max ?? v, v); }
    } else {
      s.points.push({ x, min: nf ? null : v, max: nf ? null : v, last: nf ? null : v, count: 1, nonfinite: nf ? 1 : 0 });
    }
    this.redraw();
  }

  setMarkers(markers) { this.markers = markers.slice(); this.redraw(); }
  addMarker(m) {
    if (this.markers.some((x) => x.kind === m.kind && x.x === m.x)) return;
    this.markers.push(m);
    this.redraw();
  }
  setLog(on) { this.yLog = on; this.redraw(); }
  setSmoothing(a) { this.smoothing = a; this.redraw(); }
  setXKind(k) { this.xKind = k; this.zoom = null; this.xRange = null; this.redraw(); }
  resetZoom() {
    if (!this.zoom) return;
    this.zoom = null;
    this.redraw();
    if (this.onZoom) this.onZoom(null);
  }
  setZoom(from, to) {
    if (!(to > from)) return;
    this.zoom = [from, to];
    this.redraw();
    if (this.onZoom) this.onZoom(this.zoom);
  }
  pointCount() { return this.series.reduce((n, s) => n + s.points.length, 0); }

  xExtent() {
    if (this.zoom) return this.zoom;
    let lo = Infinity, hi = -Infinity;
    for (const s of this.series) for (const p of s.points) { if (p.x < lo) lo = p.x; if (p.x > hi) hi = p.x; }
    if (this.xRange) { lo = Math.min(lo, this.xRange[0]); hi = Math.max(hi, this.xRange[1]); }
    if (!Number.isFinite(lo)) return [0, 1];
    if (hi === lo) hi = lo + 1;
    return [lo, hi];
  }

  fmtX(v) {
    if (this.xKind === 'time') return fmtDuration(v);
    if (this.xKind === 'tokens') return fmtCount(v);
    return fmtNum(Math.round(v));
  }

  smooth(points) {
    const a = this.smoothing;
    const out = new Array(points.length);
    let s = 0, n = 0;
    for (let i = 0; i < points.length; i++) {
      const v = points[i].last;
      if (v === null) { out[i] = null; continue; }
      s = a * s + (1 - a) * v; n++;
      out[i] = s / (1 - a ** n); // bias-corrected so the start is not pulled toward 0
    }
    return out;
  }

  draw() {
    const c = this.canvas;
    const w = c.clientWidth, hgt = c.clientHeight;
    if (!w || !hgt) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(hgt * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    // What is drawn, readable by tests and tools without pixels.
    this.el.dataset.points = String(this.pointCount());
    this.el.dataset.lastX = String(Math.max(-1, ...this.series.map((s) => (s.points.length ? s.points[s.points.length - 1].x : -1))));
    this.el.dataset.series = String(this.series.filter((s) => s.points.length).length);
    const fg = cssVar('--muted', '#888'), grid = cssVar('--grid', 'rgba(128,128,128,.15)'), bad = cssVar('--bad', '#e5484d');
    const pw = w - PAD.l - PAD.r, ph = hgt - PAD.t - PAD.b;
    const [x0, x1] = this.xExtent();
    const inX = (p) => p.x >= x0 && p.x <= x1;

    // y range over the visible finite values (positive only on a log axis)
    let lo = Infinity, hi = -Infinity;
    for (const s of this.series) for (const p of s.points) {
      if (!inX(p)) continue;
      for (const v of [p.min, p.max]) {
        if (v === null || (this.yLog && v <= 0)) continue;
        if (v < lo) lo = v; if (v > hi) hi = v;
      }
    }
    const empty = !Number.isFinite(lo);
    if (empty) { lo = this.yLog ? 0.1 : 0; hi = 1; }
    const ty = (v) => (this.yLog ? Math.log10(v) : v);
    let a = ty(lo), b = ty(hi);
    if (a === b) { a -= 0.5; b += 0.5; }
    const padY = (b - a) * 0.06; a -= padY; b += padY;
    this.geom = { x0, x1, a, b, pw, ph };
    const X = (x) => PAD.l + ((x - x0) / (x1 - x0)) * pw;
    const Y = (v) => PAD.t + (1 - (ty(v) - a) / (b - a)) * ph;

    // grid and tick labels
    g.font = '11px ui-sans-serif, system-ui, sans-serif';
    g.fillStyle = fg; g.strokeStyle = grid; g.lineWidth = 1;
    g.textAlign = 'right'; g.textBaseline = 'middle';
    const yticks = [];
    if (this.yLog) {
      for (let e = Math.floor(a); e <= Math.ceil(b); e++) for (const m of [1, 2, 5]) {
        const t = Math.log10(m) + e;
        if (t >= a && t <= b && (b - a < 2.5 || m === 1)) yticks.push(10 ** t);
      }
    } else {
      const st = niceStep(b - a, Math.max(2, ph / 40));
      for (let v = Math.ceil(a / st) * st; v <= b; v += st) yticks.push(Math.abs(v) < st * 1e-9 ? 0 : v);
    }
    for (const v of yticks) {
      const y = Math.round(Y(v)) + 0.5;
      g.beginPath(); g.moveTo(PAD.l, y); g.lineTo(PAD.l + pw, y); g.stroke();
      g.fillText(this.yFormat(v), PAD.l - 6, y);
    }
    g.textAlign = 'center'; g.textBaseline = 'top';
    const xs = niceStep(x1 - x0, Math.max(2, pw / 90));
    for (let v = Math.ceil(x0 / xs) * xs; v <= x1; v += xs) {
      const x = Math.round(X(v)) + 0.5;
      g.beginPath(); g.moveTo(x, PAD.t); g.lineTo(x, PAD.t + ph); g.stroke();
      g.fillText(this.fmtX(v), x, PAD.t + ph + 5);
    }

    g.save();
    g.beginPath(); g.rect(PAD.l, PAD.t - 6, pw, ph + 6); g.clip();

    // markers: checkpoints dashed, restarts solid, evaluations as ticks on the x axis
    for (const m of this.markers) {
      if (m.x < x0 || m.x > x1) continue;
      const x = Math.round(X(m.x)) + 0.5;
      g.save();
      if (m.kind === 'val') {
        g.strokeStyle = cssVar('--c2', '#e38'); g.lineWidth = 2;
        g.beginPath(); g.moveTo(x, PAD.t + ph - 6); g.lineTo(x, PAD.t + ph); g.stroke();
      } else {
        g.strokeStyle = m.kind === 'restart' ? cssVar('--warn', '#f90') : cssVar('--ok', '#3a7');
        g.globalAlpha = 0.8;
        if (m.kind !== 'restart') g.setLineDash([3, 3]);
        g.beginPath(); g.moveTo(x, PAD.t); g.lineTo(x, PAD.t + ph); g.stroke();
      }
      g.restore();
    }

    for (const s of this.series) {
      const pts = s.points.filter((p, i, arr) => inX(p) || (arr[i + 1] && arr[i + 1].x >= x0 && p.x < x0) || (arr[i - 1] && arr[i - 1].x <= x1 && p.x > x1));
      if (!pts.length) continue;
      const valid = (v) => v !== null && !(this.yLog && v <= 0);
      // min..max band
      if (s.band !== false && pts.some((p) => p.count > 1)) {
        g.fillStyle = s.color; g.globalAlpha = 0.18;
        g.beginPath();
        let open = false;
        const upper = [];
        for (const p of pts) {
          if (!valid(p.min) || !valid(p.max)) continue;
          const x = X(p.x);
          if (!open) { g.moveTo(x, Y(p.max)); open = true; } else g.lineTo(x, Y(p.max));
          upper.push(p);
        }
        for (let i = upper.length - 1; i >= 0; i--) g.lineTo(X(upper[i].x), Y(upper[i].min));
        g.closePath(); g.fill();
        g.globalAlpha = 1;
      }
      const line = (vals, alpha, width) => {
        g.strokeStyle = s.color; g.globalAlpha = alpha; g.lineWidth = width;
        g.beginPath();
        let pen = false;
        for (let i = 0; i < pts.length; i++) {
          const v = vals[i];
          if (!valid(v)) { pen = false; continue; }
          const x = X(pts[i].x), y = Y(v);
          if (!pen) { g.moveTo(x, y); pen = true; } else g.lineTo(x, y);
        }
        g.stroke(); g.globalAlpha = 1;
      };
      const raw = pts.map((p) => p.last);
      const smoothOn = this.smoothing > 0 && s.smooth !== false;
      line(raw, smoothOn ? 0.3 : 1, 1.5);
      if (smoothOn) line(this.smooth(pts), 1, 2);
      if (s.dots || pts.length < 40) {
        g.fillStyle = s.color;
        for (const p of pts) if (valid(p.last)) { g.beginPath(); g.arc(X(p.x), Y(p.last), s.dots ? 3 : 1.8, 0, 7); g.fill(); }
      }
      // non-finite buckets: red triangles on the top edge, never silently dropped
      g.fillStyle = bad;
      for (const p of pts) {
        if (!p.nonfinite || !inX(p)) continue;
        const x = X(p.x);
        g.beginPath(); g.moveTo(x - 4, PAD.t - 4); g.lineTo(x + 4, PAD.t - 4); g.lineTo(x, PAD.t + 4); g.closePath(); g.fill();
      }
    }
    g.restore();

    if (empty) {
      g.fillStyle = fg; g.textAlign = 'center'; g.textBaseline = 'middle';
      g.fillText('no data yet', PAD.l + pw / 2, PAD.t + ph / 2);
    }
    // drag selection
    if (this.drag && Math.abs(this.drag.x1 - this.drag.x0) > 2) {
      g.fillStyle = cssVar('--accent', '#58f'); g.globalAlpha = 0.15;
      const l = Math.min(this.drag.x0, this.drag.x1);
      g.fillRect(l, PAD.t, Math.abs(this.drag.x1 - this.drag.x0), ph);
      g.globalAlpha = 1;
    }
    // hover crosshair
    if (this.hover !== null && !this.drag) {
      g.strokeStyle = fg; g.globalAlpha = 0.5;
      g.beginPath(); g.moveTo(this.hover + 0.5, PAD.t); g.lineTo(this.hover + 0.5, PAD.t + ph); g.stroke();
      g.globalAlpha = 1;
    }
  }

  xAt(px) {
    const { x0, x1, pw } = this.geom || { x0: 0, x1: 1, pw: 1 };
    return x0 + ((px - PAD.l) / pw) * (x1 - x0);
  }

  showTip(px, py) {
    const x = this.xAt(px);
    const rows = [];
    for (const s of this.series) {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p.x - x) < Math.abs(best.x - x)) best = p;
      if (!best) continue;
      let v = best.last === null ? 'NaN/inf' : this.yFormat(best.last);
      if (best.count > 1 && best.min !== null) v += ` (${this.yFormat(best.min)}…${this.yFormat(best.max)})`;
      if (best.nonfinite) v += ` · ${best.nonfinite} non-finite`;
      rows.push(h('div', {}, h('i', { style: { background: s.color } }), `${s.label} @ ${this.fmtX(best.x)}: ${v}`));
    }
    const near = this.markers.filter((m) => this.geom && Math.abs(m.x - x) <= (this.geom.x1 - this.geom.x0) / 100);
    for (const m of near) rows.push(h('div', { class: 'muted' }, `${m.kind}${m.label ? `: ${m.label}` : ''} @ ${this.fmtX(m.x)}`));
    if (!rows.length) { this.tip.hidden = true; return; }
    this.tip.replaceChildren(...rows);
    this.tip.hidden = false;
    const w = this.canvas.clientWidth;
    this.tip.style.left = `${Math.min(px + 12, w - 230)}px`;
    this.tip.style.top = `${Math.max(0, py - 10)}px`;
  }

  bind() {
    const c = this.canvas;
    const pos = (ev) => { const r = c.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; };
    c.addEventListener('mousedown', (ev) => {
      const [x] = pos(ev);
      if (x < PAD.l) return;
      this.drag = { x0: x, x1: x };
    });
    window.addEventListener('mousemove', (this._move = (ev) => {
      if (!this.drag) return;
      this.drag.x1 = pos(ev)[0];
      this.redraw();
    }));
    window.addEventListener('mouseup', (this._up = () => {
      if (!this.drag) return;
      const d = this.drag; this.drag = null;
      if (Math.abs(d.x1 - d.x0) > 4) this.setZoom(this.xAt(Math.min(d.x0, d.x1)), this.xAt(Math.max(d.x0, d.x1)));
      else this.redraw();
    }));
    c.addEventListener('mousemove', (ev) => {
      const [x, y] = pos(ev);
      this.hover = x >= PAD.l ? x : null;
      if (!this.drag) this.showTip(x, y);
      this.redraw();
    });
    c.addEventListener('mouseleave', () => { this.hover = null; this.tip.hidden = true; this.redraw(); });
    c.addEventListener('dblclick', () => this.resetZoom());
    c.addEventListener('keydown', (ev) => {
      const [x0, x1] = this.xExtent();
      const span = x1 - x0;
      if (ev.key === 'Escape' || ev.key === '0') this.resetZoom();
      else if (ev.key === '+' || ev.key === '=') this.setZoom(x0 + span / 4, x1 - span / 4);
      else if (ev.key === '-' && this.zoom) this.setZoom(x0 - span / 2, x1 + span / 2);
      else if (ev.key === 'ArrowLeft' && this.zoom) this.setZoom(x0 - span / 5, x1 - span / 5);
      else if (ev.key === 'ArrowRight' && this.zoom) this.setZoom(x0 + span / 5, x1 + span / 5);
      else return;
      ev.preventDefault();
    });
  }

  detach() {
    window.removeEventListener('mousemove', this._move);
    window.removeEventListener('mouseup', this._up);
    this.destroy();
  }
}

// A small bar chart (length histogram).
export function barChart(bins, { height = 140, label = (b) => b.label } = {}) {
  const canvas = h('canvas', { role: 'img', 'aria-label': 'histogram' });
  const box = h('div', { class: 'chart-body', style: { height: `${height}px` } }, canvas);
  const draw = () => {
    const w = canvas.clientWidth, hh = canvas.clientHeight;
    if (!w) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = w * dpr; canvas.height = hh * dpr;
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const max = Math.max(1, ...bins.map((b) => b.count));
    const bw = (w - 10) / Math.max(1, bins.length);
    g.font = '10px ui-sans-serif, system-ui, sans-serif';
    g.textAlign = 'center';
    bins.forEach((b, i) => {
      const bh = (b.count / max) * (hh - 30);
      g.fillStyle = cssVar('--c1', '#58f');
      g.fillRect(5 + i * bw + 1, hh - 16 - bh, Math.max(1, bw - 2), bh);
      g.fillStyle = cssVar('--muted', '#888');
      if (bins.length <= 24 || i % Math.ceil(bins.length / 12) === 0) g.fillText(label(b), 5 + i * bw + bw / 2, hh - 4);
      if (bw > 26) g.fillText(String(b.count), 5 + i * bw + bw / 2, hh - 20 - bh);
    });
  };
  new ResizeObserver(draw).observe(canvas);
  return box;
}
