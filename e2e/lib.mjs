// Helpers of the browser tests: a generated corpus, the studio process, the browser.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// The studio binary; its jobs run NEURALFORGE_EXE when that is set (inherited), else itself.
export const EXE = process.env.E2E_STUDIO_EXE || join(ROOT, 'target', 'release', 'neuralforge');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SHOTS = process.env.E2E_SHOTS || join(ROOT, 'e2e', 'screenshots');

// Small procedural stories (seeded), enough text for a 512-token BPE and a tiny model.
export function corpus(stories = 1500, seed = 7) {
  let s = seed >>> 0;
  // The high bits of the LCG: its low bits repeat with a short period.
  const rnd = (n) => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s >>> 16) % n; };
  const pick = (a) => a[rnd(a.length)];
  const names = ['Tom', 'Lily', 'Max', 'Mia', 'Ben', 'Sue', 'Sam', 'Anna'];
  const things = ['ball', 'kite', 'cat', 'dog', 'boat', 'cake', 'tree', 'box', 'hat', 'bird'];
  const adj = ['red', 'big', 'small', 'happy', 'blue', 'old', 'shiny', 'soft'];
  const verbs = ['found', 'saw', 'liked', 'lost', 'made', 'wanted', 'took', 'gave'];
  const places = ['park', 'garden', 'house', 'beach', 'forest', 'school'];
  const out = [];
  for (let i = 0; i < stories; i++) {
    const a = pick(names), b = pick(names), t = pick(things);
    let story = `Once upon a time, ${a} went to the ${pick(places)}. ${a} ${pick(verbs)} a ${pick(adj)} ${t}. `;
    for (let k = rnd(4); k > 0; k--) story += `Then ${pick(names)} ${pick(verbs)} a ${pick(adj)} ${pick(things)} in the ${pick(places)}. `;
    story += `${b} said, "Can I play with the ${t}?" ${a} said yes, and they were ${pick(adj)} all day. `
      + `At the end, the ${t} was ${pick(adj)} and ${a} and ${b} went home.`;
    out.push(story);
  }
  return `${out.join('\n\n')}\n`;
}

// A scratch folder holding the data dir (so every path is inside what the studio may browse).
export function workspace() {
  const dir = mkdtempSync(join(tmpdir(), 'nf-e2e-'));
  const data = join(dir, 'studio');
  const inputs = join(data, 'inputs');
  mkdirSync(inputs, { recursive: true });
  const text = join(inputs, 'stories.txt');
  writeFileSync(text, corpus());
  // Prompt / completion records: ingest masks the prompts (context only).
  const chat = join(inputs, 'qa');
  mkdirSync(chat);
  const qa = corpus(300, 11).trim().split('\n\n').map((story) => {
    const cut = story.indexOf('. ') + 1;
    return JSON.stringify({ prompt: `Continue the story: ${story.slice(0, cut)}`, completion: story.slice(cut + 1) });
  });
  writeFileSync(join(chat, 'stories.jsonl'), `${qa.join('\n')}\n`);
  const tok = join(inputs, 'tokenizer');
  execFileSync(EXE, ['tokenizer', 'train', '--vocab-size', '512', '--out', tok, text], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { dir, data, text, chat, tokenizer: join(tok, 'tokenizer.json'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// Starts `neuralforge studio --port 0` and resolves with its URL (the first stdout line).
export function startStudio(dataDir) {
  if (!existsSync(EXE)) throw new Error(`${EXE} is missing: run cargo build --release -p neuralforge`);
  const child = spawn(EXE, ['studio', '--port', '0', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  child.stderr.on('data', (d) => { log.push(String(d)); if (log.length > 400) log.shift(); });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`studio printed no URL in 30 s:\n${log.join('')}`)), 30000);
    const rl = createInterface({ input: child.stdout });
    rl.once('line', (line) => {
      clearTimeout(timer);
      const m = line.match(/^studio: listening on (http:\/\/\S+)/);
      if (!m) { fail(new Error(`unexpected first line: ${line}`)); return; }
      ok({ url: m[1], child, log, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGINT'); setTimeout(() => child.kill('SIGKILL'), 8000); }) });
    });
    child.once('exit', (code) => { clearTimeout(timer); fail(new Error(`studio exited (${code}):\n${log.join('')}`)); });
  });
}

export async function launchBrowser(dir) {
  const profile = mkdtempSync(join(dir, 'chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return ctx;
}

export async function api(base, method, path, body) {
  const res = await fetch(new URL(path, base), {
    method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let data;
  try { data = JSON.parse(text); } catch { data = text; }
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return data;
}

// Polls fn until it returns a truthy value.
export async function until(fn, what, ms = 60000, every = 250) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, every));
  }
}
