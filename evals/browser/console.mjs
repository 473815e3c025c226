// The web console in a real browser, against the live cluster (evals/tests/console.rs starts
// the operator, the console, and gives this script its people and objects):
//   1. alice signs in, chats: the reply streams, a pod serves it, the next turns go to the
//      same pod, and a turn that edits a file commits it;
//   2. the connection is cut mid-reply (a proxy drops it and refuses the line for a moment)
//      and the page resumes with
//      nothing missing or twice;
//   3. bob sees none of alice's dispatches or workspaces, and direct URLs, streams and writes
//      are refused;
//   4. Knowledge: alice's workspace shows the chat's commit in its history, its files (a
//      symlink the agent planted is shown as a link, never followed) and diffs; a file she
//      uploads becomes a commit authored by her;
//   5. on a Card, alice has the buttons and approves; bob has none, and his POST is refused;
//   6. hostile agent output is painted as text: no element, no script runs; screenshots.
// Reported: each check's facts (the Rust test asserts them) and the figures: send → first
// token painted over warm turns, and the page's weight.

import { launch, report, artifact, run } from './lib.mjs';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env('CONSOLE_URL');
const NS = env('CONSOLE_NAMESPACE');
const RUNNER = env('CONSOLE_RUNNER');
const WORKSPACE = env('CONSOLE_WORKSPACE');
const CARD = env('CONSOLE_CARD');
const WARM = Number(process.env.CONSOLE_WARM_TURNS || 20);
const TURN_MS = 60000;

async function signIn(page, token) {
  await page.goto(`${URL_}/signin`);
  await page.fill('#token', token);
  await Promise.all([page.waitForNavigation(), page.click('#signin')]);
}

// The number of turn sections painted, and the text of turn `id`'s reply.
const turnCount = (page) => page.locator('#stream section.turn').count();
const reply = (page, id) => page.locator(`#stream section[data-turn="${id}"] pre.reply`).textContent();
const complete = (page, id) =>
  page.waitForSelector(`#stream section[data-turn="${id}"][data-complete="true"]`, { timeout: TURN_MS });

// Sends `prompt` from the page's turn form; returns the new turn's id and the milliseconds
// from the click to its first reply text in the page.
async function sendTurn(page, prompt) {
  const before = await turnCount(page);
  await page.fill('#turn textarea', prompt);
  const ms = await page.evaluate(
    (before) =>
      new Promise((resolve, reject) => {
        const pane = document.getElementById('stream');
        setTimeout(() => reject(new Error(`no reply painted: ${document.getElementById('stream-state').textContent}`)), 60000);
        const t0 = performance.now();
        const check = () => {
          const turns = pane.querySelectorAll('section.turn');
          if (turns.length > before && turns[turns.length - 1].querySelector('pre.reply').textContent.length > 0) {
            observer.disconnect();
            resolve({ ms: performance.now() - t0, id: turns[turns.length - 1].dataset.turn });
          }
        };
        const observer = new MutationObserver(check);
        observer.observe(pane, { childList: true, subtree: true, characterData: true });
        document.querySelector('#turn button').click();
      }),
    before,
  );
  await complete(page, ms.id);
  return ms;
}

const p50 = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
};

async function alice(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const csp = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) csp.push(m.text()); });

  await page.goto(`${URL_}/signin`);
  await page.screenshot({ path: artifact('signin.png'), fullPage: true });
  // A token the cluster does not know is refused, with a message.
  await page.fill('#token', 'not-a-token-the-cluster-knows');
  const refused = await Promise.all([page.waitForNavigation(), page.click('#signin')]);
  report({ check: 'bad-token', status: refused[0].status(), message: await page.locator('.error').textContent() });

  await signIn(page, env('ALICE_TOKEN'));
  const cookies = await context.cookies();
  report({ check: 'cookie', cookies: cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure })) });

  // 1. Chat: the first message creates the dispatch; the reply streams.
  await page.goto(`${URL_}/chat?namespace=${NS}`);
  await page.fill('input[name="runner"], select[name="runner"]', RUNNER).catch(() => page.selectOption('select[name="runner"]', RUNNER));
  await page.check(`input[name="workspace"][value="${WORKSPACE}"]`);
  await page.fill('#chat textarea', 'say hello from the console');
  await page.screenshot({ path: artifact('chat.png'), fullPage: true });
  const weight = { document: 0, script: 0, stylesheet: 0 };
  const counting = (res) => {
    const type = res.request().resourceType();
    if (type in weight) res.body().then((b) => { weight[type] += b.length; }, () => {});
  };
  page.on('response', counting);
  await Promise.all([page.waitForURL(/\/n\/.+\/dispatches\//, { timeout: 30000 }), page.click('#chat button#send')]);
  const dispatchUrl = page.url();
  const name = dispatchUrl.split('/').pop();
  await complete(page, 't0');
  page.off('response', counting);
  report({ check: 'first-reply', dispatch: name, reply: await reply(page, 't0'), weight });

  // The pod that serves it, once the status names it.
  let pod = '';
  for (let i = 0; i < 60 && !pod; i++) {
    await page.goto(dispatchUrl);
    pod = (await page.locator('#pod').textContent()).trim();
    if (!pod) await page.waitForTimeout(500);
  }
  await complete(page, 't0');

  // The next turn: same page, same pod; and one that writes a file is committed.
  const second = await sendTurn(page, 'say second turn');
  const wrote = await sendTurn(page, 'write from-the-console.md written in the browser\nsay wrote it');
  const commit = await page.locator(`#stream section[data-turn="${wrote.id}"]`).getAttribute('data-commit');
  await page.goto(dispatchUrl);
  await complete(page, wrote.id);
  const podAfter = (await page.locator('#pod').textContent()).trim();
  await page.screenshot({ path: artifact('dispatch.png'), fullPage: true });
  report({
    check: 'turns', pod, podAfter, second: second.id, secondReply: await reply(page, second.id),
    wrote: wrote.id, commit, provenance: await page.locator('#provenance').textContent().catch(() => ''),
    audit: await page.locator('#audit').textContent(),
  });

  // Figures: send → first token painted, warm turns.
  const times = [];
  for (let i = 0; i < WARM; i++) times.push((await sendTurn(page, `say warm ${i}`)).ms);
  report({ check: 'send-to-first-token-ms', p50: p50(times), min: Math.min(...times), max: Math.max(...times), n: times.length });

  // 2. Cut the connection mid-reply, then restore it.
  const before = await turnCount(page);
  // `events N` streams N deltas at once; the sleeps keep the rest of the reply for after the cut.
  await page.fill('#turn textarea', 'events 3\nsleep 2\nevents 3\nsleep 2\nevents 3\nsay the end');
  await page.click('#turn button');
  await page.waitForFunction((b) => {
    const t = document.querySelectorAll('#stream section.turn');
    return t.length > b && t[t.length - 1].querySelector('pre.reply').textContent.length > 0;
  }, before, { timeout: TURN_MS });
  const connectionsBefore = Number(await page.locator('#stream').getAttribute('data-connections'));
  // The proxy in front of the console drops every connection and refuses new ones for 1.5 s.
  const cut = await fetch(`${env('CONSOLE_CUT_URL')}/cut?ms=1500`);
  if (!cut.ok) throw new Error(`the cut failed: ${cut.status}`);
  const cutId = await page.locator('#stream section.turn').last().getAttribute('data-turn');
  await complete(page, cutId);
  report({
    check: 'resume', turn: cutId, reply: await reply(page, cutId), connectionsBefore,
    connections: Number(await page.locator('#stream').getAttribute('data-connections')),
    duplicates: Number((await page.locator('#stream').getAttribute('data-duplicates')) || 0),
    last: await page.locator('#stream').getAttribute('data-last'),
  });

  // 6. Hostile agent output is text.
  const hostile = await sendTurn(page, [
    'say <script>window.__pwned = 1</script>',
    'say <img src=x onerror="window.__pwned = 2">',
    'say \u001b[31mred\u001b[0m and \u0007 bell',
  ].join('\n'));
  await page.screenshot({ path: artifact('hostile.png'), fullPage: true });
  report({
    check: 'hostile', turn: hostile.id, reply: await reply(page, hostile.id),
    pwned: await page.evaluate(() => window.__pwned ?? null),
    elements: await page.locator('#stream script, #stream img').count(),
  });

  // A write without the session's CSRF token is refused, and adds nothing.
  const forged = await page.evaluate(async (u) => {
    const r = await fetch(u, { method: 'POST', body: new URLSearchParams({ prompt: 'say forged' }), headers: { Accept: 'application/json' } });
    return { status: r.status, text: await r.text() };
  }, `${dispatchUrl}/turns`);
  report({ check: 'forged-csrf', ...forged });

  // The other views.
  for (const [view, path] of [['dispatches', `/dispatches?namespace=${NS}`], ['schedules', `/schedules?namespace=${NS}`], ['identities', `/identities?namespace=${NS}`], ['admin', `/admin?namespace=${NS}`]]) {
    const res = await page.goto(`${URL_}${path}`);
    await page.screenshot({ path: artifact(`${view}.png`), fullPage: true });
    report({ check: `view-${view}`, status: res.status(), text: await page.locator('main').textContent() });
  }

  // Her schedule: run it now, then suspend it.
  const SCHEDULE = env('CONSOLE_SCHEDULE');
  await page.goto(`${URL_}/schedules?namespace=${NS}`);
  const section = `section.schedule[data-name="${SCHEDULE}"]`;
  const scheduleButtons = await page.locator(`${section} button`).count();
  await Promise.all([page.waitForNavigation(), page.click(`${section} button.run-now`)]);
  await Promise.all([page.waitForNavigation(), page.click(`${section} button.suspend`)]);
  report({ check: 'schedule', buttons: scheduleButtons, heading: await page.locator(`${section} h2`).textContent() });

  // 5. The card: alice owns it, so she sees the buttons and approves.
  await page.goto(`${URL_}/cards?namespace=${NS}`);
  const aliceButtons = await page.locator(`tr[data-name="${CARD}"] button`).count();
  await page.screenshot({ path: artifact('cards-alice.png'), fullPage: true });
  report({ check: 'card-alice', buttons: aliceButtons });

  await knowledge(page, dispatchUrl, commit);
  report({ check: 'csp', violations: csp });
  return { context, page, dispatchUrl, name };
}

// 4. Knowledge, as alice: the agent plants a symlink to a file outside the workspace, the run
// is stopped (its commit lands and the workspace is free), then the history, files, a diff and
// an upload.
async function knowledge(page, dispatchUrl, writeCommit) {
  const WS = `${URL_}/n/${NS}/workspaces/${WORKSPACE}`;
  await page.goto(dispatchUrl);
  const linked = await sendTurn(page, 'link /etc/passwd passwd-link\nsay linked it');
  const linkCommit = await page.locator(`#stream section[data-turn="${linked.id}"]`).getAttribute('data-commit');
  // Every live run of hers is stopped (the chat, and the routine "Run now" started, which
  // waited for the workspace): an upload is committed once the workspace is free.
  await page.goto(`${URL_}/dispatches?namespace=${NS}`);
  const live = await page.locator('#dispatches tbody tr').evaluateAll((trs) =>
    trs.filter((tr) => /running|starting|queued|pending/.test(tr.children[1].textContent)).map((tr) => tr.dataset.name));
  for (const name of live) {
    await page.goto(`${URL_}/n/${NS}/dispatches/${name}`);
    if (await page.locator('#stop button').count()) {
      await Promise.all([page.waitForNavigation(), page.click('#stop button')]);
    }
  }

  const list = await page.goto(`${URL_}/knowledge?namespace=${NS}`);
  await page.screenshot({ path: artifact('knowledge.png'), fullPage: true });
  report({ check: 'knowledge-list', status: list.status(), text: await page.locator('main').textContent() });

  const t0 = Date.now();
  const folder = await page.goto(WS);
  const firstReadMs = Date.now() - t0;
  const rows = async (selector, cells) => page.locator(selector).evaluateAll((trs, cells) =>
    trs.map((tr) => Object.fromEntries(cells.map((c, i) => [c, tr.children[i]?.textContent.trim() ?? '']).concat([['kind', tr.dataset.kind ?? ''], ['id', tr.dataset.commit ?? '']]))), cells);
  const files = await rows('#files tbody tr', ['name', 'size']);
  const history = await rows('#history tbody tr', ['short', 'summary', 'author', 'when']);
  await page.screenshot({ path: artifact('knowledge-folder.png'), fullPage: true });
  const t1 = Date.now();
  await page.goto(WS);
  report({ check: 'knowledge-folder', status: folder.status(), files, history, linkCommit, stopped: live, firstReadMs, warmReadMs: Date.now() - t1 });

  const file = async (path) => {
    const res = await page.goto(`${WS}/file?path=${encodeURIComponent(path)}`);
    return { status: res.status(), text: await page.locator('#blob').textContent().catch(() => null), main: await page.locator('main').textContent() };
  };
  report({ check: 'knowledge-file', written: await file('from-the-console.md'), link: await file('passwd-link') });
  // Hostile paths: refused with a message, before any read.
  report({ check: 'knowledge-traversal', escaped: await file('../../../etc/passwd'), absolute: await file('/etc/passwd') });

  const commitId = writeCommit;
  await page.goto(`${WS}/commits/${commitId}`);
  await page.screenshot({ path: artifact('knowledge-diff.png'), fullPage: true });
  report({
    check: 'knowledge-diff', commit: commitId,
    author: await page.locator('#author').textContent(),
    added: await page.locator('pre.patch span.add').allTextContents(),
    files: await page.locator('section.file').evaluateAll((s) => s.map((x) => x.dataset.path)),
  });

  // An upload: a file with markup in it, into a folder.
  await page.goto(WS);
  const uploadStart = Date.now();
  await page.fill('#upload input[name="path"]', 'notes/');
  await page.setInputFiles('#upload input[type="file"]', {
    name: 'uploaded.md', mimeType: 'text/markdown',
    buffer: Buffer.from('# Uploaded in the browser\n<script>window.__pwned = 4</script>\n'),
  });
  await Promise.all([page.waitForNavigation(), page.click('#upload button')]);
  const notice = await page.locator('#uploaded').textContent().catch(() => '');
  let uploaded = null;
  for (let i = 0; i < 120 && !uploaded; i++) {
    await page.goto(WS);
    uploaded = (await rows('#history tbody tr', ['short', 'summary', 'author', 'when'])).find((h) => h.summary === 'Upload notes/uploaded.md') ?? null;
    if (!uploaded) await page.waitForTimeout(1000);
  }
  const uploadMs = Date.now() - uploadStart;
  await page.screenshot({ path: artifact('knowledge-uploaded.png'), fullPage: true });
  const shown = await file('notes/uploaded.md');
  report({
    check: 'knowledge-upload', notice, uploaded, uploadMs, shown,
    pwned: await page.evaluate(() => window.__pwned ?? null),
    elements: await page.locator('#blob script').count(),
  });
}

async function bob(browser, dispatchUrl) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, env('BOB_TOKEN'));
  const list = await page.goto(`${URL_}/dispatches?namespace=${NS}`);
  const listText = await page.locator('main').textContent();
  await page.screenshot({ path: artifact('bob-dispatches.png'), fullPage: true });
  const direct = await page.goto(dispatchUrl);
  const directText = await page.locator('main').textContent();
  const stream = await page.evaluate(async (u) => {
    const r = await fetch(u, { headers: { Accept: 'text/event-stream' } });
    return { status: r.status, text: await r.text() };
  }, `${dispatchUrl}/stream`);
  // His own session and CSRF token, on alice's dispatch: RBAC refuses.
  await page.goto(`${URL_}/cards?namespace=${NS}`);
  const csrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
  const turn = await page.evaluate(async ({ u, csrf }) => {
    const r = await fetch(u, { method: 'POST', body: new URLSearchParams({ csrf, prompt: 'say from bob' }), headers: { Accept: 'application/json' } });
    return { status: r.status, text: await r.text() };
  }, { u: `${dispatchUrl}/turns`, csrf });
  report({ check: 'bob', list: list.status(), listText, direct: direct.status(), directText, stream, turn });
  // 3. alice's workspace: not listed, not readable, and his upload is refused.
  const ws = `${URL_}/n/${NS}/workspaces/${WORKSPACE}`;
  const knowledgeList = await page.goto(`${URL_}/knowledge?namespace=${NS}`);
  const knowledgeText = await page.locator('main').textContent();
  const folder = await page.goto(ws);
  const folderText = await page.locator('main').textContent();
  const file = await page.goto(`${ws}/file?path=from-the-console.md`);
  await page.screenshot({ path: artifact('bob-knowledge.png'), fullPage: true });
  await page.goto(`${URL_}/cards?namespace=${NS}`);
  const upload = await page.evaluate(async ({ u, csrf }) => {
    const form = new FormData();
    form.append('csrf', csrf);
    form.append('path', 'planted.md');
    form.append('file', new Blob(['from bob']), 'planted.md');
    const r = await fetch(u, { method: 'POST', body: form, headers: { Accept: 'application/json' } });
    return { status: r.status, text: await r.text() };
  }, { u: `${ws}/upload`, csrf });
  report({ check: 'bob-knowledge', list: knowledgeList.status(), listText: knowledgeText, folder: folder.status(), folderText, file: file.status(), upload });
  // 5. bob sees the card without buttons; his approval is refused by the cluster.
  const buttons = await page.locator(`tr[data-name="${CARD}"] button`).count();
  const cardRow = await page.locator(`tr[data-name="${CARD}"]`).count();
  await page.screenshot({ path: artifact('cards-bob.png'), fullPage: true });
  const approve = await page.evaluate(async ({ u, csrf }) => {
    const r = await fetch(u, { method: 'POST', body: new URLSearchParams({ csrf }), headers: { Accept: 'application/json' } });
    return { status: r.status, text: await r.text() };
  }, { u: `${URL_}/n/${NS}/cards/${CARD}/approve`, csrf });
  report({ check: 'card-bob', row: cardRow, buttons, approve });
  await context.close();
}

run(async () => {
  const browser = await launch();
  try {
    const a = await alice(browser);
    await bob(browser, a.dispatchUrl);
    // alice approves after bob was refused: the decision is hers.
    await a.page.goto(`${URL_}/cards?namespace=${NS}`);
    await Promise.all([a.page.waitForNavigation(), a.page.click(`tr[data-name="${CARD}"] button.approve`)]);
    report({ check: 'card-approved', decision: await a.page.locator(`tr[data-name="${CARD}"] td.decision`).textContent() });
  } finally {
    await browser.close();
  }
});
