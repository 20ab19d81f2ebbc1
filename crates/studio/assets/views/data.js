// Data: ingest files / folders into a token dataset (job with progress), dataset statistics
// with a length histogram, and a preview where context-only (masked) tokens are dimmed.

import { get, post, qs } from '../api.js';
import { h, clear, toast, errorText, fmtCount, fmtBytes, fmtNum } from '../ui.js';
import { pathInput, watchJob, browse } from '../pickers.js';
import { barChart } from '../chart.js';

export async function mount(el, ctx) {
  let destroyed = false;
  const inputs = [];
  const list = h('div', { class: 'pill-list' });
  const renderInputs = () => clear(list, inputs.length ? inputs.map((p, i) => h('span', { class: 'pill' }, p,
    h('button', { class: 'link', type: 'button', 'aria-label': `remove ${p}`, onclick: () => { inputs.splice(i, 1); renderInputs(); } }, '×'))) : h('span', { class: 'hint' }, 'no inputs yet'));
  renderInputs();
  const typed = h('input', { type: 'text', class: 'grow', placeholder: '/path/to/file.txt or folder', 'aria-label': 'Input path' });
  const addTyped = () => { const v = typed.value.trim(); if (v) { inputs.push(v); typed.value = ''; renderInputs(); } };
  typed.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); addTyped(); } });
  const tok = pathInput({ label: 'Tokenizer', placeholder: 'model folder, tokenizer.json or tokenizer.bin' });
  const outDir = pathInput({ label: 'Output folder', placeholder: '(default: a new folder under the data dir)' });
  const valSplit = h('input', { type: 'number', value: '0.05', min: '0', max: '0.5', step: '0.01', style: { width: '80px' }, 'aria-label': 'validation split' });
  const ingestBtn = h('button', { type: 'button', class: 'primary', onclick: ingest }, 'Ingest');
  const bar = h('div', { class: 'progress', hidden: true }, h('i', { style: { width: '0%' } }));
  const jobMsg = h('div', { class: 'status-line' });
  const jobLog = h('div', { class: 'log', hidden: true });

  const statsPath = pathInput({ label: 'Dataset folder', placeholder: 'dataset folder (manifest.json)' });
  const statsBtn = h('button', { type: 'button', onclick: () => showStats(statsPath.input.value.trim()) }, 'Show');
  statsPath.input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') showStats(statsPath.input.value.trim()); });
  const statsBox = h('div', { class: 'stack' });
  const previewBox = h('div', {});

  clear(el, h('div', { class: 'grid-even' },
    h('div', { class: 'panel stack' }, h('h3', {}, 'Ingest'),
      h('div', { class: 'row' }, typed, h('button', { type: 'button', onclick: addTyped }, 'Add'),
        h('button', { type: 'button', onclick: async () => { const p = await browse(''); if (p) { inputs.push(p); renderInputs(); } } }, 'Browse…')),
      list,
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'tokenizer'), tok),
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'output dataset'), outDir),
      h('div', { class: 'row' }, h('label', { class: 'row' }, 'validation split', valSplit), ingestBtn),
      bar, jobMsg, jobLog),
    h('div', { class: 'panel stack' }, h('h3', {}, 'Dataset'), h('div', { class: 'row' }, h('div', { class: 'grow' }, statsPath), statsBtn), statsBox),
  ), h('div', { class: 'panel', style: { marginTop: '14px' } }, h('h3', {}, 'Preview'), h('p', { class: 'hint' }, 'Tokens the loss trains on are highlighted; context-only (masked) tokens are dimmed.'), previewBox));

  async function ingest() {
    if (!inputs.length && typed.value.trim()) addTyped();
    if (!inputs.length) { jobMsg.className = 'status-line bad'; jobMsg.textContent = 'Add at least one file or folder.'; return; }
    const body = { inputs: inputs.slice(), tokenizer: tok.input.value.trim(), val_split: Number(valSplit.value) };
    if (outDir.input.value.trim()) body.out = outDir.input.value.trim();
    ingestBtn.disabled = true;
    bar.hidden = false; bar.classList.add('indet'); jobLog.hidden = false; jobLog.textContent = '';
    jobMsg.className = 'status-line busy'; jobMsg.textContent = 'starting…';
    let job;
    try { job = await post('/api/ingest', body); } catch (e) {
      ingestBtn.disabled = false; bar.hidden = true; jobMsg.className = 'status-line bad'; jobMsg.textContent = errorText(e); return;
    }
    const final = await watchJob(job.id, (j) => {
      if (destroyed) return;
      const ev = j.events || [];
      const files = ev.filter((e) => e.type === 'ingest_file');
      const tokens = files.reduce((n, e) => n + (e.tokens || 0), 0);
      jobMsg.className = 'status-line busy';
      jobMsg.textContent = `${j.status}: ${files.length} files · ${fmtCount(tokens)} tokens`;
      jobLog.textContent = files.slice(-200).map((e) => `${e.file}  ${fmtCount(e.tokens)} tokens`).join('\n');
      jobLog.scrollTop = jobLog.scrollHeight;
    });
    ingestBtn.disabled = false;
    bar.classList.remove('indet');
    if (!final || destroyed) return;
    if (final.status === 'done') {
      bar.firstChild.style.width = '100%';
      const d = (final.events || []).find((e) => e.type === 'ingest_done') || {};
      const path = final.result?.path || (d.manifest ? d.manifest.replace(/\/manifest\.json$/, '') : body.out);
      jobMsg.className = 'status-line ok';
      jobMsg.textContent = `done: ${d.new_files ?? '?'} new files, ${d.skipped ?? 0} skipped, ${fmtCount(d.total_tokens)} tokens in ${d.shards ?? '?'} shards → ${path}${final.result?.bytes ? ` (${fmtBytes(final.result.bytes)})` : ''}`;
      if (path) { statsPath.input.value = path; showStats(path); }
    } else {
      bar.hidden = true;
      const e = final.error || (final.events || []).find((x) => x.type === 'error') || {};
      jobMsg.className = 'status-line bad';
      jobMsg.textContent = `${final.status}: ${typeof e === 'string' ? e : `${e.code ? `[${e.code}] ` : ''}${e.message || 'ingest failed'}`}`;
    }
  }

  async function showStats(path) {
    if (!path) return;
    clear(statsBox, h('div', { class: 'hint' }, 'loading…'));
    clear(previewBox);
    let r;
    try { r = await get(`/api/datasets/stats${qs({ path })}`); } catch (e) { clear(statsBox, h('div', { class: 'error-box' }, errorText(e))); return; }
    // `neuralforge info DATASET` facts: train_/val_ documents, tokens, trained tokens, ...
    const s = r.info || r;
    const rows = [];
    const add = (k, v) => rows.push(h('dt', {}, k), h('dd', {}, v));
    const sum = (k) => (s[`train_${k}`] ?? 0) + (s[`val_${k}`] ?? 0);
    add('documents', fmtCount(s.documents ?? sum('documents')));
    add('tokens', fmtCount(s.tokens ?? sum('tokens')));
    for (const split of ['train', 'val']) {
      if (s[`${split}_tokens`] === undefined) continue;
      const trained = s[`${split}_trained_tokens`];
      add(`${split} split`, `${fmtCount(s[`${split}_documents`])} docs · ${fmtCount(s[`${split}_tokens`])} tokens${trained !== undefined && trained !== s[`${split}_tokens`] ? ` · ${fmtCount(trained)} trained` : ''}`);
    }
    const shown = new Set(['path', 'documents', 'tokens']);
    for (const [k, v] of Object.entries(s)) {
      if (shown.has(k) || /^(train|val)_/.test(k) || k === 'histogram' || k === 'length_histogram') continue;
      if (v !== null && typeof v !== 'object') add(k.replace(/_/g, ' '), typeof v === 'number' ? fmtNum(v) : String(v));
    }
    const hist = h('div', {});
    clear(statsBox, h('dl', { class: 'kv' }, rows), hist);
    // Documents of the preview (up to 100) give the length histogram when the stats have none.
    let docs = [];
    try {
      const p = await get(`/api/datasets/preview${qs({ path, n: 100 })}`);
      docs = previewDocs(p);
    } catch (e) { clear(previewBox, h('div', { class: 'error-box' }, errorText(e))); }
    let bins = histogramBins(s.length_histogram || s.histogram);
    let caption = 'document length (tokens)';
    if (!bins.length && docs.length) { bins = lengthBins(docs.map((d) => d.tokens || 0)); caption += ` — first ${docs.length} documents`; }
    if (bins.length) clear(hist, h('h4', {}, caption), barChart(bins));
    if (docs.length) renderPreview(docs.slice(0, 3));
  }

  function renderPreview(docs) {
    clear(previewBox, docs.map((d, i) => h('div', { dataset: { doc: i } }, h('div', { class: 'hint' }, `${d.split || ''} document ${d.index ?? i} · ${d.tokens ?? '?'} tokens`),
      h('div', { class: 'preview-doc' }, pieces(d)))));
  }

  return { destroy() { destroyed = true; } };
}

// Documents of /api/datasets/preview: `data preview --json` info events (key "document").
function previewDocs(p) {
  if (Array.isArray(p)) return p;
  if (Array.isArray(p.events)) return p.events.filter((e) => e.type === 'info' && e.key === 'document').map((e) => e.value);
  return p.documents || p.docs || [];
}

// Equal-width bins over document lengths.
function lengthBins(lengths) {
  if (!lengths.length) return [];
  const max = Math.max(...lengths), min = Math.min(...lengths);
  const n = Math.min(20, Math.max(1, Math.ceil(Math.sqrt(lengths.length))));
  const w = Math.max(1, Math.ceil((max - min + 1) / n));
  const bins = Array.from({ length: n }, (_, i) => ({ label: fmtCount(min + i * w), count: 0 }));
  for (const l of lengths) bins[Math.min(n - 1, Math.floor((l - min) / w))].count++;
  return bins;
}

// Pieces of a preview document: segments {trained, text} (context-only ones dimmed), or
// token lists with per-token flags.
function pieces(d) {
  if (Array.isArray(d.segments)) return d.segments.map((g) => h('span', { class: `tok ${g.trained ? 'train' : 'ctx'}`, title: `${g.tokens} tokens${g.trained ? '' : ' · context only (not trained on)'}` }, g.text));
  const toks = Array.isArray(d.tokens) ? d.tokens : d.pieces || [];
  if (Array.isArray(toks) && toks.length && typeof toks[0] === 'object') {
    return toks.map((t) => {
      const trained = t.train ?? t.trained ?? (t.masked !== undefined ? !t.masked : t.mask !== undefined ? !!t.mask : true);
      return h('span', { class: `tok ${trained ? 'train' : 'ctx'}`, title: t.id !== undefined ? `id ${t.id}` : null }, t.text ?? t.piece ?? '');
    });
  }
  const texts = d.texts || d.token_texts || (Array.isArray(toks) ? toks.map(String) : []);
  const mask = d.mask || d.loss_mask || d.trained || [];
  if (texts.length) return texts.map((t, i) => h('span', { class: `tok ${mask.length && !mask[i] ? 'ctx' : 'train'}` }, t));
  return d.text || JSON.stringify(d);
}

function histogramBins(hg) {
  if (!hg) return [];
  if (Array.isArray(hg)) {
    return hg.map((b) => (Array.isArray(b) ? { label: String(b[0]), count: b[b.length - 1] } : { label: b.label ?? `${fmtCount(b.lo ?? b.min ?? b.from)}`, count: b.count ?? b.n ?? 0 }));
  }
  const edges = hg.edges || hg.bins || hg.bounds || [];
  const counts = hg.counts || [];
  return counts.map((c, i) => ({ label: edges[i] !== undefined ? fmtCount(edges[i]) : String(i), count: c }));
}
