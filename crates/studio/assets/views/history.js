// History: every run with its configuration and final numbers; filter and sort; select
// several to overlay their loss curves and compare configurations (differences highlighted).

import { get, post, qs } from '../api.js';
import { h, clear, toast, errorText, fmtNum, fmtCount, fmtDuration, fmtTime, toSeconds, statusBadge } from '../ui.js';
import { runsList, browse } from '../pickers.js';
import { Chart } from '../chart.js';

const COLORS = ['--c1', '--c2', '--c3', '--c4', '--c5', '--c6'];

export async function mount(el, ctx) {
  let runs = [];
  const selected = new Set();
  let sortKey = 'created', asc = false;
  let chart = null;
  const projSel = h('select', { 'aria-label': 'Project filter' }, h('option', { value: '' }, 'all projects'),
    ctx.projects.map((p) => h('option', { value: String(p.id), selected: String(p.id) === String(ctx.projectId) }, p.name)));
  const statusSel = h('select', { 'aria-label': 'Status filter' }, ['', 'done', 'running', 'queued', 'interrupted', 'error', 'cancelled'].map((s) => h('option', { value: s }, s || 'any status')));
  const text = h('input', { type: 'search', placeholder: 'filter by name or config', 'aria-label': 'Text filter' });
  const cmpBtn = h('button', { type: 'button', class: 'primary', disabled: true, onclick: compare }, 'Compare selected');
  // A run folder trained outside the studio (or before a reinstall) joins the history.
  const addBtn = h('button', { type: 'button', title: 'Add a run folder that holds events.ndjson', onclick: async () => {
    const path = await browse('');
    if (!path) return;
    try {
      const r = await post('/api/runs/import', { path });
      toast(`${r.name || `Run ${r.id}`} added`, 'ok');
      load();
    } catch (e) { toast(errorText(e), 'error'); }
  } }, 'Add run folder…');
  const table = h('div', { style: { overflow: 'auto' } });
  const cmpBox = h('div', { class: 'stack', style: { marginTop: '14px' } });
  for (const c of [projSel, statusSel]) c.addEventListener('change', load);
  text.addEventListener('input', render);
  clear(el, h('div', { class: 'toolbar' }, projSel, statusSel, text, cmpBtn, h('span', { class: 'hint' }, 'tick runs to compare them'), h('span', { class: 'grow' }), addBtn),
    h('div', { class: 'panel' }, table), cmpBox);

  const projectName = (id) => ctx.projects.find((p) => String(p.id) === String(id))?.name || `#${id}`;
  const duration = (r) => {
    const a = toSeconds(r.started_at), b = toSeconds(r.ended_at);
    return a && b ? b - a : r.summary?.elapsed_s ?? null;
  };
  const COLS = [
    { key: 'name', label: 'run', get: (r) => r.name || `run ${r.id}` },
    { key: 'project', label: 'project', get: (r) => projectName(r.project_id) },
    { key: 'status', label: 'status', get: (r) => r.status },
    { key: 'method', label: 'method', get: (r) => (Number(r.config?.lora_rank) > 0 ? `LoRA r${r.config.lora_rank}` : r.config?.init ? `scratch ${r.config.init}` : 'full') },
    { key: 'steps', label: 'steps', num: true, get: (r) => r.summary?.step ?? null, fmt: (v, r) => `${v ?? '—'}${r.summary?.total ? ` / ${r.summary.total}` : ''}` },
    { key: 'lr', label: 'lr', num: true, get: (r) => r.config?.lr ?? null, fmt: (v) => fmtNum(v) },
    { key: 'loss', label: 'final loss', num: true, get: (r) => r.summary?.final_loss ?? r.summary?.loss ?? null, fmt: (v) => fmtNum(v) },
    { key: 'val', label: 'best val', num: true, get: (r) => r.summary?.best_val_loss ?? null, fmt: (v) => fmtNum(v) },
    { key: 'tps', label: 'tokens/s', num: true, get: (r) => r.summary?.tokens_per_s ?? null, fmt: (v) => fmtCount(v) },
    { key: 'created', label: 'created', get: (r) => toSeconds(r.created_at) ?? 0, fmt: (v, r) => fmtTime(r.created_at) },
    { key: 'dur', label: 'duration', num: true, get: duration, fmt: (v) => fmtDuration(v) },
  ];

  async function load() {
    try {
      runs = await runsList({ project: projSel.value || undefined, status: statusSel.value || undefined, sort: 'created', order: 'desc' });
    } catch (e) { clear(table, h('div', { class: 'error-box' }, errorText(e))); return; }
    render();
  }

  function render() {
    const q = text.value.trim().toLowerCase();
    const col = COLS.find((c) => c.key === sortKey);
    const rows = runs.filter((r) => !q || `${r.name} ${JSON.stringify(r.config)}`.toLowerCase().includes(q))
      .sort((a, b) => {
        const x = col.get(a), y = col.get(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * (asc ? 1 : -1);
      });
    cmpBtn.disabled = selected.size < 2;
    cmpBtn.textContent = `Compare selected (${selected.size})`;
    clear(table, rows.length ? h('table', { class: 'tbl' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), COLS.map((c) => h('th', { class: c.num ? 'num' : '', 'aria-sort': c.key === sortKey ? (asc ? 'ascending' : 'descending') : null },
        h('button', { type: 'button', onclick: () => { if (sortKey === c.key) asc = !asc; else { sortKey = c.key; asc = !!c.num && c.key !== 'tps'; } render(); } },
          c.label, c.key === sortKey ? (asc ? ' ▲' : ' ▼') : ''))))),
      h('tbody', {}, rows.map((r) => h('tr', { dataset: { run: r.id } },
        h('td', {}, h('input', { type: 'checkbox', checked: selected.has(String(r.id)), 'aria-label': `select ${r.name || r.id}`, onchange: (ev) => { if (ev.target.checked) selected.add(String(r.id)); else selected.delete(String(r.id)); render(); } })),
        COLS.map((c) => {
          const v = c.get(r);
          if (c.key === 'name') return h('td', {}, h('button', { class: 'link', type: 'button', onclick: () => ctx.navigate({ tab: 'dashboard', project: r.project_id, run: r.id }) }, v));
          if (c.key === 'status') return h('td', {}, statusBadge(v));
          return h('td', { class: c.num ? 'num' : '' }, c.fmt ? c.fmt(v, r) : v ?? '—');
        }))))) : h('div', { class: 'empty' }, 'No runs match.'));
  }

  async function compare() {
    const ids = [...selected];
    let cmp;
    try { cmp = await get(`/api/compare${qs({ runs: ids.join(',') })}`); } catch (e) { clear(cmpBox, h('div', { class: 'error-box' }, errorText(e))); return; }
    const cr = cmp.runs || [];
    const diff = new Set(cmp.config_diff || []);
    const css = (v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim();
    const xSel = h('select', { 'aria-label': 'x axis' }, ['step', 'tokens', 'time'].map((x) => h('option', { value: x }, x === 'time' ? 'training time' : x)));
    const metricSel = h('select', { 'aria-label': 'metric' }, h('option', { value: 'loss' }, 'train loss'), h('option', { value: 'val_loss' }, 'val loss'));
    const ema = h('input', { type: 'range', min: '0', max: '0.99', step: '0.01', value: '0.6', 'aria-label': 'EMA smoothing' });
    const logBox = h('input', { type: 'checkbox', 'aria-label': 'log scale' });
    if (chart) chart.detach();
    chart = new Chart({
      title: 'Loss overlay', height: 300,
      series: cr.map((r, i) => ({ key: String(r.id), label: r.name || `run ${r.id}`, color: css(COLORS[i % COLORS.length]) })),
      onZoom: () => fill(),
    });
    chart.setSmoothing(0.6);
    ema.addEventListener('input', () => chart.setSmoothing(Number(ema.value)));
    logBox.addEventListener('change', () => chart.setLog(logBox.checked));
    const fill = async () => {
      const z = chart.zoom;
      await Promise.all(cr.map(async (r) => {
        try {
          const s = await get(`/api/runs/${r.id}/series${qs({ metric: metricSel.value, x: xSel.value, buckets: chart.buckets(), from: z?.[0], to: z?.[1] })}`);
          chart.setPoints(String(r.id), s.points || []);
        } catch (e) { chart.setPoints(String(r.id), []); }
      }));
    };
    xSel.addEventListener('change', () => { chart.setXKind(xSel.value); fill(); });
    metricSel.addEventListener('change', () => { chart.setSeriesList(chart.series.map((s) => ({ ...s, points: [], dots: metricSel.value === 'val_loss', smooth: metricSel.value !== 'val_loss' }))); fill(); });

    const keys = [...new Set(cr.flatMap((r) => Object.keys(r.config || {})))].sort((a, b) => (diff.has(b) - diff.has(a)) || a.localeCompare(b));
    const show = (v) => (v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v));
    const finals = [
      ['final loss', (r) => fmtNum(r.summary?.final_loss ?? r.summary?.loss)],
      ['best val loss', (r) => fmtNum(r.summary?.best_val_loss)],
      ['steps done', (r) => r.summary?.step ?? '—'],
      ['tokens/s', (r) => fmtCount(r.summary?.tokens_per_s)],
      ['status', (r) => r.status],
    ];
    clear(cmpBox,
      h('div', { class: 'toolbar' }, h('label', {}, 'metric', metricSel), h('label', {}, 'x axis', xSel), h('label', {}, 'smoothing', ema), h('label', {}, logBox, 'log scale'),
        h('button', { type: 'button', class: 'small', onclick: () => chart.resetZoom() }, 'Reset zoom')),
      chart.el,
      h('div', { class: 'panel' }, h('h3', {}, `Configurations (${diff.size} differing field${diff.size === 1 ? '' : 's'} highlighted)`),
        h('div', { style: { overflow: 'auto' } }, h('table', { class: 'tbl cmp' },
          h('thead', {}, h('tr', {}, h('th', {}, 'field'), cr.map((r, i) => h('th', {}, h('i', { class: 'swatch', style: { display: 'inline-block', width: '10px', height: '3px', background: css(COLORS[i % COLORS.length]), marginRight: '5px', verticalAlign: 'middle' } }), r.name || `run ${r.id}`)))),
          h('tbody', {},
            finals.map(([k, f]) => h('tr', {}, h('td', {}, h('b', {}, k)), cr.map((r) => h('td', {}, f(r))))),
            keys.map((k) => h('tr', { class: diff.has(k) ? 'diff' : '', dataset: { field: k } }, h('td', { class: 'mono' }, k), cr.map((r) => h('td', { class: 'mono' }, show(r.config?.[k]))))))))));
    fill();
  }

  await load();
  return { destroy() { if (chart) chart.detach(); } };
}
