// Development aid (not used by the tests): serves crates/studio/assets from disk and forwards
// /api to a running studio, so UI edits show on reload without rebuilding the binary.
// Usage: node e2e/devserver.mjs http://127.0.0.1:STUDIO_PORT/ [PORT]

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, extname, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ASSETS = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'crates', 'studio', 'assets');
const target = new URL(process.argv[2] || 'http://127.0.0.1:7860/');
const port = Number(process.argv[3] || 7870);
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png' };

http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname.startsWith('/api/')) {
    const headers = { ...req.headers, host: target.host };
    if (headers.origin) headers.origin = target.origin;
    const up = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => { res.writeHead(502); res.end(JSON.stringify({ error: e.message })); });
    req.pipe(up);
    return;
  }
  const rel = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
  const file = join(ASSETS, rel);
  if (!file.startsWith(ASSETS)) { res.writeHead(403); res.end(); return; }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-cache' });
    res.end(body);
  } catch {
    res.writeHead(404); res.end('not found');
  }
}).listen(port, '127.0.0.1', () => console.log(`dev: http://127.0.0.1:${port}/ -> ${target.origin}`));
