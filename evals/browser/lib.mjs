// Shared helpers of the browser test scripts (run by evals/src/browser.rs: `node <script>`).
//
// The environment (`eval "$(hack/browser env)"`, passed on by run_script):
//   VEXA_BROWSER_NODE_PATH  the node_modules folder `hack/browser deps` installed (playwright-core)
//   VEXA_CHROMIUM           the Chromium binary (Debian's, /usr/bin/chromium)
//   VEXA_ARTIFACTS          where screenshots and other files of this run go
//   VEXA_BROWSER_TIMEOUT_MS the whole script's limit (default 120000): then it exits with 124
//
// ES modules ignore NODE_PATH, and the packages live in the cache, not next to these scripts:
// playwright-core is loaded with a require() rooted in VEXA_BROWSER_NODE_PATH.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run \`hack/browser deps\` and \`eval "$(hack/browser env)"\``);
  }
  return value;
}

const require = createRequire(path.join(required('VEXA_BROWSER_NODE_PATH'), 'vexa-browser-tests.cjs'));

/** Playwright's Chromium launcher (playwright-core: no browser of its own). */
export const { chromium } = require('playwright-core');

// A script that hangs (a page that never loads, a selector that never appears with a long
// timeout) ends itself rather than the test that runs it; Playwright closes the browser on exit.
const limitMs = Number(process.env.VEXA_BROWSER_TIMEOUT_MS || 120000);
setTimeout(() => {
  process.stderr.write(`browser script timed out after ${limitMs} ms\n`);
  process.exit(124);
}, limitMs).unref();

/**
 * Launches VEXA_CHROMIUM headless. Chromium's sandbox is off: the tests run as root in a VM,
 * where Chromium refuses to start with it; /dev/shm may be small there, so shared memory goes
 * to /tmp instead. `options` are merged into Playwright's launch options.
 */
export function launch(options = {}) {
  return chromium.launch({
    executablePath: required('VEXA_CHROMIUM'),
    headless: true,
    chromiumSandbox: false,
    ...options,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', ...(options.args ?? [])],
  });
}

/**
 * Runs `fn(page, browser)` with a fresh browser and page, and closes the browser afterwards,
 * whatever `fn` did. Returns what `fn` returned.
 */
export async function withPage(fn, { launchOptions = {}, contextOptions = {} } = {}) {
  const browser = await launch(launchOptions);
  try {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    return await fn(page, browser);
  } finally {
    await browser.close();
  }
}

/** Reports a result to the test: one JSON object on one line of stdout. */
export function report(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** The path of the artifact `name` (a screenshot, a trace) in VEXA_ARTIFACTS, made if missing. */
export function artifact(name) {
  const dir = required('VEXA_ARTIFACTS');
  mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

/**
 * Runs the script's `main`: an error is printed to stderr and ends the process with status 1
 * (the test sees the failure and the message); success ends it with 0 even if a handle is left.
 */
export function run(main) {
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${err?.stack ?? err}\n`);
      process.exit(1);
    },
  );
}
