// Generate: pick a model (a run's final / best / checkpoint / adapter, or a typed path), a
// prompt or a multi-turn chat, sampling controls; text streams token by token over SSE.

import { get, post, stream } from '../api.js';
import { h, clear, toast, errorText, fmtNum, fmtTime, frameThrottle } from '../ui.js';
import { modelPicker, pathInput } from '../pickers.js';

export async function mount(el, ctx) {
  let destroyed = false;
  let es = null;
  let genId = null;
  let model = { path: '', adapter: '' };
  const messages = []; // chat turns {role, content}

  // ---- model
  const pathBox = pathInput({ label: 'Model path', placeholder: 'model folder, .gguf or checkpoint', onchange: (v) => { model.path = v; } });
  const adapterBox = pathInput({ label: 'Adapter path', placeholder: '(optional) LoRA adapter folder', onchange: (v) => { model.adapter = v; } });
  const tokBox = pathInput({ label: 'Tokenizer path', placeholder: '(optional) tokenizer to use instead of the model’s own (e.g. one with a chat template)' });
  const picker = modelPicker({
    projects: ctx.projects, preferRun: ctx.runId,
    onpick: (m) => {
      if (m.kind === 'adapter') {
        adapterBox.input.value = m.path; model.adapter = m.path;
        if (m.base) { pathBox.input.value = m.base; model.path = m.base; }
      } else { pathBox.input.value = m.path; model.path = m.path; adapterBox.input.value = ''; model.adapter = ''; }
    },
  });

  // ---- sampling
  const num = (value, attrs = {}) => h('input', { type: 'number', value, style: { width: '82px' }, ...attrs });
  const temp = num('0.8', { step: '0.05', min: '0', 'aria-label': 'temperature' });
  const topK = num('40', { step: '1', min: '0', 'aria-label': 'top-k' });
  const topP = num('0.95', { step: '0.01', min: '0', max: '1', 'aria-label': 'top-p' });
  const maxTok = num('200', { step: '1', min: '1', 'aria-label': 'max tokens' });
  const seed = num('', { step: '1', min: '0', placeholder: 'random', 'aria-label': 'seed' });
  const lab = (t, i) => h('label', { class: 'field' }, h('span', { class: 'field-label' }, t), i);
  // Token probabilities (prompt mode): each token tinted by how unlikely the model found it,
  // its top 5 alternatives on hover (`generate --logprobs 5`, the model's own distribution).
  const probs = h('input', { type: 'checkbox', 'aria-label': 'token probabilities' });
  const probsLab = h('label', { class: 'field', title: 'Tint each token by how unlikely the model found it; hover a token for its top 5 alternatives' }, h('span', { class: 'field-label' }, 'probabilities'), probs);
  const sampling = h('div', { class: 'row' }, lab('temperature', temp), lab('top-k', topK), lab('top-p', topP), lab('max tokens', maxTok), lab('seed', seed), probsLab);

  // ---- mode
  let mode = 'prompt';
  const modeBtns = ['prompt', 'chat'].map((m) => h('button', { type: 'button', 'aria-pressed': String(m === mode), onclick: () => setMode(m) }, m === 'prompt' ? 'Prompt' : 'Chat'));
  const system = h('textarea', { rows: 2, placeholder: 'System message (optional)', 'aria-label': 'System message' });
  const prompt = h('textarea', { rows: 4, placeholder: 'Once upon a time', 'aria-label': 'Prompt' });
  const genBtn = h('button', { type: 'button', class: 'primary', onclick: () => generate() }, 'Generate');
  const stopBtn = h('button', { type: 'button', disabled: true, onclick: stop }, 'Stop');
  const clearBtn = h('button', { type: 'button', onclick: () => { messages.length = 0; renderChat(); } }, 'New chat');
  const out = h('div', { class: 'gen-out', 'aria-live': 'polite', 'aria-label': 'Generated text' });
  const chatBox = h('div', { class: 'chat', 'aria-live': 'polite' });
  const stats = h('div', { class: 'status-line' });
  prompt.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey || (mode === 'chat' && !ev.shiftKey))) { ev.preventDefault(); generate(); } });

  const history = h('div', {});
  const main = h('div', { class: 'stack' },
    h('div', { class: 'panel stack' }, h('h3', {}, 'Model'), picker,
      h('div', { class: 'row' }, h('span', { class: 'field-label', style: { width: '60px' } }, 'path'), h('div', { class: 'grow' }, pathBox)),
      h('div', { class: 'row' }, h('span', { class: 'field-label', style: { width: '60px' } }, 'adapter'), h('div', { class: 'grow' }, adapterBox)),
      h('div', { class: 'row' }, h('span', { class: 'field-label', style: { width: '60px' } }, 'tokenizer'), h('div', { class: 'grow' }, tokBox))),
    h('div', { class: 'panel stack' },
      h('div', { class: 'row between' }, h('div', { class: 'seg', role: 'group', 'aria-label': 'Mode' }, modeBtns), sampling),
      system, out, chatBox, prompt,
      h('div', { class: 'row' }, genBtn, stopBtn, clearBtn, h('span', { class: 'hint' }, 'Ctrl+Enter generates'), h('span', { class: 'grow' }), stats)));
  clear(el, h('div', { class: 'grid2' }, main, h('div', { class: 'panel sticky' }, h('div', { class: 'row between' }, h('h3', {}, 'History'), h('button', { class: 'small', onclick: loadHistory }, 'Refresh')), history)));

  function setMode(m) {
    mode = m;
    for (const b of modeBtns) b.setAttribute('aria-pressed', String(b.textContent.toLowerCase() === m));
    system.hidden = m !== 'chat';
    chatBox.hidden = m !== 'chat';
    clearBtn.hidden = m !== 'chat';
    out.hidden = m === 'chat';
    probsLab.hidden = m === 'chat';
    prompt.placeholder = m === 'chat' ? 'Message (Enter sends, Shift+Enter for a new line)' : 'Once upon a time';
    prompt.rows = m === 'chat' ? 2 : 4;
  }
  setMode('prompt');

  function renderChat(streamingText) {
    clear(chatBox,
      system.value.trim() ? h('div', { class: 'msg system' }, system.value.trim()) : null,
      messages.map((m) => h('div', { class: `msg ${m.role}` }, m.content)),
      streamingText !== undefined ? h('div', { class: 'msg assistant streaming' }, streamingText) : null,
      !messages.length && streamingText === undefined ? h('div', { class: 'hint' }, 'Start the conversation below.') : null);
    chatBox.scrollTop = chatBox.scrollHeight;
  }
  renderChat();

  async function generate() {
    if (genId) return;
    const path = pathBox.input.value.trim();
    if (!path) { toast('Choose a model first (a run’s model or a path).', 'error'); return; }
    const text = prompt.value;
    const body = {
      model: path,
      temp: Number(temp.value), top_k: Number(topK.value), top_p: Number(topP.value), max_tokens: Number(maxTok.value),
    };
    if (adapterBox.input.value.trim()) body.adapter = adapterBox.input.value.trim();
    if (tokBox.input.value.trim()) body.tokenizer = tokBox.input.value.trim();
    if (seed.value !== '') body.seed = Number(seed.value);
    if (mode === 'chat') {
      if (!text.trim()) return;
      messages.push({ role: 'user', content: text });
      body.messages = messages.slice();
      if (system.value.trim()) body.system = system.value.trim();
      prompt.value = '';
    } else body.prompt = text;
    const withProbs = mode === 'prompt' && probs.checked;
    if (withProbs) body.logprobs = 5;

    let produced = '', tokens = 0;
    const pieces = []; // token events, with their probabilities
    const t0 = performance.now();
    let tFirst = null;
    let ended = false;
    const show = frameThrottle(() => {
      // After the end the turn is a message of its own.
      if (mode === 'chat') { if (!ended) renderChat(produced); } else { clear(out, h('span', { class: 'prompt' }, text), withProbs ? pieces.map(tokenSpan) : produced); out.scrollTop = out.scrollHeight; }
      const dt = tFirst ? (performance.now() - tFirst) / 1000 : 0;
      stats.textContent = `${tokens} tokens${dt > 0 && tokens > 1 ? ` · ${fmtNum((tokens - 1) / dt, 3)} tokens/s` : ''}`;
    });
    out.classList.add('streaming');
    stats.className = 'status-line busy';
    stats.textContent = 'loading the model…';
    genBtn.disabled = true; stopBtn.disabled = false;
    if (mode === 'prompt') clear(out, h('span', { class: 'prompt' }, text));
    else renderChat('');
    let r;
    try { r = await post('/api/generate', body); } catch (e) {
      finish(); stats.className = 'status-line bad'; stats.textContent = errorText(e);
      if (mode === 'chat') { messages.pop(); prompt.value = text; renderChat(); }
      return;
    }
    genId = r.id;
    const end = (msg, bad) => {
      if (ended) return;
      ended = true;
      if (es) { es.close(); es = null; }
      if (mode === 'chat') {
        if (bad && !produced) { messages.pop(); if (!prompt.value) prompt.value = text; } // the turn did not happen
        else messages.push({ role: 'assistant', content: produced });
        renderChat();
      }
      finish();
      show();
      requestAnimationFrame(() => { if (msg) { stats.className = `status-line ${bad ? 'bad' : 'ok'}`; stats.textContent = msg; } });
      loadHistory();
    };
    es = stream(`/api/generate/${genId}/stream`, {
      token: (e) => { if (tFirst === null) tFirst = performance.now(); produced += e.text ?? ''; tokens++; if (withProbs) pieces.push(e); show(); },
      generate_done: (e) => {
        const ms = e.total_ms || performance.now() - t0;
        end(`${e.tokens ?? tokens} tokens in ${fmtNum(ms / 1000, 3)} s · ${fmtNum(((e.tokens ?? tokens) * 1000) / ms, 3)} tokens/s${e.stopped ? ' · stopped' : ''}`);
      },
      error: (e) => end(`${e.code ? `[${e.code}] ` : ''}${e.message || 'generation failed'}`, true),
      status: (e) => {
        if (!e || !['done', 'error', 'stopped', 'cancelled'].includes(e.status)) return;
        // A generation that ended before this stream connected comes back as its stored record.
        let extra = e.extra || {};
        if (typeof extra === 'string') { try { extra = JSON.parse(extra); } catch { extra = {}; } }
        if (!produced && e.stored) { produced = e.stored; show(); }
        const err = extra.error || e.error;
        const done = extra.done;
        setTimeout(() => {
          if (err) end(`${err.code ? `[${err.code}] ` : ''}${err.message || 'generation failed'}`, true);
          else if (done) end(`${done.tokens} tokens in ${fmtNum(done.total_ms / 1000, 3)} s · ${fmtNum((done.tokens * 1000) / done.total_ms, 3)} tokens/s`);
          else end(`${tokens} tokens · ${e.status}`);
        }, 200);
      },
      end: () => end(`${tokens} tokens`),
    }, (st) => { if (st === 'closed') end(`${tokens} tokens`); });
  }

  function tokenSpan(e) {
    const p = Math.exp(e.logprob ?? 0);
    const pct = (lp) => `${fmtNum(100 * Math.exp(lp), 3)}%`;
    const alts = (e.top_logprobs || []).map((t) => `${JSON.stringify(t.text)}  ${pct(t.logprob)}`);
    const band = p >= 0.9 ? 'sure' : p >= 0.5 ? 'likely' : p >= 0.1 ? 'unsure' : 'rare';
    return h('span', { class: `tok ${band}`, dataset: { p: p.toFixed(4) }, title: [`${JSON.stringify(e.text ?? '')}  ${pct(e.logprob ?? 0)}`, 'most likely:', ...alts].join('\n') }, e.text ?? '');
  }

  function finish() {
    genId = null;
    out.classList.remove('streaming');
    genBtn.disabled = false; stopBtn.disabled = true;
    stats.className = 'status-line';
  }

  async function stop() {
    if (!genId) return;
    try { await post(`/api/generate/${genId}/stop`); } catch (e) { toast(errorText(e), 'error'); }
  }

  async function loadHistory() {
    try {
      const list = await get('/api/generations');
      const items = (Array.isArray(list) ? list : list.generations || []).slice(0, 50);
      clear(history, items.length ? items.map((g) => {
        const rq = g.request || g;
        const last = (rq.messages || []).filter((m) => m.role === 'user').map((m) => m.content).slice(-1)[0];
        const toks = g.stats?.tokens ?? g.tokens;
        return h('button', { class: 'hist-item', type: 'button', title: 'Show this generation', onclick: () => showGeneration(g) },
          h('span', { class: 't' }, rq.prompt || last || '(chat)'),
          h('span', { class: 'hint' }, `${fmtTime(g.created_at)} · ${String(rq.model || '').split('/').slice(-2).join('/')}${toks ? ` · ${toks} tok` : ''}${g.status && g.status !== 'done' ? ` · ${g.status}` : ''}`));
      }) : h('div', { class: 'hint' }, 'No generations yet.'));
    } catch (e) { clear(history, h('div', { class: 'hint' }, errorText(e))); }
  }

  function showGeneration(g) {
    const rq = g.request || g;
    if (rq.model) { pathBox.input.value = rq.model; model.path = rq.model; }
    adapterBox.input.value = rq.adapter || '';
    tokBox.input.value = rq.tokenizer || '';
    if (rq.system) system.value = rq.system;
    const p = rq;
    if (p.temp !== undefined) temp.value = p.temp;
    if (p.top_k !== undefined) topK.value = p.top_k;
    if (p.top_p !== undefined) topP.value = p.top_p;
    if (p.max_tokens !== undefined) maxTok.value = p.max_tokens;
    probs.checked = p.logprobs !== undefined;
    if (rq.messages?.length) {
      setMode('chat');
      messages.length = 0;
      messages.push(...rq.messages);
      if (g.output || g.text) messages.push({ role: 'assistant', content: g.output || g.text });
      renderChat();
    } else {
      setMode('prompt');
      prompt.value = rq.prompt || '';
      clear(out, h('span', { class: 'prompt' }, rq.prompt || ''), g.output || g.text || '');
    }
  }

  loadHistory();
  return { destroy() { destroyed = true; if (es) es.close(); if (genId) stop(); } };
}
