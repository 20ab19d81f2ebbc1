// Config: every `train` option from /api/options grouped as the CLI groups them, with the
// CLI's defaults; presets; method-aware defaults; live validation through the CLI's own dry
// run (/api/validate) with its message shown beside the field it names; a pre-flight panel;
// the equivalent command line; Start / Queue.

import { get, put, post, del, cached } from '../api.js';
import { h, clear, debounce, toast, errorText, fmtBytes, fmtCount, fmtNum, fmtDuration, shellJoin, copyText, confirmDialog } from '../ui.js';
import { pathInput, runsList } from '../pickers.js';

const GROUP_ORDER = ['model', 'data', 'method', 'optimizer', 'schedule', 'validation and checkpoints', 'lora'];
// Flags the studio sets itself or that make no sense in a form.
const HIDDEN = new Set(['config', 'resume', 'no_progress', 'json', 'dry_run', 'help', 'out']); // the studio picks the run folder

// Suggested values per training method, applied to fields the user has not set.
export const METHODS = {
  scratch: { label: 'From scratch', needs: 'init', defaults: { lr: 3e-3, warmup: 100, lora_rank: 0 } },
  full: { label: 'Full fine-tune', needs: 'model', defaults: { lr: 5e-5, warmup: 20, lora_rank: 0 } },
  lora: { label: 'LoRA', needs: 'model', defaults: { lr: 2e-4, warmup: 20, lora_rank: 8, lora_alpha: 16, lora_targets: 'q,k,v,o' } },
};

export const keyOf = (o) => (o.name || o.flag.replace(/^--/, '')).replace(/-/g, '_');

export function methodOf(cfg) {
  if (Number(cfg.lora_rank) > 0) return 'lora';
  if (cfg.init && !cfg.model) return 'scratch';
  if (cfg.model) return 'full';
  return null;
}

function parseValue(o, raw) {
  if (o.kind === 'bool') return raw ? true : undefined;
  if (raw === '' || raw === undefined || raw === null) return undefined;
  if (o.kind === 'int') {
    if (!/^-?\d+$/.test(String(raw).trim())) throw new Error(`${o.flag}: expected a whole number, got “${raw}”`);
    return Number(raw);
  }
  if (o.kind === 'float') {
    const v = Number(String(raw).trim());
    if (!Number.isFinite(v)) throw new Error(`${o.flag}: expected a number, got “${raw}”`);
    return v;
  }
  return String(raw);
}

export async function mount(el, ctx) {
  if (!ctx.projectId) return welcome(el, ctx);
  let project;
  try {
    project = await get(`/api/projects/${ctx.projectId}`);
  } catch (e) {
    clear(el, h('div', { class: 'error-box' }, `Project ${ctx.projectId}: ${errorText(e)}`));
    return {};
  }
  let schema, presets = [];
  try {
    schema = await cached('/api/options');
  } catch (e) {
    clear(el, h('div', { class: 'error-box' }, `Options: ${errorText(e)}`));
    return {};
  }
  try { presets = await cached('/api/presets'); } catch { presets = []; }
  const options = (schema.options || schema).filter((o) => !HIDDEN.has(keyOf(o)));
  const config = { ...(project.config || {}) };
  const inputs = new Map(); // key -> {o, input, err, box}
  const localErrors = new Map();
  let lastResult = null;
  let destroyed = false;

  // ---- header
  const nameIn = h('input', { type: 'text', value: project.name, 'aria-label': 'Project name', class: 'grow', style: { fontWeight: 600, fontSize: '14px' } });
  nameIn.addEventListener('change', () => save());
  const saveState = h('span', { class: 'hint' }, 'saved');
  const header = h('div', { class: 'row between', style: { marginBottom: '10px' } },
    h('div', { class: 'row grow' }, nameIn, saveState),
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'small', onclick: removeProject }, 'Delete project')));

  // ---- presets and method
  const presetBar = h('div', { class: 'row' }, h('span', { class: 'field-label' }, 'Presets'),
    presets.map((p) => h('button', { type: 'button', class: 'small', title: JSON.stringify(p.config), onclick: () => applyPreset(p) }, p.name)));
  const methodBtns = Object.entries(METHODS).map(([k, m]) => h('button', { type: 'button', dataset: { method: k }, 'aria-pressed': 'false', onclick: () => setMethod(k) }, m.label));
  const methodBar = h('div', { class: 'row' }, h('span', { class: 'field-label' }, 'Method'), h('div', { class: 'seg', role: 'group', 'aria-label': 'Training method' }, methodBtns));

  // ---- option groups
  const groups = new Map();
  for (const o of options) {
    const g = (o.group || 'other').toLowerCase();
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(o);
  }
  const gkeys = [...groups.keys()].sort((a, b) => {
    const ia = GROUP_ORDER.indexOf(a), ib = GROUP_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const form = h('form', { class: 'panel', onsubmit: (ev) => ev.preventDefault(), 'aria-label': 'Training options' },
    gkeys.map((g) => h('div', { class: 'opt-group' },
      h('h4', {}, groups.get(g)[0].group || g),
      h('div', { class: 'opts' }, groups.get(g).map(optionField)))));

  function optionField(o) {
    const key = keyOf(o);
    const id = `opt-${key}`;
    const v = config[key];
    let input, box;
    const onEdit = () => edited(key);
    if (o.kind === 'bool') {
      input = h('input', { type: 'checkbox', id, checked: !!v });
      input.addEventListener('change', onEdit);
      box = input;
    } else if (o.kind === 'choice' && o.choices?.length) {
      input = h('select', { id }, h('option', { value: '' }, o.default != null ? `(default: ${o.default})` : '(not set)'),
        o.choices.map((c) => h('option', { value: String(c) }, String(c))));
      input.value = v === undefined ? '' : String(v);
      input.addEventListener('change', onEdit);
      box = input;
    } else if (o.kind === 'path') {
      box = pathInput({ value: v ?? '', placeholder: o.default ?? '', id, label: o.flag, onchange: onEdit });
      input = box.input;
    } else {
      input = h('input', {
        type: 'text', id, value: v ?? '', placeholder: o.default ?? '', spellcheck: 'false',
        inputmode: o.kind === 'int' ? 'numeric' : o.kind === 'float' ? 'decimal' : null,
      });
      input.addEventListener('input', onEdit);
      box = input;
    }
    const err = h('div', { class: 'err', id: `${id}-err`, role: 'alert' });
    input.setAttribute('aria-describedby', `${id}-err`);
    const range = o.range || (o.min !== undefined || o.max !== undefined ? `${o.min ?? ''}…${o.max ?? ''}` : null);
    const dflt = [o.default != null ? `default ${o.default}` : null, range ? `range ${range}` : null, o.value_name && o.kind !== 'bool' && o.value_name !== key.toUpperCase() ? o.value_name : null].filter(Boolean).join(' · ');
    const wrap = h('div', { class: `opt${v !== undefined ? ' set' : ''}`, dataset: { key } },
      h('div', { class: 'opt-head' }, h('label', { class: 'flag', for: id }, o.flag), h('span', { class: 'dflt', title: dflt }, dflt)),
      box,
      o.help ? h('div', { class: 'help' }, o.help) : null,
      err);
    inputs.set(key, { o, input, err, wrap });
    return wrap;
  }

  function readField(key) {
    const { o, input } = inputs.get(key);
    const raw = o.kind === 'bool' ? input.checked : input.value;
    return parseValue(o, raw);
  }

  function edited(key) {
    const { err, input, wrap } = inputs.get(key);
    try {
      const v = readField(key);
      if (v === undefined) delete config[key]; else config[key] = v;
      localErrors.delete(key);
      err.textContent = '';
      input.classList.remove('invalid');
      wrap.classList.toggle('set', v !== undefined);
    } catch (e) {
      localErrors.set(key, e.message);
      err.textContent = e.message;
      input.classList.add('invalid');
    }
    refreshMethod();
    schedule();
  }

  function setField(key, v) {
    const f = inputs.get(key);
    if (v === undefined || v === null || v === '') delete config[key]; else config[key] = v;
    if (!f) return;
    if (f.o.kind === 'bool') f.input.checked = !!v;
    else f.input.value = v === undefined || v === null ? '' : String(v);
    f.wrap.classList.toggle('set', config[key] !== undefined);
  }

  function applyPreset(p) {
    // A preset replaces the settings but keeps the user's paths (data, tokenizer, model, out).
    const keep = {};
    for (const [k, v] of Object.entries(config)) if (inputs.get(k)?.o.kind === 'path' && !(k in (p.config || {}))) keep[k] = v;
    for (const k of Object.keys(config)) setField(k, undefined);
    for (const [k, v] of Object.entries({ ...(p.config || {}), ...keep })) setField(k, v);
    toast(`Preset “${p.name}” applied`);
    refreshMethod();
    schedule();
  }

  function setMethod(m) {
    const prev = methodOf(config);
    const prevDefaults = prev ? METHODS[prev].defaults : {};
    for (const [k, v] of Object.entries(METHODS[m].defaults)) {
      // Replace a value only when the user did not choose it (unset or the previous method's suggestion).
      if (config[k] === undefined || config[k] === prevDefaults[k] || k === 'lora_rank') setField(k, v === 0 && k === 'lora_rank' ? undefined : v);
    }
    if (m === 'scratch') { setField('model', undefined); if (!config.init) setField('init', 'tiny'); }
    else setField('init', undefined);
    refreshMethod();
    const need = METHODS[m].needs;
    if (!config[need]) inputs.get(need)?.input.focus();
    schedule();
  }

  function refreshMethod() {
    const m = methodOf(config);
    for (const b of methodBtns) b.setAttribute('aria-pressed', String(b.dataset.method === m));
  }

  // ---- side: status, pre-flight, command, start
  const vstatus = h('div', { class: 'status-line busy' }, 'not validated yet');
  const topErr = h('div');
  const preflight = h('dl', { class: 'kv' });
  const cmdBox = h('div', { class: 'cmd', 'aria-label': 'Equivalent command' }, '—');
  const copyBtn = h('button', { type: 'button', class: 'small', disabled: true, onclick: () => lastResult?.command && copyText(shellJoin(lastResult.command)) }, 'Copy');
  const autoResume = h('input', { type: 'checkbox', checked: true });
  const maxRestarts = h('input', { type: 'number', min: '0', max: '20', value: '3', style: { width: '60px' } });
  const startBtn = h('button', { type: 'button', class: 'primary', onclick: () => launch(false) }, 'Start run');
  const queueBtn = h('button', { type: 'button', onclick: () => launch(true) }, 'Add to queue');
  const side = h('div', { class: 'stack sticky' },
    h('div', { class: 'panel' }, h('h3', {}, 'Validation'), vstatus, topErr),
    h('div', { class: 'panel' }, h('h3', {}, 'Pre-flight'), preflight),
    h('div', { class: 'panel' }, h('div', { class: 'row between' }, h('h3', {}, 'Command'), copyBtn), cmdBox),
    h('div', { class: 'panel stack' },
      h('div', { class: 'row' }, h('label', { class: 'row' }, autoResume, 'Resume automatically after a crash'),
        h('label', { class: 'row' }, 'max restarts', maxRestarts)),
      h('div', { class: 'row' }, startBtn, queueBtn)));

  clear(el, header, h('div', { class: 'grid2' },
    h('div', { class: 'stack' }, h('div', { class: 'panel stack' }, presetBar, methodBar), form), side));
  refreshMethod();

  // ---- validation and saving
  let seq = 0;
  const validate = async () => {
    const mine = ++seq;
    if (localErrors.size) {
      vstatus.className = 'status-line bad';
      vstatus.textContent = [...localErrors.values()][0];
      return;
    }
    vstatus.className = 'status-line busy';
    vstatus.textContent = 'checking with the CLI (dry run)…';
    let r;
    try {
      r = await post('/api/validate', { config });
    } catch (e) {
      if (mine !== seq || destroyed) return;
      showResult({ ok: false, error: { message: errorText(e), code: e.code } });
      return;
    }
    if (mine !== seq || destroyed) return;
    showResult(r);
  };
  const schedule = debounce(() => { validate(); save(); }, 350);

  function clearFieldErrors() {
    for (const [k, f] of inputs) if (!localErrors.has(k)) { f.err.textContent = ''; f.input.classList.remove('invalid'); }
  }

  function fieldOfMessage(msg) {
    const flags = String(msg).match(/--[a-z][a-z0-9-]*/g) || [];
    for (const fl of flags) {
      const k = fl.slice(2).replace(/-/g, '_');
      if (inputs.has(k)) return k;
    }
    // "lr: ..." / "`batch_size` ..." styles
    for (const k of inputs.keys()) if (new RegExp(`(^|[\\s\`'"])${k}([\\s\`'":=]|$)`).test(msg)) return k;
    return null;
  }

  function showResult(r) {
    lastResult = r;
    clearFieldErrors();
    clear(topErr);
    if (r.ok) {
      vstatus.className = 'status-line ok';
      const warnings = r.warnings || r.plan?.warnings || r.dry_run?.warnings || [];
      vstatus.textContent = '✓ the CLI accepts this configuration';
      if (warnings.length) topErr.append(h('ul', { class: 'hint' }, warnings.map((w) => h('li', {}, typeof w === 'string' ? w : w.message || JSON.stringify(w)))));
      renderPreflight(r);
    } else {
      const e = r.error || {};
      const msg = typeof e === 'string' ? e : e.message || 'invalid configuration';
      vstatus.className = 'status-line bad';
      vstatus.textContent = `✗ ${e.code ? `[${e.code}] ` : ''}the CLI refuses this configuration`;
      topErr.append(h('div', { class: 'error-box' }, msg));
      const k = fieldOfMessage(msg);
      if (k) {
        const f = inputs.get(k);
        f.err.textContent = msg;
        f.input.classList.add('invalid');
      }
      clear(preflight, h('dd', { class: 'muted', style: { gridColumn: '1 / -1', textAlign: 'left' } }, 'fix the error to see the plan'));
    }
    if (r.command) { cmdBox.textContent = shellJoin(r.command); copyBtn.disabled = false; }
    else { cmdBox.textContent = '—'; copyBtn.disabled = true; }
    startBtn.disabled = queueBtn.disabled = !r.ok;
  }

  async function renderPreflight(r) {
    const plan = r.plan || {};
    const init = r.init || {};
    const resolved = r.config || {};
    const rows = [];
    const add = (k, v, extra) => rows.push(h('dt', {}, k), h('dd', {}, v, extra || null));
    add('parameters', fmtCount(init.params ?? plan.params));
    add('trainable', `${fmtCount(init.trainable_params ?? plan.trainable_params)}${init.params && init.trainable_params ? ` (${((init.trainable_params / init.params) * 100).toFixed(init.trainable_params === init.params ? 0 : 2)}%)` : ''}`);
    if (init.layers) add('shape', `${init.layers} layers · dim ${init.dim} · ${init.heads} heads · seq ${init.seq} · vocab ${init.vocab}`);
    if (init.device) add('device', `${init.device}${init.precision ? ` · ${init.precision} products` : ''}`);
    const mem = plan.memory_bytes;
    const free = r.free_memory_bytes ?? r.dry_run?.free_memory_bytes ?? plan.free_memory_bytes ?? r.system?.free_memory_bytes;
    if (mem !== undefined) {
      const frac = free ? mem / free : null;
      add('memory', `${fmtBytes(mem)}${free ? ` of ${fmtBytes(free)} free` : ''}`,
        frac !== null ? h('div', { class: `meter${frac > 0.9 ? ' bad' : frac > 0.6 ? ' warn' : ''}` }, h('i', { style: { width: `${Math.min(100, frac * 100)}%` } })) : null);
    }
    const ckpt = plan.checkpoint_bytes ?? estimateCheckpoint(init, resolved);
    if (ckpt) {
      const keep = Number(resolved.keep_checkpoints ?? config.keep_checkpoints ?? 0);
      const disk = plan.disk_bytes ?? (keep ? ckpt * keep : null);
      add('checkpoint', `${plan.checkpoint_bytes ? '' : '≈ '}${fmtBytes(ckpt)} each${disk ? ` · ${fmtBytes(disk)} on disk` : ''}`);
    }
    add('tokens / step', fmtCount(plan.tokens_per_step));
    add('total tokens', fmtCount(plan.total_tokens));
    add('train tokens', fmtCount(plan.train_tokens));
    add('epochs', plan.epochs !== undefined ? fmtNum(plan.epochs, 3) : '—');
    if (plan.val_windows !== undefined) add('val windows', fmtCount(plan.val_windows));
    if (plan.gflop_per_step !== undefined) add('GFLOP / step', fmtNum(plan.gflop_per_step, 3));
    const eta = h('dd', {}, 'after the first measured step');
    rows.push(h('dt', {}, 'ETA'), eta);
    clear(preflight, rows);
    // ETA from this project's latest measured throughput.
    try {
      const runs = await runsList({ project: ctx.projectId, sort: 'created', order: 'desc' });
      const measured = runs.find((x) => x.summary && x.summary.tokens_per_s > 0);
      const steps = resolved.steps ?? config.steps;
      if (measured && plan.tokens_per_step && steps) {
        eta.textContent = `≈ ${fmtDuration((plan.tokens_per_step * steps) / measured.summary.tokens_per_s)} (at ${fmtCount(measured.summary.tokens_per_s)} tok/s of ${measured.name || `run ${measured.id}`})`;
      }
    } catch { /* keep the placeholder */ }
  }

  const save = debounce(async () => {
    saveState.textContent = 'saving…';
    try {
      await put(`/api/projects/${ctx.projectId}`, { name: nameIn.value.trim() || project.name, config });
      saveState.textContent = 'saved';
      window.dispatchEvent(new Event('nf:projects-changed'));
    } catch (e) {
      saveState.textContent = `not saved: ${errorText(e)}`;
    }
  }, 600);

  async function launch(queueOnly) {
    startBtn.disabled = queueBtn.disabled = true;
    try {
      save.cancel?.();
      await put(`/api/projects/${ctx.projectId}`, { name: nameIn.value.trim() || project.name, config });
      const run = await post(`/api/projects/${ctx.projectId}/runs`, { config: {}, auto_resume: autoResume.checked, max_restarts: Number(maxRestarts.value) || 0 });
      if (queueOnly) {
        toast(`${run.name || `Run ${run.id}`} added (${run.status}${typeof run.queue_pos === 'number' ? ` #${run.queue_pos + 1}` : ''})`, 'ok');
      } else {
        ctx.navigate({ tab: 'dashboard', run: run.id });
      }
    } catch (e) {
      toast(`Could not start: ${errorText(e)}`, 'error');
    } finally {
      if (!destroyed) startBtn.disabled = queueBtn.disabled = !(lastResult && lastResult.ok);
    }
  }

  async function removeProject() {
    if (!(await confirmDialog('Delete project', `Delete “${project.name}” and its run records? Run folders on disk are kept.`))) return;
    try {
      await del(`/api/projects/${ctx.projectId}`);
      window.dispatchEvent(new Event('nf:projects-changed'));
      ctx.navigate({ project: null, tab: 'config' });
    } catch (e) { toast(errorText(e), 'error'); }
  }

  validate();
  return { destroy() { destroyed = true; schedule.cancel(); } };
}

// Weights (f32) plus the two AdamW moments of the trainable part.
function estimateCheckpoint(init, cfg) {
  if (!init.params) return null;
  const trainable = init.trainable_params ?? init.params;
  const lora = Number(cfg.lora_rank) > 0;
  return (lora ? trainable : init.params) * 4 + trainable * 8;
}

function welcome(el, ctx) {
  clear(el, h('div', { class: 'empty stack', style: { alignItems: 'center' } },
    h('h2', {}, 'Welcome to NeuralForge Studio'),
    h('p', {}, ctx.projects.length ? 'Pick a project on the left, or create a new one.' : 'Create a project to configure and train a model.'),
    h('button', { class: 'primary', onclick: () => document.getElementById('new-project').click() }, 'New project (n)')));
  return {};
}
