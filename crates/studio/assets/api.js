// Thin wrapper over the studio's JSON API: every failure becomes an ApiError carrying the
// server's own {"error": ..., "code": ...} message, so views can show it as is.

export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code || '';
    this.status = status || 0;
  }
}

function errorOf(body, status, statusText) {
  if (body && typeof body === 'object') {
    const e = body.error;
    if (typeof e === 'string') return new ApiError(e, body.code, status);
    if (e && typeof e === 'object') return new ApiError(e.message || JSON.stringify(e), e.code || body.code, status);
  }
  const text = typeof body === 'string' && body.trim() ? body.trim() : `${status} ${statusText}`;
  return new ApiError(text, '', status);
}

export async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`cannot reach the studio server (${e.message})`, 'network', 0);
  }
  const type = res.headers.get('content-type') || '';
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (type.includes('json') && text) {
      try { data = JSON.parse(text); } catch { data = text; }
    } else data = text;
  }
  if (!res.ok) throw errorOf(data, res.status, res.statusText);
  return data;
}

export const get = (p) => api('GET', p);
export const post = (p, b = {}) => api('POST', p, b);
export const put = (p, b) => api('PUT', p, b);
export const del = (p) => api('DELETE', p);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}

// Cached GETs for data that does not change while the page is open.
const cache = new Map();
export function cached(path) {
  if (!cache.has(path)) cache.set(path, get(path).catch((e) => { cache.delete(path); throw e; }));
  return cache.get(path);
}

// Server-sent events with a handler per event type. EventSource itself reconnects and sends
// Last-Event-ID; `onState` reports "open" / "reconnecting" / "closed" for a status dot.
export function stream(path, handlers, onState) {
  const es = new EventSource(path);
  const types = new Set(Object.keys(handlers).filter((t) => t !== '*'));
  const dispatch = (type) => (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { data = ev.data; }
    const id = ev.lastEventId ? Number(ev.lastEventId) : undefined;
    if (handlers[type]) handlers[type](data, id);
    if (handlers['*']) handlers['*'](type, data, id);
  };
  const all = new Set(['message', 'status', 'init', 'phase', 'step', 'batch', 'val', 'checkpoint', 'restart',
    'done', 'error', 'info', 'token', 'generate_done', 'ingest_file', 'ingest_done', 'end', ...types]);
  for (const t of all) {
    es.addEventListener(t, (ev) => {
      // The browser fires a plain "error" Event on connection loss; only server events carry data.
      if (t === 'error' && !('data' in ev && ev.data)) return;
      // Typed event data may arrive under "message" when the server sets no event: field.
      let type = t;
      if (t === 'message') {
        try { type = JSON.parse(ev.data).type || 'message'; } catch { /* keep */ }
      }
      dispatch(type)(ev);
    });
  }
  es.onopen = () => onState && onState('open');
  es.onerror = () => onState && onState(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
  return es;
}
