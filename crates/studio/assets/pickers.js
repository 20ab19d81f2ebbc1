// Shared form pieces: a path field with a server-side file browser (/api/fs), and a model
// picker that lists a run's final model, best/, checkpoints and adapter (/api/runs/:id/models).

import { get, qs } from './api.js';
import { h, clear, modal, fmtBytes, errorText } from './ui.js';

export async function browse(start = '', { dirs = true } = {}) {
  const pathIn = h('input', { type: 'text', class: 'grow', value: start, 'aria-label': 'Folder' });
  const list = h('div', { class: 'fs-list', role: 'listbox' });
  const msg = h('div', { class: 'status-line' });
  let current = null;
  let chosen = null;
  const load = async (p) => {
    msg.className = 'status-line busy'; msg.textContent = 'loading…';
    try {
      const r = await get(`/api/fs${qs({ path: p })}`);
      current = r;
      pathIn.value = r.path;
      msg.textContent = ''; msg.className = 'status-line';
      const entries = (r.entries || []).slice().sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'dir' ? -1 : 1));
      clear(list,
        r.parent ? h('button', { type: 'button', class: 'fs-entry dir', onclick: () => load(r.parent) }, h('span', { class: 'nm' }, '..')) : null,
        entries.map((e) => h('button', {
          type: 'button', class: `fs-entry ${e.kind}`, title: e.name,
          onclick: () => { if (e.kind === 'dir') load(join(r.path, e.name)); else pick(join(r.path, e.name)); },
        }, h('span', { class: 'nm' }, e.name), h('span', { class: 'sz' }, e.kind === 'file' ? fmtBytes(e.size) : ''))),
        entries.length ? null : h('div', { class: 'empty' }, 'empty folder'));
      list.querySelector('button')?.focus();
    } catch (e) {
      msg.className = 'status-line bad'; msg.textContent = errorText(e);
    }
  };
  const pick = (p) => { chosen = p; document.querySelector('dialog.modal')?.close$?.('file'); };
  pathIn.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); load(pathIn.value); } });
  const body = h('div', {}, h('div', { class: 'row' }, pathIn, h('button', { type: 'button', onclick: () => load(pathIn.value) }, 'Go')), list, msg);
  load(start);
  const buttons = [{ label: 'Cancel', value: null }];
  if (dirs) buttons.push({ label: 'Use this folder', value: 'dir', class: 'primary' });
  const r = await modal('Choose a path', body, buttons);
  if (r === 'file') return chosen;
  if (r === 'dir' && current) return current.path;
  return null;
}

function join(dir, name) {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

// An <input> with a Browse… button; `onchange` fires for typed and picked values alike.
export function pathInput({ value = '', placeholder = '', onchange, label = 'path', id } = {}) {
  const input = h('input', { type: 'text', value, placeholder, id, 'aria-label': label, spellcheck: 'false' });
  input.addEventListener('input', () => onchange && onchange(input.value));
  const btn = h('button', {
    type: 'button', class: 'small', title: 'Browse the server’s files',
    onclick: async () => {
      const start = input.value ? input.value.replace(/\/[^/]*$/, '') || input.value : '';
      const p = await browse(start);
      if (p) { input.value = p; onchange && onchange(p); input.dispatchEvent(new Event('change')); }
    },
  }, 'Browse…');
  const el = h('div', { class: 'with-btn' }, input, btn);
  el.input = input;
  return el;
}

export async function runsList(params = {}) {
  const r = await get(`/api/runs${qs(params)}`);
  return Array.isArray(r) ? r : r.runs || [];
}

export function runLabel(r, projects = []) {
  const p = projects.find((x) => String(x.id) === String(r.project_id));
  const name = r.name || `run ${r.id}`;
  return `${name}${p && !name.startsWith(p.name) ? ` · ${p.name}` : ''} (${r.status})`;
}

// A run <select> plus a <select> of that run's models; calls onpick({path, kind, adapter}).
export function modelPicker({ projects = [], preferRun, onpick, kinds }) {
  const runSel = h('select', { 'aria-label': 'Run' }, h('option', { value: '' }, 'loading runs…'));
  const modelSel = h('select', { 'aria-label': 'Model of the run' });
  const msg = h('span', { class: 'hint' });
  let models = [];
  const emit = () => {
    const m = models[Number(modelSel.value)];
    if (m && onpick) onpick(m);
  };
  const loadModels = async () => {
    clear(modelSel);
    models = [];
    if (!runSel.value) { msg.textContent = ''; return; }
    try {
      const list = await get(`/api/runs/${runSel.value}/models`);
      models = (Array.isArray(list) ? list : list.models || []).filter((m) => !kinds || kinds.includes(m.kind));
      const order = { final: 0, best: 1, adapter: 2, checkpoint: 3 };
      models.sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9) || (b.step || 0) - (a.step || 0));
      clear(modelSel, models.map((m, i) => h('option', { value: String(i) }, `${m.kind}${m.step ? ` @ step ${m.step}` : ''}`)));
      msg.textContent = models.length ? '' : 'this run has no saved model yet';
      emit();
    } catch (e) { msg.textContent = errorText(e); }
  };
  runSel.addEventListener('change', loadModels);
  modelSel.addEventListener('change', emit);
  runsList({ sort: 'created', order: 'desc' }).then((runs) => {
    clear(runSel, h('option', { value: '' }, runs.length ? '(choose a run)' : '(no runs yet)'),
      runs.map((r) => h('option', { value: String(r.id) }, runLabel(r, projects))));
    const pre = runs.find((r) => String(r.id) === String(preferRun)) || runs.find((r) => r.status === 'done');
    if (pre) { runSel.value = String(pre.id); loadModels(); }
  }).catch((e) => { msg.textContent = errorText(e); });
  return h('div', { class: 'row' }, runSel, modelSel, msg);
}

// Polls a job (/api/jobs/:id) until it ends; onupdate(job) after each poll.
export async function watchJob(id, onupdate, { interval = 400 } = {}) {
  for (;;) {
    let job;
    try { job = await get(`/api/jobs/${id}`); } catch (e) { onupdate({ status: 'error', error: { message: errorText(e) } }); return null; }
    onupdate(job);
    if (['done', 'error', 'cancelled', 'failed'].includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, interval));
  }
}
