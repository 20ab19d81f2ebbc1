// Import / Export: the CLI's import and export commands with their options, run as jobs
// with progress; the result path and size. Sources come from any run's models or a path.

import { post } from '../api.js';
import { h, clear, errorText, fmtBytes } from '../ui.js';
import { pathInput, modelPicker, watchJob } from '../pickers.js';

const DTYPES = { gguf: ['f32', 'f16', 'q8_0'], hf: ['f32', 'f16', 'bf16'], llama2c: ['f32'], peft: ['f32'] };

export async function mount(el, ctx) {
  let destroyed = false;

  // ---- import
  const impSrc = pathInput({ label: 'Import source', placeholder: 'model.gguf, a Hugging Face folder or a llama2.c .bin' });
  const impOut = pathInput({ label: 'Import output', placeholder: '(default: a new folder under the data dir)' });
  const impDtype = h('select', { 'aria-label': 'import dtype' }, ['f32', 'f16', 'bf16'].map((d) => h('option', { value: d }, d)));
  const impForce = h('input', { type: 'checkbox' });
  const impBtn = h('button', { type: 'button', class: 'primary', onclick: () => runJob('import', impBtn, impStatus, () => {
    const b = { source: impSrc.input.value.trim(), dtype: impDtype.value, force: impForce.checked };
    if (impOut.input.value.trim()) b.out = impOut.input.value.trim();
    return b;
  }) }, 'Import');
  const impStatus = jobStatus();

  // ---- export
  const expSrc = pathInput({ label: 'Export source', placeholder: 'model folder, checkpoint folder or adapter' });
  const picker = modelPicker({ projects: ctx.projects, preferRun: ctx.runId, onpick: (m) => {
    if (m.kind === 'adapter') { merge.input.value = m.path; if (m.base) expSrc.input.value = m.base; }
    else { expSrc.input.value = m.path; }
  } });
  const fmt = h('select', { 'aria-label': 'format' }, Object.keys(DTYPES).map((f) => h('option', { value: f }, f)));
  const dtype = h('select', { 'aria-label': 'dtype' });
  const fillDtypes = () => { clear(dtype, DTYPES[fmt.value].map((d) => h('option', { value: d }, d))); };
  fmt.addEventListener('change', fillDtypes);
  fillDtypes();
  const merge = pathInput({ label: 'Merge adapter', placeholder: '(optional) LoRA adapter folder to merge' });
  const expOut = pathInput({ label: 'Export output', placeholder: '(default: under the data dir’s exports/)' });
  const expBtn = h('button', { type: 'button', class: 'primary', onclick: () => runJob('export', expBtn, expStatus, () => {
    const b = { source: expSrc.input.value.trim(), format: fmt.value, dtype: dtype.value };
    if (merge.input.value.trim()) b.merge = merge.input.value.trim();
    if (expOut.input.value.trim()) b.out = expOut.input.value.trim();
    return b;
  }) }, 'Export');
  const expStatus = jobStatus();

  const f = (label, input) => h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input);
  clear(el, h('div', { class: 'grid-even' },
    h('div', { class: 'panel stack', 'aria-label': 'Import' }, h('h3', {}, 'Import a model'),
      f('source', impSrc), f('output folder', impOut),
      h('div', { class: 'row' }, f('dtype', impDtype), h('label', { class: 'row' }, impForce, 'replace an existing model folder')),
      h('div', { class: 'row' }, impBtn), impStatus.el),
    h('div', { class: 'panel stack', 'aria-label': 'Export' }, h('h3', {}, 'Export a model'),
      h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'from a run'), picker),
      f('source', expSrc),
      h('div', { class: 'row' }, f('format', fmt), f('dtype', dtype)),
      f('merge adapter', merge), f('output', expOut),
      h('div', { class: 'row' }, expBtn), expStatus.el)));

  function jobStatus() {
    const bar = h('div', { class: 'progress', hidden: true }, h('i', { style: { width: '0%' } }));
    const msg = h('div', { class: 'status-line' });
    const result = h('div', {});
    return { el: h('div', { class: 'stack' }, bar, msg, result), bar, msg, result };
  }

  async function runJob(kind, btn, st, bodyOf) {
    const body = bodyOf();
    if (!body.source) { st.msg.className = 'status-line bad'; st.msg.textContent = 'Choose a source first.'; return; }
    btn.disabled = true;
    st.bar.hidden = false; st.bar.classList.add('indet');
    st.msg.className = 'status-line busy'; st.msg.textContent = 'starting…';
    clear(st.result);
    let job;
    try { job = await post(`/api/${kind}`, body); } catch (e) {
      btn.disabled = false; st.bar.hidden = true; st.msg.className = 'status-line bad'; st.msg.textContent = errorText(e); return;
    }
    const t0 = performance.now();
    const final = await watchJob(job.id, (j) => {
      if (destroyed) return;
      const last = (j.events || []).filter((e) => e.type === 'phase' || e.type === 'info').slice(-1)[0];
      st.msg.textContent = `${j.status}${last ? ` · ${last.phase || last.key}` : ''} · ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    });
    btn.disabled = false;
    st.bar.classList.remove('indet');
    if (!final || destroyed) return;
    if (final.status === 'done') {
      st.bar.firstChild.style.width = '100%';
      st.msg.className = 'status-line ok';
      st.msg.textContent = `${kind} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
      const r = final.result || {};
      clear(st.result, h('dl', { class: 'kv' }, h('dt', {}, 'path'), h('dd', { class: 'mono', style: { textAlign: 'left' } }, r.path || '—'),
        h('dt', {}, 'size'), h('dd', { style: { textAlign: 'left' } }, fmtBytes(r.bytes))));
    } else {
      st.bar.hidden = true;
      const e = final.error || (final.events || []).find((x) => x.type === 'error') || {};
      st.msg.className = 'status-line bad';
      st.msg.textContent = `${final.status}: ${typeof e === 'string' ? e : `${e.code ? `[${e.code}] ` : ''}${e.message || `${kind} failed`}`}`;
    }
  }

  return { destroy() { destroyed = true; } };
}
