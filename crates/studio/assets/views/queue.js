// Queue: the runs waiting for a slot (reorder with up / down, cancel), the runs now running,
// and how many may run at once.

import { get, post, put } from '../api.js';
import { h, clear, toast, errorText, fmtTime, statusBadge } from '../ui.js';
import { runsList } from '../pickers.js';

export async function mount(el, ctx) {
  let destroyed = false;
  const conc = h('input', { type: 'number', min: '1', max: '16', style: { width: '64px' }, 'aria-label': 'maximum concurrent runs' });
  const concMsg = h('span', { class: 'hint' });
  const saveConc = async () => {
    const n = Number(conc.value);
    if (!Number.isInteger(n) || n < 1) { concMsg.textContent = 'a whole number ≥ 1'; return; }
    try { await put('/api/settings', { max_concurrent_runs: n }); concMsg.textContent = 'saved'; load(); } catch (e) { concMsg.textContent = errorText(e); }
  };
  conc.addEventListener('change', saveConc);
  const queued = h('div', {});
  const running = h('div', {});
  clear(el, h('div', { class: 'stack' },
    h('div', { class: 'panel row' }, h('h3', {}, 'Concurrency'), h('label', { class: 'row' }, 'runs at once', conc), concMsg),
    h('div', { class: 'panel' }, h('h3', {}, 'Running'), running),
    h('div', { class: 'panel' }, h('h3', {}, 'Waiting'), queued)));

  const projectName = (id) => ctx.projects.find((p) => String(p.id) === String(id))?.name || `#${id}`;
  let order = [];

  async function load() {
    try {
      const [q, s, r] = await Promise.all([get('/api/queue'), get('/api/settings'), runsList({ status: 'running' })]);
      if (destroyed) return;
      if (document.activeElement !== conc) conc.value = s.max_concurrent_runs ?? 1;
      const list = Array.isArray(q) ? q : q.queued || q.runs || q.order || [];
      const qruns = await Promise.all(list.map((x) => (typeof x === 'object' ? x : get(`/api/runs/${x}`))));
      order = qruns.map((x) => x.id);
      clear(queued, qruns.length ? h('table', { class: 'tbl' }, h('thead', {}, h('tr', {}, ['#', 'run', 'project', 'created', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, qruns.map((x, i) => h('tr', { dataset: { run: x.id } },
          h('td', {}, String(i + 1)),
          h('td', {}, h('button', { class: 'link', type: 'button', onclick: () => ctx.navigate({ tab: 'dashboard', project: x.project_id, run: x.id }) }, x.name || `run ${x.id}`)),
          h('td', {}, projectName(x.project_id)), h('td', {}, fmtTime(x.created_at)),
          h('td', { class: 'row' },
            h('button', { class: 'small', type: 'button', disabled: i === 0, 'aria-label': `move ${x.name || x.id} up`, onclick: () => move(i, -1) }, '↑'),
            h('button', { class: 'small', type: 'button', disabled: i === qruns.length - 1, 'aria-label': `move ${x.name || x.id} down`, onclick: () => move(i, 1) }, '↓'),
            h('button', { class: 'small', type: 'button', onclick: () => cancel(x) }, 'Cancel')))))) : h('div', { class: 'hint' }, 'Nothing is waiting.'));
      clear(running, r.length ? h('table', { class: 'tbl' }, h('tbody', {}, r.map((x) => h('tr', {},
        h('td', {}, h('button', { class: 'link', type: 'button', onclick: () => ctx.navigate({ tab: 'dashboard', project: x.project_id, run: x.id }) }, x.name || `run ${x.id}`)),
        h('td', {}, projectName(x.project_id)), h('td', {}, statusBadge(x.status)),
        h('td', {}, `step ${x.summary?.step ?? 0}${x.summary?.total ? ` / ${x.summary.total}` : ''}`),
        h('td', {}, h('button', { class: 'small', type: 'button', onclick: () => stop(x) }, 'Stop')))))) : h('div', { class: 'hint' }, 'No run is training.'));
    } catch (e) { clear(queued, h('div', { class: 'error-box' }, errorText(e))); }
  }

  async function move(i, d) {
    const next = order.slice();
    [next[i], next[i + d]] = [next[i + d], next[i]];
    try { await post('/api/queue', { order: next }); } catch (e) { toast(errorText(e), 'error'); }
    load();
  }
  async function cancel(x) {
    try { await post(`/api/runs/${x.id}/cancel`); toast(`${x.name || `Run ${x.id}`} cancelled`, 'ok'); } catch (e) { toast(errorText(e), 'error'); }
    load();
  }
  async function stop(x) {
    try { await post(`/api/runs/${x.id}/stop`); toast('Stop requested', 'ok'); } catch (e) { toast(errorText(e), 'error'); }
    load();
  }

  await load();
  const t = setInterval(load, 2000);
  return { destroy() { destroyed = true; clearInterval(t); } };
}
