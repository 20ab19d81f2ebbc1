// Dashboard of one run: phase banner, cards, loss / val-loss, LR and throughput charts built
// from the server's buckets (/series) and kept live over SSE (/stream). A reload rebuilds
// everything from stored events; the run id lives in the URL hash.

import { get, post, del, qs, stream } from '../api.js';
import { h, clear, toast, errorText, fmtNum, fmtCount, fmtBytes, fmtDuration, fmtTime, toSeconds, confirmDialog, statusBadge, frameThrottle, debounce } from '../ui.js';
import { Chart } from '../chart.js';
import { runsList } from '../pickers.js';

const PHASE_TEXT = {
  loading: 'Loading the model and data…', preparing: 'Preparing the data…', training: 'Training',
  saving: 'Saving…', evaluating: 'Evaluating…', resuming: 'Resuming from the last checkpoint…',
};

export async function mount(el, ctx) {
  let runs = [];
  if (ctx.projectId) {
    try { runs = await runsList({ project: ctx.projectId, sort: 'created', order: 'desc' }); } catch (e) { toast(errorText(e), 'error'); }
  }
  let runId = ctx.runId;
  if (!runId && runs.length) { runId = String(runs[0].id); ctx.navigate({ run: runId }, true); return {}; }
  if (!runId) {
    clear(el, h('div', { class: 'empty stack', style: { alignItems: 'center' } },
      h('p', {}, ctx.projectId ? 'This project has no runs yet.' : 'Choose a project on the left.'),
      ctx.projectId ? h('button', { class: 'primary', onclick: () => ctx.navigate({ tab: 'config' }) }, 'Configure and start a run') : null));
    return {};
  }
  let run;
  try { run = await get(`/api/runs/${runId}`); } catch (e) {
    clear(el, h('div', { class: 'error-box' }, `Run ${runId}: ${errorText(e)}`));
    return {};
  }
  if (!runs.some((r) => String(r.id) === String(run.id))) runs.unshift(run);

  let destroyed = false;
  let es = null;
  let xKind = 'step';
  let zoom = null;
  // The stream replays from the start unless the run tells its last event id, so the step
  // counter follows the replayed events.
  let lastBatch = run.last_event_id ? run.summary?.step || 0 : 0;
  let liveDirty = false;
  let phase = run.summary?.phase || null;

  // ---- header: run picker and actions
  const runSel = h('select', { 'aria-label': 'Run', onchange: () => ctx.navigate({ run: runSel.value }) },
    runs.map((r) => h('option', { value: String(r.id), selected: String(r.id) === String(run.id) }, `${r.name || `run ${r.id}`} · ${r.status} · ${fmtTime(r.created_at)}`)));
  const stopBtn = h('button', { type: 'button', onclick: () => act('stop') }, 'Stop');
  const resumeBtn = h('button', { type: 'button', onclick: () => act('resume') }, 'Resume');
  const cancelBtn = h('button', { type: 'button', onclick: () => act('cancel') }, 'Cancel');
  const deleteBtn = h('button', { type: 'button', onclick: removeRun }, 'Delete');
  const liveDot = h('span', { class: 'hint', title: 'live connection' });
  const head = h('div', { class: 'row between', style: { marginBottom: '10px' } },
    h('div', { class: 'row' }, runSel, liveDot),
    h('div', { class: 'row' }, stopBtn, resumeBtn, cancelBtn, deleteBtn,
      h('a', { class: 'btn', href: `/api/runs/${run.id}/export?format=csv`, download: `run-${run.id}-events.csv` }, 'CSV'),
      h('a', { class: 'btn', href: `/api/runs/${run.id}/export?format=ndjson`, download: `run-${run.id}-events.ndjson` }, 'NDJSON')));

  const banner = h('div', { class: 'banner', role: 'status', 'aria-live': 'polite' });
  const cards = h('div', { class: 'cards' });

  // ---- charts
  const xSel = h('select', { 'aria-label': 'x axis' }, h('option', { value: 'step' }, 'step'), h('option', { value: 'tokens' }, 'tokens'), h('option', { value: 'time' }, 'training time'));
  const ema = h('input', { type: 'range', min: '0', max: '0.99', step: '0.01', value: '0.6', 'aria-label': 'EMA smoothing' });
  const emaVal = h('span', { class: 'mono' }, '0.60');
  const logBox = h('input', { type: 'checkbox', 'aria-label': 'log scale' });
  const resetBtn = h('button', { type: 'button', class: 'small', disabled: true, onclick: () => setZoom(null) }, 'Reset zoom');
  const toolbar = h('div', { class: 'toolbar' },
    h('label', {}, 'x axis', xSel),
    h('label', {}, 'smoothing', ema, emaVal),
    h('label', {}, logBox, 'log scale'),
    resetBtn,
    h('span', { class: 'hint' }, 'drag on a chart to zoom · double-click or Esc resets'));

  const css = (v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim();
  const lossChart = new Chart({ title: 'Loss', height: 280, series: [
    { key: 'loss', label: 'train loss', color: css('--c1') },
    { key: 'val_loss', label: 'val loss', color: css('--c2'), dots: true, band: false, smooth: false },
  ], onZoom: (z) => setZoom(z) });
  const lrChart = new Chart({ title: 'Learning rate', height: 170, series: [{ key: 'lr', label: 'lr', color: css('--c5'), smooth: false }], onZoom: (z) => setZoom(z), yFormat: (v) => fmtNum(v, 2) });
  const tpsChart = new Chart({ title: 'Throughput', height: 170, series: [{ key: 'tokens_per_s', label: 'tokens/s', color: css('--c3') }], onZoom: (z) => setZoom(z), yFormat: (v) => fmtCount(v) });
  const charts = [lossChart, lrChart, tpsChart];
  const metricsOf = new Map([[lossChart, ['loss', 'val_loss']], [lrChart, ['lr']], [tpsChart, ['tokens_per_s']]]);
  lossChart.setSmoothing(0.6);
  tpsChart.setSmoothing(0.6);
  ema.addEventListener('input', () => { emaVal.textContent = Number(ema.value).toFixed(2); lossChart.setSmoothing(Number(ema.value)); tpsChart.setSmoothing(Number(ema.value)); });
  logBox.addEventListener('change', () => lossChart.setLog(logBox.checked));
  xSel.addEventListener('change', () => { xKind = xSel.value; zoom = null; resetBtn.disabled = true; for (const c of charts) c.setXKind(xKind); loadAll(); });

  const logPanel = h('details', { class: 'panel', ontoggle: (ev) => { if (ev.target.open) loadLog(); } }, h('summary', {}, 'Log (stderr of the training process)'), h('pre', { class: 'log' }, '…'));
  const cmdPanel = h('details', { class: 'panel' }, h('summary', {}, 'Command and configuration'),
    h('div', { class: 'cmd' }, (run.command || []).join(' ')),
    h('pre', { class: 'log' }, JSON.stringify(run.config || {}, null, 2)));

  clear(el, head, banner, cards, toolbar,
    h('div', { class: 'charts' }, h('div', { class: 'wide' }, lossChart.el), lrChart.el, tpsChart.el),
    h('div', { class: 'stack', style: { marginTop: '12px' } }, logPanel, cmdPanel));

  // ---- rendering of the run's state
  const renderState = frameThrottle(() => { renderBanner(); renderCards(); renderButtons(); });

  function renderButtons() {
    const s = run.status;
    stopBtn.disabled = !(s === 'running');
    resumeBtn.disabled = !['interrupted', 'error', 'cancelled', 'stopped'].includes(s);
    cancelBtn.hidden = s !== 'queued';
    stopBtn.hidden = s === 'queued';
    deleteBtn.disabled = s === 'running' || s === 'stopping';
    deleteBtn.title = deleteBtn.disabled ? 'stop the run first' : '';
  }

  function renderBanner() {
    const s = run.status;
    const sum = run.summary || {};
    let cls = s, text;
    if (s === 'running') {
      const p = phase || sum.phase;
      if ((!p || p === 'loading' || p === 'preparing') && run.restarts > 0 && !sum.step) text = PHASE_TEXT.resuming;
      else text = PHASE_TEXT[p] || (p ? `${p}…` : 'Starting…');
      if (p === 'training' && sum.total) text = `Training — step ${fmtInt(sum.step)} of ${fmtInt(sum.total)}`;
    } else if (s === 'queued') text = `Queued${typeof run.queue_pos === 'number' ? ` (position ${run.queue_pos + 1})` : ''} — starts when a slot is free`;
    else if (s === 'stopping') text = 'Stopping — saving a checkpoint…';
    else if (s === 'interrupted') text = `Interrupted at step ${fmtInt(sum.step)}${sum.last_checkpoint ? ` — resume continues from the checkpoint at step ${sum.last_checkpoint.step}` : ''}`;
    else if (s === 'done') text = `Done — ${fmtInt(sum.step)} steps, final loss ${fmtNum(sum.final_loss ?? sum.loss)}${sum.best_val_loss != null ? `, best val loss ${fmtNum(sum.best_val_loss)}` : ''}`;
    else if (s === 'error') {
      const e = sum.error || run.error || {};
      text = `Error${e.code ? ` [${e.code}]` : ''}: ${e.message || 'the training process failed'}${run.exit_code != null ? ` (exit code ${run.exit_code})` : ''}`;
    } else if (s === 'cancelled') text = 'Cancelled before it started';
    else text = s;
    banner.className = `banner ${cls}`;
    clear(banner, h('span', { class: 'dot' }), h('span', { class: 'grow' }, text),
      run.restarts ? h('span', { class: 'hint' }, `${run.restarts} restart${run.restarts > 1 ? 's' : ''}`) : null,
      statusBadge(s));
  }

  function renderCards() {
    const s = run.summary || {};
    const started = toSeconds(run.started_at), ended = toSeconds(run.ended_at);
    const wall = started ? ((ended || (run.status === 'running' ? Date.now() / 1000 : started)) - started) : null;
    const train = s.train_time_s ?? s.elapsed_s;
    let eta = null;
    if (run.status === 'running' && s.step && s.total && train) eta = ((s.total - s.step) * train) / s.step;
    const card = (k, v, sub, id) => h('div', { class: 'card', dataset: { card: id } }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v), h('div', { class: 's' }, sub || '\u00a0'));
    const pct = s.total ? `${((100 * (s.step || 0)) / s.total).toFixed(1)}%` : '';
    const mfu = s.mfu != null ? `${(s.mfu * (s.mfu <= 1 ? 100 : 1)).toFixed(1)}%` : '—';
    clear(cards,
      card('step', fmtInt(s.step ?? 0), `of ${fmtInt(s.total)}${pct ? ` · ${pct}` : ''}`, 'step'),
      card('loss', fmtNum(s.loss), '', 'loss'),
      card('best loss', fmtNum(s.best_loss), '', 'best_loss'),
      card('val loss', fmtNum(s.val_loss), s.best_val_loss != null ? `best ${fmtNum(s.best_val_loss)}` : '', 'val_loss'),
      card('tokens/s', fmtCount(s.tokens_per_s), s.gflops != null ? `${fmtNum(s.gflops, 3)} GFLOP/s` : '', 'tokens_per_s'),
      card('MFU', mfu, s.mfu != null ? '' : 'not reported by the CLI', 'mfu'),
      card('ETA', eta != null ? fmtDuration(eta) : '—', '', 'eta'),
      card('elapsed', fmtDuration(wall ?? train), train != null ? `training ${fmtDuration(train)}` : '', 'elapsed'),
      s.peak_rss != null
        ? card('peak memory', fmtBytes(s.peak_rss), '', 'peak_rss')
        : card('memory', s.plan?.memory_bytes != null ? `≈ ${fmtBytes(s.plan.memory_bytes)}` : '—', 'planned (peak not reported)', 'peak_rss'),
      card('last checkpoint', s.last_checkpoint ? `step ${fmtInt(s.last_checkpoint.step)}` : '—', s.last_checkpoint?.path ? String(s.last_checkpoint.path).split('/').slice(-2).join('/') : '', 'checkpoint'));
  }

  // ---- data
  let loadSeq = 0;
  async function loadChart(chart, mySeq) {
    const metrics = metricsOf.get(chart);
    const from = zoom ? zoom[0] : undefined, to = zoom ? zoom[1] : undefined;
    const results = await Promise.all(metrics.map((m) => get(`/api/runs/${run.id}/series${qs({ metric: m, x: xKind, buckets: chart.buckets(), from, to })}`)
      .catch((e) => ({ error: e }))));
    if (destroyed || mySeq !== loadSeq) return;
    results.forEach((r, i) => {
      if (r.error) { toast(`${metrics[i]}: ${errorText(r.error)}`, 'error'); return; }
      chart.setPoints(metrics[i], r.points || [], r.x_range || undefined);
      if (i === 0) chart.setMarkers((r.markers || []).map((m) => ({ ...m, label: m.label || (m.step != null ? `step ${m.step}` : '') })));
    });
  }
  async function loadAll() {
    const mySeq = ++loadSeq;
    liveDirty = false;
    await Promise.all(charts.map((c) => loadChart(c, mySeq)));
  }
  function setZoom(z) {
    zoom = z;
    resetBtn.disabled = !z;
    for (const c of charts) { c.zoom = z; c.redraw(); }
    loadAll();
  }
  // For tokens/time axes (and to re-bucket long runs) the charts are refetched at a steady pace.
  const refetch = debounce(() => { if (!destroyed) loadAll(); }, 1200);

  function onEvent(type, e) {
    if (type === 'status') {
      if (e && e.deleted) { toast('This run was deleted'); return; }
      if (e && e.id !== undefined) { run = { ...run, ...e }; renderState(); }
      return;
    }
    if (type === 'phase') { phase = e.phase; renderState(); }
    if (xKind !== 'step') { liveDirty = true; refetch(); return; }
    if (type === 'step') {
      lrChart.append('lr', lastBatch + 1, e.lr);
      tpsChart.append('tokens_per_s', lastBatch + 1, e.tokens_per_s);
    } else if (type === 'batch') {
      lastBatch = e.batch ?? lastBatch + 1;
      lossChart.append('loss', lastBatch, e.avg_loss);
    } else if (type === 'val') {
      lossChart.append('val_loss', e.step ?? lastBatch, e.val_loss);
      lossChart.addMarker({ kind: 'val', x: e.step ?? lastBatch });
    } else if (type === 'checkpoint') {
      for (const c of charts) c.addMarker({ kind: 'checkpoint', x: e.step ?? lastBatch, label: `step ${e.step}` });
    } else if (type === 'restart') {
      if (e.step != null) lastBatch = e.step;
      for (const c of charts) c.addMarker({ kind: 'restart', x: e.step ?? lastBatch, label: e.reason || '' });
    } else if (type === 'done' || type === 'error') {
      refetch();
    }
    if (lossChart.pointCount() > lossChart.buckets() * 3) refetch();
  }

  async function act(what) {
    try {
      const r = await post(`/api/runs/${run.id}/${what}`);
      if (r && r.id !== undefined) run = { ...run, ...r };
      renderState();
      toast(`${what === 'stop' ? 'Stop requested' : what === 'resume' ? 'Resuming' : 'Cancelled'}`, 'ok');
      if (what === 'resume') openStream();
    } catch (e) { toast(`${what}: ${errorText(e)}`, 'error'); }
  }

  async function removeRun() {
    const files = h('input', { type: 'checkbox' });
    const ok = await confirmDialog('Delete run', `Delete ${run.name || `run ${run.id}`} and its stored events?`, 'Delete',
      h('label', { class: 'row' }, files, 'also delete the run folder on disk ', h('code', {}, run.run_dir || '')));
    if (!ok) return;
    try {
      await del(`/api/runs/${run.id}${qs({ delete_files: files.checked ? 'true' : undefined })}`);
      toast('Run deleted', 'ok');
      ctx.navigate({ run: null });
    } catch (e) { toast(errorText(e), 'error'); }
  }

  async function loadLog() {
    const pre = logPanel.querySelector('pre');
    try { pre.textContent = (await get(`/api/runs/${run.id}/log`)) || '(empty)'; pre.scrollTop = pre.scrollHeight; } catch (e) { pre.textContent = errorText(e); }
  }

  function openStream() {
    if (es) es.close();
    // The charts already hold the stored buckets; replayed events below their last x are skipped.
    es = stream(`/api/runs/${run.id}/stream${qs({ after: run.last_event_id })}`, { '*': onEvent }, (st) => {
      liveDot.textContent = st === 'open' ? '● live' : st === 'reconnecting' ? '○ reconnecting…' : '';
      if (st === 'open' && liveDirty) loadAll();
    });
  }

  renderState();
  await loadAll();
  if (!destroyed) openStream();
  const tick = setInterval(() => { if (run.status === 'running') renderState(); }, 1000);

  return {
    destroy() {
      destroyed = true;
      clearInterval(tick);
      if (es) es.close();
      for (const c of charts) c.detach();
    },
  };
}

function fmtInt(v) { return v == null ? '—' : Math.round(v).toLocaleString('en-US'); }
