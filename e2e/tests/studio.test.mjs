// End-to-end: the real `neuralforge studio` binary, driven through its web UI in chromium.
// One story in order: project -> config -> train (live chart, reload, stop, resume, queue)
// -> generate -> export GGUF -> ingest -> compare in History. Screenshots go to SHOTS.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { workspace, startStudio, launchBrowser, api, until, SHOTS } from '../lib.mjs';

let ws, studio, browser, page, base;
const s = {}; // ids shared by the steps
const consoleErrors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  ws = workspace();
  studio = await startStudio(ws.data);
  base = studio.url;
  browser = await launchBrowser(ws.dir);
  page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (studio) await studio.stop();
  if (ws && !process.env.E2E_KEEP) ws.cleanup();
});

// A step that fails with a dialog open would block every later click: say what the dialog
// showed (its status line names a failed request), then close it so later steps run on.
afterEach(async () => {
  const open = page?.locator('dialog.modal[open]');
  if (!open || !(await open.count().catch(() => 0))) return;
  const text = (await open.first().innerText().catch(() => '')).replace(/\s+/g, ' ').slice(0, 600);
  console.error(`a dialog was left open after the step: ${text}`);
  await page.keyboard.press('Escape').catch(() => {});
});

const shot = async (name, opts = {}) => {
  await page.evaluate(() => document.querySelector('.toasts')?.replaceChildren()); // no stray toasts in pictures
  await page.screenshot({ path: join(SHOTS, `${name}.png`), ...opts });
};
const points = async (nth = 0) => Number(await page.locator('.chart').nth(nth).getAttribute('data-points'));
const lastX = async (nth = 0) => Number(await page.locator('.chart').nth(nth).getAttribute('data-last-x'));
const card = (k) => page.locator(`[data-card="${k}"] .v`).textContent();
const run = (id) => api(base, 'GET', `/api/runs/${id}`);
const tab = async (name) => { await page.getByRole('tab', { name }).click(); };

// Presses the dashboard's Stop and follows the run to `interrupted` through the API, so that a
// slow checkpoint on a loaded machine is waited for and a lost stop names the state it saw.
async function stopRun(id) {
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  let seen = {};
  const state = async () => { const r = await run(id); seen = { status: r.status, step: r.summary?.step, exit: r.exit_code }; return r.status; };
  try {
    await until(async () => ['stopping', 'interrupted'].includes(await state()), 'the stop to be taken', 15000);
    await until(async () => (await state()) === 'interrupted', 'the run to be interrupted', 180000, 500);
  } catch (e) {
    const toasts = await page.locator('.toast').allTextContents().catch(() => []);
    throw new Error(`${e.message}; run ${id}: ${JSON.stringify(seen)}; toasts: ${JSON.stringify(toasts)}`);
  }
  await page.waitForSelector('.banner.interrupted', { timeout: 30000 });
}

test('the page loads and shows the shell', async () => {
  await page.goto(base);
  await page.waitForSelector('#tabs .tab');
  assert.equal(await page.locator('.tab').count(), 7);
  await until(async () => (await page.locator('#conn').getAttribute('class')).includes('ok'), 'health dot');
  // Keyboard: digits switch tabs.
  await page.keyboard.press('6');
  await page.waitForSelector('#tab-history[aria-selected="true"]');
  await page.keyboard.press('1');
  await page.waitForSelector('#tab-config[aria-selected="true"]');
});

test('creates a project from the "quick test" preset', async () => {
  await page.click('#new-project');
  await page.fill('dialog [aria-label="Project name"]', 'e2e tiny');
  await page.selectOption('dialog [aria-label="Start from preset"]', { label: 'quick test' });
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.waitForSelector('.project-item.active:has-text("e2e tiny")');
  const projects = await api(base, 'GET', '/api/projects');
  s.project = projects.find((p) => p.name === 'e2e tiny');
  assert.ok(s.project, 'project stored');
  assert.equal(s.project.config.init, 'tiny');
});

test('config: every option group, validation as you type, pre-flight and command', async () => {
  await page.waitForSelector('#opt-steps');
  for (const g of ['model', 'data', 'optimizer']) {
    assert.ok(await page.locator('.opt-group h4', { hasText: new RegExp(g, 'i') }).count() >= 1, `group ${g}`);
  }
  // The data path comes from the server-side file browser.
  await page.locator('.opt[data-key="data"] button:has-text("Browse")').click();
  await page.fill('dialog [aria-label="Folder"]', join(ws.data, 'inputs'));
  await page.press('dialog [aria-label="Folder"]', 'Enter');
  const entry = page.locator('dialog .fs-entry.file', { hasText: 'stories.txt' });
  const refused = page.locator('dialog .status-line.bad');
  await entry.or(refused).first().waitFor();
  assert.equal(await refused.count(), 0, `the file browser refused: ${await refused.allTextContents()}`);
  await entry.click();
  assert.equal(await page.inputValue('#opt-data'), ws.text);
  await page.fill('#opt-tokenizer', ws.tokenizer);
  await page.fill('#opt-steps', '20000');
  await page.fill('#opt-ckpt_every', '20');
  await page.fill('#opt-val_every', '20');
  // A local type error shows at once, beside the field.
  await page.fill('#opt-lr', 'abc');
  await page.waitForSelector('#opt-lr-err:has-text("--lr")');
  // The CLI's own refusal lands next to the field it names.
  await page.fill('#opt-lr', '-1');
  await page.waitForSelector('#opt-lr-err:has-text("--lr")', { timeout: 60000 });
  await page.waitForSelector('.status-line.bad:has-text("refuses")');
  await page.evaluate(() => document.getElementById('opt-lr').scrollIntoView({ block: 'center' }));
  await shot('config-error');
  await page.fill('#opt-lr', '0.003');
  await page.waitForSelector('.status-line.ok:has-text("accepts")', { timeout: 60000 });
  const pre = await page.locator('.kv').first().textContent();
  assert.match(pre, /parameters/);
  assert.match(pre, /tokens \/ step/);
  // The products' precision is a choice of the form, and the pre-flight says which one runs.
  const precisions = await page.locator('#opt-precision option').evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(precisions.filter(Boolean), ['auto', 'f32', 'bf16']);
  assert.match(pre, /device.*· f32 products/s);
  const cmd = await page.locator('.cmd').first().textContent();
  assert.match(cmd, /neuralforge train/);
  assert.match(cmd, /--steps(=| )20000/);
  await page.evaluate(() => document.querySelector('.view').scrollTo(0, 0));
  await shot('config');
});

test('starts a run: the chart receives points and the cards change', async () => {
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.waitForURL(/tab=dashboard/);
  s.run1 = new URL(page.url()).hash.match(/run=(\d+)/)[1];
  await page.waitForSelector('.banner.running', { timeout: 60000 });
  await until(async () => (await points(0)) > 3, 'loss points', 120000);
  const step1 = await card('step');
  await until(async () => (await card('step')) !== step1, 'the step card to change', 60000);
  assert.notEqual(await card('loss'), '—');
  assert.ok((await points(1)) > 0, 'lr points');
  assert.ok((await points(2)) > 0, 'throughput points');
  await until(async () => (await run(s.run1)).summary?.last_checkpoint, 'a first checkpoint', 60000);
});

test('reloading mid-run rebuilds the same chart, which keeps growing', async () => {
  const before = await lastX(0);
  await page.reload();
  await page.waitForSelector('.chart');
  await until(async () => (await lastX(0)) >= before, 'the stored points after reload', 30000);
  await until(async () => (await lastX(0)) > before + 2, 'new live points after reload', 60000);
  assert.match(page.url(), new RegExp(`run=${s.run1}`));
});

test('drag-zoom asks for finer buckets of that range; x axis by tokens', async () => {
  const box = await page.locator('.chart canvas').first().boundingBox();
  const asked = page.waitForRequest((r) => /\/series\?metric=loss&.*from=.*to=/.test(r.url()));
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await asked;
  const reset = page.getByRole('button', { name: 'Reset zoom' });
  assert.ok(await reset.isEnabled(), 'zoomed');
  await reset.click();
  assert.ok(await reset.isDisabled(), 'zoom reset');
  await page.selectOption('[aria-label="x axis"]', 'tokens');
  await until(async () => (await lastX(0)) > 1000, 'the loss by tokens');
  await page.selectOption('[aria-label="x axis"]', 'step');
});

test('queues two more runs, reorders and cancels one', async () => {
  await tab('Config');
  await page.waitForSelector('#opt-steps');
  await page.fill('#opt-steps', '40');
  await page.waitForSelector('.status-line.ok:has-text("accepts")', { timeout: 60000 });
  await page.getByRole('button', { name: 'Add to queue' }).click();
  await page.waitForSelector('.toast:has-text("added")');
  await page.fill('#opt-steps', '30');
  await page.waitForSelector('.status-line.ok:has-text("accepts")', { timeout: 60000 });
  await page.getByRole('button', { name: 'Add to queue' }).click();
  await until(async () => (await api(base, 'GET', '/api/queue')).length === 2, 'two waiting runs');
  await tab('Queue');
  await page.waitForSelector('.tbl tr[data-run]');
  const q = await api(base, 'GET', '/api/queue');
  [s.run2, s.run3] = q.map((r) => String(r.id));
  await page.click(`tr[data-run="${s.run3}"] button[aria-label^="move"][aria-label$="up"]`);
  await until(async () => String((await api(base, 'GET', '/api/queue'))[0].id) === s.run3, 'run 3 first');
  await shot('queue');
  await page.click(`tr[data-run="${s.run3}"] button:has-text("Cancel")`);
  await until(async () => (await run(s.run3)).status === 'cancelled', 'run 3 cancelled');
  await until(async () => (await page.locator('.tbl tr[data-run]').count()) === 1, 'one waiting row');
});

test('stops the first run; the queued run starts and finishes', async () => {
  await page.goto(`${base}#tab=dashboard&project=${s.project.id}&run=${s.run1}`);
  await page.waitForSelector('.banner.running');
  await stopRun(s.run1);
  s.stoppedAt = (await run(s.run1)).summary.step;
  await until(async () => (await run(s.run2)).status === 'done', 'run 2 done', 180000, 500);
});

test('resumes the first run from its checkpoint, then stops it again', async () => {
  await page.goto(`${base}#tab=dashboard&project=${s.project.id}&run=${s.run1}`);
  await page.waitForSelector('.banner.interrupted');
  await page.getByRole('button', { name: 'Resume', exact: true }).click();
  await page.waitForSelector('.banner.running', { timeout: 60000 });
  await until(async () => (await run(s.run1)).summary.step > s.stoppedAt + 2, 'steps past the stop', 120000);
  await until(async () => (await lastX(0)) > s.stoppedAt, 'the chart to continue', 30000);
  await until(async () => (await run(s.run1)).summary.step > s.stoppedAt + 60, 'a longer curve for the picture', 60000);
  await shot('dashboard');
  await stopRun(s.run1);
  const r = await run(s.run1);
  assert.ok(r.restarts >= 0);
});

test('generates streamed text from the finished run', async () => {
  await page.goto(`${base}#tab=generate&project=${s.project.id}&run=${s.run2}`);
  await page.waitForSelector('[aria-label="Run"]');
  await page.selectOption('[aria-label="Run"]', s.run2);
  await until(async () => (await page.inputValue('[aria-label="Model path"]')).includes('model'), 'the final model picked');
  await page.fill('[aria-label="Prompt"]', 'Once upon a time');
  await page.fill('[aria-label="max tokens"]', '40');
  await page.fill('[aria-label="seed"]', '1');
  await page.getByRole('button', { name: 'Generate', exact: true }).click();
  await until(async () => (await page.locator('.gen-out').textContent()).length > 'Once upon a time'.length + 5, 'streamed tokens', 60000, 100);
  await page.waitForSelector('.status-line.ok:has-text("tokens/s")', { timeout: 60000 });
  await page.waitForSelector('.hist-item');
  await shot('generate');
  // Token probabilities: greedy, so every token is the model's first choice, shown first on hover.
  await page.check('[aria-label="token probabilities"]');
  await page.fill('[aria-label="temperature"]', '0');
  await page.getByRole('button', { name: 'Generate', exact: true }).click();
  await until(async () => (await page.locator('.gen-out .tok').count()) >= 10, 'tokens with probabilities', 60000, 100);
  await page.waitForSelector('.status-line.ok:has-text("tokens/s")', { timeout: 60000 });
  const toks = await page.locator('.gen-out .tok').evaluateAll((els) => els.map((e) => ({ p: Number(e.dataset.p), title: e.title, text: e.textContent })));
  for (const t of toks) {
    assert.ok(t.p > 0 && t.p <= 1, JSON.stringify(t));
    const lines = t.title.split('\n');
    assert.equal(lines.length, 7, JSON.stringify(t)); // the token, 'most likely:', its top 5
    // A token alone may decode with its leading space dropped, or as part of a character.
    if (t.text.trim()) assert.equal(JSON.parse(lines[2].split('  ')[0]).trim(), t.text.trim(), JSON.stringify(t));
  }
  await shot('generate-probabilities');
  await page.uncheck('[aria-label="token probabilities"]');
  // Chat: a system message and two turns.
  await page.getByRole('button', { name: 'Chat', exact: true }).click();
  await page.fill('[aria-label="System message"]', 'You tell short stories.');
  // The tiny model's own tokenizer has no chat template; the one beside the corpus has ChatML.
  await page.fill('[aria-label="Tokenizer path"]', ws.tokenizer);
  for (const turn of ['Tell me about Tom.', 'And then?']) {
    const before = await page.locator('.msg.assistant').count();
    await page.fill('[aria-label="Prompt"]', turn);
    await page.press('[aria-label="Prompt"]', 'Enter');
    await until(async () => (await page.locator('.msg.assistant:not(.streaming)').count()) === before + 1, 'an assistant reply', 60000, 100);
  }
  assert.equal(await page.locator('.msg.user').count(), 2);
});

test('exports the finished model as GGUF', async () => {
  await tab('Import / Export');
  await page.waitForSelector('[aria-label="Run"]');
  await page.selectOption('[aria-label="Run"]', s.run2);
  await until(async () => (await page.inputValue('[aria-label="Export source"]')).length > 0, 'export source');
  await page.selectOption('[aria-label="format"]', 'gguf');
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  await page.waitForSelector('.status-line.ok:has-text("export done")', { timeout: 120000 });
  const path = (await page.locator('.kv dd.mono').first().textContent()).trim();
  assert.match(path, /\.gguf$/);
  assert.ok(statSync(path).size > 1000, 'a GGUF file with weights');
  // ... and imports it back as a model folder.
  await page.fill('[aria-label="Import source"]', path);
  await page.getByRole('button', { name: 'Import', exact: true }).click();
  await page.waitForSelector('.status-line.ok:has-text("import done")', { timeout: 120000 });
  const folder = (await page.locator('.kv dd.mono').first().textContent()).trim();
  assert.ok(statSync(join(folder, 'model.safetensors')).size > 1000, 'an imported model folder');
  await shot('io');
});

test('ingests the corpus and shows dataset stats and a masked preview', async () => {
  await tab('Data');
  await page.fill('[aria-label="Input path"]', ws.chat);
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await page.fill('[aria-label="Tokenizer"]', ws.tokenizer);
  await page.getByRole('button', { name: 'Ingest', exact: true }).click();
  await page.waitForSelector('.status-line.ok:has-text("done")', { timeout: 120000 });
  await page.waitForSelector('.kv dt:has-text("documents")');
  await page.waitForSelector('.preview-doc .tok.train', { timeout: 30000 });
  assert.ok(await page.locator('.preview-doc .tok.ctx').count() > 0, 'masked prompt tokens are dimmed');
  assert.ok(await page.locator('.chart-body canvas[aria-label="histogram"]').count() === 1, 'length histogram');
  await shot('data');
});

test('History compares two runs: overlaid curves and differing config fields', async () => {
  await tab('History');
  await page.waitForSelector(`tr[data-run="${s.run1}"]`);
  await page.check(`tr[data-run="${s.run1}"] input[type=checkbox]`);
  await page.check(`tr[data-run="${s.run2}"] input[type=checkbox]`);
  await page.getByRole('button', { name: 'Compare selected (2)' }).click();
  await page.waitForSelector('.chart[data-series="2"]', { timeout: 30000 });
  await page.waitForSelector('tr.diff[data-field="steps"]');
  await shot('history', { fullPage: true });
});

test('deletes the cancelled run after a confirmation', async () => {
  await page.goto(`${base}#tab=dashboard&project=${s.project.id}&run=${s.run3}`);
  await page.waitForSelector('.banner.cancelled');
  await page.getByRole('button', { name: 'Delete', exact: true }).click();
  await page.locator('dialog').getByRole('button', { name: 'Delete', exact: true }).click();
  await until(async () => !(await api(base, 'GET', '/api/runs')).some((r) => String(r.id) === s.run3), 'run 3 gone');
  await page.waitForURL((u) => !/run=/.test(u.hash) || !new RegExp(`run=${s.run3}\\b`).test(u.hash));
});

test('the queue view stores the concurrency setting', async () => {
  await tab('Queue');
  await page.waitForSelector('[aria-label="maximum concurrent runs"]');
  await page.fill('[aria-label="maximum concurrent runs"]', '2');
  await page.press('[aria-label="maximum concurrent runs"]', 'Tab');
  await until(async () => (await api(base, 'GET', '/api/settings')).max_concurrent_runs === 2, 'concurrency 2');
  await page.fill('[aria-label="maximum concurrent runs"]', '1');
  await page.press('[aria-label="maximum concurrent runs"]', 'Tab');
  await until(async () => (await api(base, 'GET', '/api/settings')).max_concurrent_runs === 1, 'concurrency 1');
});

test('no errors in the browser console', () => {
  const real = consoleErrors.filter((e) => !/favicon|ERR_ABORTED|net::ERR_/.test(e));
  assert.deepEqual(real, []);
});
