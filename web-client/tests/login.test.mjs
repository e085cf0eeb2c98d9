// Staff sign-in in a real browser: the demo practitioner of `serve --dev` signs in at /login,
// lands on the workspace (by session, no token in the URL), and is signed out by the server
// after the configured idle time — the page notices and returns to /login. A wrong password
// shows the same message as an unknown email.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';

// Printed by `serve --dev` (accounts/src/service.rs: DEMO_EMAIL, DEMO_PASSWORD).
const DEMO_EMAIL = 'practitioner@demo.teleconsult.test';
const DEMO_PASSWORD = 'demo-practitioner-password';
const IDLE_SECS = 3;

test('sign in, reach the workspace, idle logoff', { timeout: 90_000 }, async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'teleconsult-login-'));
  const server = await startServer({
    extraEnv: {
      TELECONSULT_STORAGE__DATA_DIR: dataDir,
      TELECONSULT_ACCOUNTS__IDLE_TIMEOUT_SECS: String(IDLE_SECS),
    },
  });
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    await page.goto(`${server.base}/login`);
    // Wrong password and unknown email read the same.
    const message = async (email, password) => {
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill(password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForFunction(() => document.getElementById('error').textContent !== '');
      const text = await page.locator('#error').textContent();
      await page.evaluate(() => {
        document.getElementById('error').textContent = '';
      });
      return text;
    };
    const wrong = await message(DEMO_EMAIL, 'not-the-password');
    const unknown = await message('nobody@demo.teleconsult.test', DEMO_PASSWORD);
    assert.equal(wrong, unknown);
    assert.match(wrong, /Sign-in failed/);

    await page.getByLabel('Email').fill(DEMO_EMAIL);
    await page.getByLabel('Password').fill(DEMO_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/workspace$/);
    await page.getByRole('heading', { name: 'Your consultations' }).waitFor();
    await page.waitForFunction(() => document.body.dataset.loaded === 'true' || document.getElementById('error').textContent !== '');
    assert.equal(await page.locator('#error').textContent(), '');
    assert.match(await page.locator('#whoami').textContent(), /Demo Practitioner/);
    // The session cookie is invisible to scripts and strict.
    assert.equal(await page.evaluate(() => document.cookie), '');
    const [cookie] = await context.cookies();
    assert.equal(cookie.name, 'teleconsult_session');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();

    // Leave the page alone: the server ends the session after IDLE_SECS without a request, and
    // the page goes back to the sign-in page saying why.
    await page.waitForURL(/\/login#.*reason=idle/, { timeout: (IDLE_SECS + 15) * 1000 });
    await page.getByText('You were signed out after a period of inactivity.').waitFor();
    const status = await page.evaluate(async () => (await fetch('/api/auth/session')).status);
    assert.equal(status, 401);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
