// API keys on the admin page in a real browser: an admin creates a key (shown once), a booking
// system uses it to create a consultation through /api/v1 (its "last used" appears), the admin
// revokes it and the API refuses it with 401.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startServer, launchBrowser, BIN } from './harness.mjs';

const ADMIN_EMAIL = 'admin@demo.teleconsult.test';
const ADMIN_PASSWORD = 'an admin password for this test';

/** `teleconsult admin create-account` for the demo organisation, password on standard input. */
function createAdmin(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      BIN,
      ['admin', 'create-account', '--dev', '--organisation', 'org_demo', '--email', ADMIN_EMAIL,
        '--display-name', 'Demo Admin', '--role', 'admin'],
      { env, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { out += c; });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`create-account: ${code}\n${out}`))));
    child.stdin.end(`${ADMIN_PASSWORD}\n`);
  });
}

test('an admin creates, sees used, and revokes an API key', { timeout: 90_000 }, async () => {
  const server = await startServer();
  await createAdmin(server.env);
  const browser = await launchBrowser();
  try {
    const page = await (await browser.newContext()).newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.base}/login`);
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => !u.pathname.startsWith('/login'));
    await page.goto(`${server.base}/admin`);
    await page.getByRole('heading', { name: 'API keys' }).waitFor();

    await page.getByLabel('Name of the system using it').fill('Booking system');
    await page.getByRole('button', { name: 'Create API key' }).click();
    const banner = page.locator('#key-secret');
    await banner.waitFor({ state: 'visible' });
    const key = /(tc_[0-9a-f]{24}_[0-9a-f]{64})/.exec(await banner.textContent())?.[1];
    assert.ok(key, 'the key is shown once');
    const row = page.locator('#key-rows tr', { hasText: 'Booking system' });
    await row.waitFor();
    assert.equal(await page.locator('#key-rows').textContent().then((t) => t.includes(key)), false);

    // The booking system uses it.
    const { accounts } = await page.evaluate(async () => (await fetch('/api/admin/accounts')).json());
    const practitioner = accounts.find((a) => a.roles.includes('practitioner')).id;
    const book = () =>
      fetch(`${server.base}/api/v1/consultations`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({
          practitioner,
          scheduled_at: new Date(Date.now() + 600_000).toISOString(),
          patient: { label: 'Booking 1' },
        }),
      });
    const created = await book();
    assert.equal(created.status, 201);
    assert.match((await created.json()).invitations[0].link, /\/join#token=/);

    // Reloaded, the page shows the use; revoke it.
    await page.reload();
    await row.waitFor();
    assert.doesNotMatch(await row.locator('td').nth(3).textContent(), /—/);
    await page.getByRole('button', { name: 'Revoke API key Booking system' }).click();
    await page.locator('#key-rows tr', { hasText: 'revoked' }).waitFor();
    const refused = await book();
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).code, 'invalid_api_key');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
