// Small DOM helpers shared by the views: element builder, formatting, toasts, dialogs.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtNum(v, digits = 4) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v !== 'number') return String(v);
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : v > 0 ? '+inf' : '-inf';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return Number(v.toPrecision(digits)).toString();
}

export function fmtInt(v) {
  if (v === null || v === undefined) return '—';
  return Math.round(v).toLocaleString('en-US');
}

export function fmtCount(v) {
  if (v === null || v === undefined) return '—';
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}B`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}K`;
  return fmtInt(v);
}

export function fmtBytes(b) {
  if (b === null || b === undefined || !Number.isFinite(b)) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${i === 0 ? b : b.toFixed(b >= 100 ? 0 : 1)} ${u[i]}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

export function fmtTime(t) {
  if (!t) return '—';
  const d = typeof t === 'number' ? new Date(t > 1e12 ? t : t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function toSeconds(t) {
  if (!t) return null;
  if (typeof t === 'number') return t > 1e12 ? t / 1000 : t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

// Shell-quotes an argv for display, so the copied command runs as is.
export function shellJoin(argv) {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${String(a).replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function debounce(fn, ms) {
  let t;
  const d = (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
  d.cancel = () => clearTimeout(t);
  return d;
}

let toastBox;
export function toast(message, kind = 'info', ms = 4000) {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(toastBox);
  }
  const t = h('div', { class: `toast ${kind}` }, message);
  toastBox.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? ms * 2 : ms);
}

export function errorText(e) {
  if (!e) return '';
  return e.code && !String(e.message).includes(e.code) ? `${e.message} [${e.code}]` : e.message || String(e);
}

export function errorBox(e) {
  return h('div', { class: 'error-box', role: 'alert' }, errorText(e));
}

// A modal dialog; resolves with the value handed to close() or null on Escape/cancel.
export function modal(title, body, buttons = []) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'modal' });
    let closed = false;
    const close = (v) => { if (closed) return; closed = true; dlg.close(); dlg.remove(); resolve(v); };
    const foot = h('div', { class: 'modal-foot' },
      buttons.map((b) => h('button', {
        class: b.class || '', type: 'button',
        // An action may keep the dialog open (returns false), e.g. to show a server error.
        onclick: async () => { if (!b.action || (await b.action()) !== false) close(b.value); },
      }, b.label)));
    dlg.append(h('div', { class: 'modal-head' }, h('h3', {}, title)), h('div', { class: 'modal-body' }, body), foot);
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close(null); });
    dlg.close$ = close;
    document.body.append(dlg);
    dlg.showModal();
    const primary = foot.querySelector('.primary, .danger') || foot.querySelector('button');
    if (primary) primary.focus();
  });
}

export function confirmDialog(title, text, label = 'Delete', extra = null) {
  return modal(title, h('div', {}, h('p', {}, text), extra), [
    { label: 'Cancel', value: false },
    { label, value: true, class: 'danger' },
  ]);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea', { style: { position: 'fixed', opacity: '0' } });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  toast('Copied to the clipboard');
}

export function statusBadge(status) {
  return h('span', { class: `badge st-${status || 'unknown'}` }, status || '?');
}

export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input, hint ? h('span', { class: 'hint' }, hint) : null);
}

// Runs `fn` at most once per animation frame and at most ~20 times a second.
export function frameThrottle(fn, minMs = 50) {
  let scheduled = false, last = 0;
  const tick = (now) => {
    if (now - last < minMs) { requestAnimationFrame(tick); return; }
    scheduled = false; last = now; fn();
  };
  return () => { if (!scheduled) { scheduled = true; requestAnimationFrame(tick); } };
}
