// The studio shell: project list, tabs, URL-hash state (#tab=..&project=..&run=..), so a reload
// lands on the same project, run and view. Each view is a module with mount(el, ctx) -> {destroy}.

import { get, post } from './api.js';
import { h, clear, toast, modal, errorText, field, fmtTime } from './ui.js';

const TABS = [
  { id: 'config', label: 'Config', mod: './views/config.js' },
  { id: 'dashboard', label: 'Dashboard', mod: './views/dashboard.js' },
  { id: 'generate', label: 'Generate', mod: './views/generate.js' },
  { id: 'data', label: 'Data', mod: './views/data.js' },
  { id: 'io', label: 'Import / Export', mod: './views/io.js' },
  { id: 'history', label: 'History', mod: './views/history.js' },
  { id: 'queue', label: 'Queue', mod: './views/queue.js' },
];

const state = { projects: [], tab: 'config', projectId: null, runId: null, view: null, mounted: '' };

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  state.tab = TABS.some((t) => t.id === p.get('tab')) ? p.get('tab') : 'config';
  state.projectId = p.get('project') || null;
  state.runId = p.get('run') || null;
}

function writeHash(replace = false) {
  const p = new URLSearchParams();
  p.set('tab', state.tab);
  if (state.projectId) p.set('project', state.projectId);
  if (state.runId) p.set('run', state.runId);
  const next = `#${p}`;
  if (location.hash === next) return;
  if (replace) history.replaceState(null, '', next); else history.pushState(null, '', next);
}

export function navigate({ tab, project, run }, replace = false) {
  if (tab !== undefined) state.tab = tab;
  if (project !== undefined) {
    if (String(project ?? '') !== String(state.projectId ?? '')) state.runId = null;
    state.projectId = project === null ? null : String(project);
  }
  if (run !== undefined) state.runId = run === null ? null : String(run);
  writeHash(replace);
  render();
}

const currentProject = () => state.projects.find((p) => String(p.id) === String(state.projectId)) || null;

async function loadProjects() {
  try {
    const list = await get('/api/projects');
    state.projects = Array.isArray(list) ? list : list.projects || [];
  } catch (e) {
    toast(`Projects: ${errorText(e)}`, 'error');
  }
  renderProjects();
}

function renderProjects() {
  const q = document.getElementById('project-filter').value.trim().toLowerCase();
  const nav = document.getElementById('projects');
  const items = state.projects
    .filter((p) => !q || p.name.toLowerCase().includes(q))
    .sort((a, b) => String(b.updated_at || '').localeCompare(String(a.updated_at || '')));
  clear(nav, items.length ? items.map((p) => h('button', {
    class: `project-item${String(p.id) === String(state.projectId) ? ' active' : ''}`,
    dataset: { id: p.id },
    'aria-current': String(p.id) === String(state.projectId) ? 'page' : null,
    onclick: () => navigate({ project: p.id, tab: state.tab === 'queue' || state.tab === 'history' ? 'config' : state.tab }),
  }, p.name, h('span', { class: 'meta' }, describeProject(p)))) : h('div', { class: 'empty' }, q ? 'No match' : 'No projects yet'));
}

function describeProject(p) {
  const c = p.config || {};
  const what = c.lora_rank ? `LoRA r${c.lora_rank}` : c.init ? `scratch · ${c.init}` : c.model ? 'fine-tune' : 'not configured';
  return `${what} · ${fmtTime(p.updated_at || p.created_at)}`;
}

async function newProject() {
  const name = h('input', { type: 'text', placeholder: 'e.g. stories-tiny', required: true, 'aria-label': 'Project name' });
  const err = h('div', { class: 'status-line bad' });
  let presets = [];
  try { presets = await get('/api/presets'); } catch { /* optional */ }
  const preset = h('select', { 'aria-label': 'Start from preset' },
    h('option', { value: '' }, '(empty)'), (presets || []).map((p, i) => h('option', { value: String(i) }, p.name)));
  const body = h('form', { class: 'stack', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
    field('Name', name), field('Preset', preset, 'Settings to start from; every one can be changed in Config.'), err);
  const submit = async () => {
    if (!name.value.trim()) { err.textContent = 'A project needs a name.'; name.focus(); return false; }
    try {
      const config = preset.value ? { ...(presets[Number(preset.value)].config || {}) } : {};
      const p = await post('/api/projects', { name: name.value.trim(), config });
      document.querySelector('dialog.modal')?.close$?.(true);
      await loadProjects();
      navigate({ project: p.id, tab: 'config' });
      toast(`Project “${p.name}” created`, 'ok');
      return true;
    } catch (e) { err.textContent = errorText(e); return false; }
  };
  setTimeout(() => name.focus(), 30);
  await modal('New project', body, [{ label: 'Cancel', value: false }, { label: 'Create', value: true, class: 'primary', action: submit }]);
}

function renderTabs() {
  const bar = document.getElementById('tabs');
  clear(bar, TABS.map((t, i) => h('button', {
    class: 'tab', role: 'tab', id: `tab-${t.id}`, 'aria-selected': String(state.tab === t.id),
    tabindex: state.tab === t.id ? '0' : '-1',
    onclick: () => navigate({ tab: t.id }),
  }, t.label, h('kbd', {}, String(i + 1)))));
}

async function render() {
  renderTabs();
  renderProjects();
  const key = `${state.tab}|${state.projectId}|${state.runId}`;
  if (key === state.mounted) return;
  state.mounted = key;
  if (state.view) { try { state.view.destroy?.(); } catch { /* view already gone */ } state.view = null; }
  const el = document.getElementById('view');
  clear(el);
  const tab = TABS.find((t) => t.id === state.tab);
  const ctx = {
    project: currentProject(),
    projectId: state.projectId,
    runId: state.runId,
    projects: state.projects,
    navigate,
    reloadProjects: loadProjects,
    setRun: (id) => navigate({ run: id }),
  };
  try {
    const mod = await import(tab.mod);
    if (state.mounted !== key) return; // the user moved on while the module loaded
    state.view = await mod.mount(el, ctx);
  } catch (e) {
    console.error(e);
    clear(el, h('div', { class: 'error-box' }, `This view failed: ${errorText(e)}`));
  }
}

async function health() {
  const dot = document.getElementById('conn');
  try {
    const r = await get('/api/health');
    dot.className = 'conn ok'; dot.title = 'connected';
    document.getElementById('version').textContent = r.version ? `v${r.version}` : '';
  } catch (e) {
    dot.className = 'conn bad'; dot.title = errorText(e);
  }
}

function keys(ev) {
  const t = ev.target;
  const typing = t.closest('input, textarea, select, [contenteditable]') || document.querySelector('dialog[open]');
  if (ev.target.closest('.tabs') && (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft')) {
    const i = TABS.findIndex((x) => x.id === state.tab);
    const n = TABS[(i + (ev.key === 'ArrowRight' ? 1 : TABS.length - 1)) % TABS.length];
    navigate({ tab: n.id });
    document.getElementById(`tab-${n.id}`)?.focus();
    return;
  }
  if (ev.target.closest('.project-list') && (ev.key === 'ArrowDown' || ev.key === 'ArrowUp')) {
    const items = [...document.querySelectorAll('.project-item')];
    const i = items.indexOf(document.activeElement);
    items[Math.max(0, Math.min(items.length - 1, i + (ev.key === 'ArrowDown' ? 1 : -1)))]?.focus();
    ev.preventDefault();
    return;
  }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const n = Number(ev.key);
  if (n >= 1 && n <= TABS.length) { navigate({ tab: TABS[n - 1].id }); ev.preventDefault(); }
  else if (ev.key === 'n') { ev.preventDefault(); newProject(); }
  else if (ev.key === '/') { ev.preventDefault(); document.getElementById('project-filter').focus(); }
}

async function start() {
  readHash();
  document.getElementById('new-project').addEventListener('click', newProject);
  document.getElementById('project-filter').addEventListener('input', renderProjects);
  document.addEventListener('keydown', keys);
  window.addEventListener('popstate', () => { readHash(); render(); });
  window.addEventListener('hashchange', () => { readHash(); render(); });
  window.addEventListener('nf:projects-changed', loadProjects);
  health();
  setInterval(health, 15000);
  await loadProjects();
  render();
}

start();
