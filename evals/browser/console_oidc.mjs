// Signing in to the web console at the cluster's OpenID provider (Keycloak), in a real browser
// (evals/tests/console_oidc.rs starts the console and gives this script its people):
//   - bob starts a sign-in, logs in at Keycloak, and his browser's way back to the console is
//     caught: that callback URL, opened in alice's browser (a login CSRF), signs nobody in, and
//     opened again in his own it is spent. A state the console never issued is refused.
//   - bob signs in for real: the cluster calls him `oidc:bob`, and RBAC refuses him the
//     namespace's dispatches; alice signs in as `oidc:alice` and sees them.
//   - alice's ID token expires while she is signed in: the console renews it, her pages work.
//   - tokens the cluster must not accept, pasted into the token form, are refused; an error the
//     provider sends back is shown as text.
//   - alice signs out: the console's session and the provider's end, so signing in again asks
//     for her password.

import { launch, report, artifact, run } from './lib.mjs';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env('CONSOLE_URL');
const NS = env('CONSOLE_NAMESPACE');
const RENEW_WAIT_MS = Number(env('RENEW_WAIT_MS'));
const CALLBACK = `${URL_}/signin/oidc/callback`;

// From the console's sign-in page to Keycloak's form; returns once the form is shown.
async function toProvider(page) {
  await page.goto(`${URL_}/signin`);
  await Promise.all([page.waitForURL(/\/protocol\/openid-connect\/auth/), page.click('#signin-oidc')]);
  await page.waitForSelector('#username');
}

async function logIn(page, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#kc-login');
}

async function signIn(page, user, password) {
  await toProvider(page);
  await page.screenshot({ path: artifact(`keycloak-${user}.png`), fullPage: true });
  // From the password sent to the console's first page: Keycloak, the code traded, the API
  // server asked who it is, the session made.
  const t0 = Date.now();
  await Promise.all([page.waitForURL(`${URL_}/dispatches**`, { timeout: 30000 }), logIn(page, user, password)]);
  report({ check: `sign-in-ms-${user}`, ms: Date.now() - t0 });
  return page.locator('#person').textContent();
}

const text = (page) => page.locator('main').textContent();

run(async () => {
  // The provider's certificate is signed by the cluster's CA, which this browser does not
  // know; the console itself checks it against that CA.
  const browser = await launch();
  const context = () => browser.newContext({ ignoreHTTPSErrors: true });
  try {
    // bob's sign-in, caught on its way back to the console.
    const bobCtx = await context();
    const bob = await bobCtx.newPage();
    // Keycloak answers his password with a redirect to the console's callback; that redirect
    // is taken here (Playwright does not route the redirected request itself) and not followed.
    let caught = null;
    const LOGIN_POST = '**/login-actions/authenticate**';
    await bob.route(LOGIN_POST, async (route) => {
      const answer = await route.fetch({ maxRedirects: 0 });
      caught = answer.headers()['location'] ?? null;
      await route.fulfill({ status: 200, contentType: 'text/plain', body: 'caught' });
    });
    await toProvider(bob);
    await logIn(bob, 'bob', env('BOB_PASSWORD'));
    for (let i = 0; i < 100 && !caught; i++) await bob.waitForTimeout(100);
    if (!caught || !caught.startsWith(CALLBACK)) throw new Error(`the callback was not caught: ${caught}`);
    await bob.unroute(LOGIN_POST);

    // alice's browser is made to open it.
    const aliceCtx = await context();
    const alice = await aliceCtx.newPage();
    const csrf = await alice.goto(caught);
    const csrfText = await text(alice);
    const after = await alice.goto(`${URL_}/dispatches?namespace=${NS}`);
    report({ check: 'login-csrf', status: csrf.status(), text: csrfText, afterUrl: alice.url(), afterStatus: after.status(), hasCode: caught.includes('code=') });
    // bob's own browser, with his cookie: the state is spent.
    const replay = await bob.goto(caught);
    report({ check: 'replay', status: replay.status(), text: await text(bob) });
    await bobCtx.close();

    // A state the console never issued, from a browser that has a sign-in under way (a fresh
    // one: bob's first browser has a session at Keycloak, which would sign him straight in).
    const bob2Ctx = await context();
    const bob2 = await bob2Ctx.newPage();
    await toProvider(bob2);
    const forged = await bob2.goto(`${CALLBACK}?state=forged&code=forged`);
    report({ check: 'forged-state', status: forged.status(), text: await text(bob2) });
    // The provider's error, with markup in it: shown as text.
    const error = await bob2.goto(`${CALLBACK}?error=access_denied&error_description=${encodeURIComponent('<img src=x onerror="window.__pwned=1">no')}`);
    report({
      check: 'provider-error',
      status: error.status(),
      text: await text(bob2),
      pwned: await bob2.evaluate(() => window.__pwned === 1),
      images: await bob2.locator('main img').count(),
    });

    // bob, for real.
    const bobName = await signIn(bob2, 'bob', env('BOB_PASSWORD'));
    const bobList = await bob2.goto(`${URL_}/dispatches?namespace=${NS}`);
    await bob2.screenshot({ path: artifact('oidc-bob-refused.png'), fullPage: true });
    report({ check: 'bob', person: bobName, status: bobList.status(), text: await text(bob2) });
    await bob2Ctx.close();

    // alice.
    const aliceName = await signIn(alice, 'alice', env('ALICE_PASSWORD'));
    const cookies = (await aliceCtx.cookies()).filter((c) => c.value !== '');
    const list = await alice.goto(`${URL_}/dispatches?namespace=${NS}`);
    await alice.screenshot({ path: artifact('oidc-alice.png'), fullPage: true });
    report({
      check: 'alice',
      person: aliceName,
      status: list.status(),
      text: await text(alice),
      cookies: cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure })),
    });

    // Past her ID token's expiry: the console renewed it.
    await alice.waitForTimeout(RENEW_WAIT_MS);
    const later = await alice.goto(`${URL_}/dispatches?namespace=${NS}`);
    report({ check: 'renewed', status: later.status(), url: alice.url(), person: await alice.locator('#person').textContent(), text: await text(alice) });

    // Tokens the cluster must not accept, through the token form.
    const paste = async (token) =>
      alice.evaluate(async (token) => {
        const r = await fetch('/signin', { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
        return { status: r.status, text: await r.text() };
      }, token);
    report({ check: 'pasted', forged: await paste(env('FORGED_TOKEN')), otherIssuer: await paste(env('OTHER_ID_TOKEN')) });

    // Sign out: then the provider asks for her password again.
    await Promise.all([alice.waitForURL(`${URL_}/signin`), alice.click('header form.inline button')]);
    await alice.goto(`${URL_}/dispatches?namespace=${NS}`);
    const afterUrl = alice.url();
    // Had the provider's session outlived the console's, it would send her straight back.
    await alice.goto(`${URL_}/signin`);
    await Promise.all([alice.waitForLoadState('load'), alice.click('#signin-oidc')]);
    await alice.waitForTimeout(2000);
    report({ check: 'signed-out', afterUrl, url: alice.url(), providerAsks: await alice.locator('#password').count() });
    await aliceCtx.close();
  } finally {
    await browser.close();
  }
});
