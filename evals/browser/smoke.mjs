// Smoke test of the browser setup (evals/tests/browser.rs): a page served on loopback with a
// strict Content-Security-Policy, opened in Chromium; its own script (allowed by the policy)
// makes the button work, an inline script (refused by the policy) must not run. Clicks the
// button, checks the text, takes a screenshot. Reports {"smoke":"ok", ...}.

import http from 'node:http';
import { artifact, report, run, withPage } from './lib.mjs';

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const PAGES = {
  '/': {
    type: 'text/html; charset=utf-8',
    body: `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>vexa smoke</title><link rel="stylesheet" href="/app.css"></head>
<body>
  <h1 id="status">waiting</h1>
  <button id="go" type="button">Go</button>
  <script>document.body.dataset.inline = 'ran';</script>
  <script src="/app.js"></script>
</body>
</html>
`,
  },
  '/app.js': {
    type: 'text/javascript; charset=utf-8',
    body: `document.getElementById('go').addEventListener('click', () => {
  document.getElementById('status').textContent = 'clicked';
});
`,
  },
  '/app.css': {
    type: 'text/css; charset=utf-8',
    body: 'body { font-family: sans-serif; margin: 2rem; } h1 { color: #1a5fb4; }\n',
  },
};

function serve() {
  const server = http.createServer((req, res) => {
    const page = PAGES[new URL(req.url, 'http://localhost').pathname];
    const headers = { 'content-security-policy': CSP, 'x-content-type-options': 'nosniff' };
    if (!page) {
      res.writeHead(404, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': page.type }).end(page.body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

run(async () => {
  const server = await serve();
  const { port } = server.address();
  try {
    await withPage(async (page, browser) => {
      const violations = [];
      page.on('console', (msg) => {
        if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
      });
      const response = await page.goto(`http://127.0.0.1:${port}/`);
      if (response?.status() !== 200) throw new Error(`GET / answered ${response?.status()}`);
      await page.click('#go');
      await page.waitForFunction(() => document.getElementById('status').textContent === 'clicked', null, {
        timeout: 10000,
      });
      const inline = await page.evaluate(() => document.body.dataset.inline ?? null);
      if (inline !== null) throw new Error('the inline script ran despite the Content-Security-Policy');
      const screenshot = artifact('smoke.png');
      await page.screenshot({ path: screenshot, fullPage: true });
      report({
        smoke: 'ok',
        chromium: browser.version(),
        status: await page.textContent('#status'),
        csp_violations: violations.length,
        screenshot,
      });
    });
  } finally {
    server.close();
  }
});
