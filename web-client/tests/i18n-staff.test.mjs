// Languages on the staff pages: with the browser asking for French, then German, the landing
// page, the practitioner's workspace (a consultation planned, one cancelled, its chat opened),
// the billing page, the account page and the admin page (accounts and API keys) carry no English
// sentence (every text node, aria-label, alt text and the title, against the English catalogue),
// and a refused request is said in the page's language from the server's error code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fr from '../public/locales/fr.js';
import de from '../public/locales/de.js';
import { withCall, signInPractitioner, createConsultation, BIN } from './harness.mjs';
import { englishLeft } from './i18n-check.mjs';

const ADMIN_EMAIL = 'admin-i18n@demo.teleconsult.test';
const ADMIN_PASSWORD = 'an admin password for the language test';

/** `teleconsult admin create-account` (admin and billing) for the demo organisation. */
function createAdmin(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      BIN,
      ['admin', 'create-account', '--dev', '--organisation', 'org_demo', '--email', ADMIN_EMAIL,
        '--display-name', 'Admin Sprache', '--role', 'admin', '--role', 'billing'],
      { env, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { out += c; });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`create-account: ${code}\n${out}`))));
    child.stdin.end(`${ADMIN_PASSWORD}\n`);
  });
}

async function loaded(page) {
  await page.waitForFunction(() => document.body.dataset.loaded === 'true' || document.getElementById('error').textContent !== '');
  assert.equal(await page.locator('#error').textContent(), '', 'the page loaded without an error');
}

for (const [lang, target] of [['fr-FR', fr], ['de-DE', de]]) {
  test(`staff pages in ${lang}: no English left`, { timeout: 120_000 }, async () => {
    await withCall(`i18n-staff-${lang}`, async ({ server, browser, participants }) => {
      const base = lang.slice(0, 2);
      await createAdmin(server.env);

      // The landing page.
      const ctx = await browser.newContext({ locale: lang });
      const landing = await ctx.newPage();
      await landing.goto(`${server.base}/`);
      await landing.waitForFunction((l) => document.documentElement.lang === l, base);
      assert.deepEqual(await englishLeft(landing, target), [], 'landing page');
      await ctx.close();

      // The workspace with one planned and one cancelled consultation (its chat opened).
      const doctor = await signInPractitioner({ server, browser, participants }, { locale: lang });
      const page = doctor.page;
      assert.equal(await page.evaluate(() => document.documentElement.lang), base);
      await createConsultation(doctor, server, { patient: 'Planned 1', guests: ['Interprète 1'] });
      await createConsultation(doctor, server, { patient: 'Cancelled 2' });
      await page.locator('li.ws-item', { hasText: 'Cancelled 2' }).locator('.ws-actions button.danger').click();
      const past = page.locator('#past li.ws-item', { hasText: 'Cancelled 2' });
      await past.waitFor();
      await past.locator('.ws-chat button').click();
      await past.locator('.ws-chat-log li').first().waitFor();
      // A guest row added and not submitted: its label and button are translated too.
      await page.locator('#add-guest').click();
      // `serve --dev`'s demo consultation is labelled "Patient": data, as typed, not interface.
      assert.deepEqual(await englishLeft(page, target, { data: ['Patient'] }), [], 'workspace');

      // A refused request, said from its code: an empty patient label posted straight to the API.
      const refused = await page.evaluate(async () => {
        const { api } = await import('/staff-session.js');
        try {
          await api('/api/workspace/consultations', { method: 'POST', body: { patient_label: ' ', guests: [] } });
          return null;
        } catch (e) {
          return { code: e.code, message: e.message };
        }
      });
      assert.equal(refused.code, 'bad_patient_label', JSON.stringify(refused));
      assert.equal(refused.message, target.apiErrors.bad_patient_label);

      // Billing (the practitioner's own consultations) and the account page.
      await page.goto(`${server.base}/billing.html`);
      await loaded(page);
      assert.deepEqual(await englishLeft(page, target), [], 'billing page');
      await page.goto(`${server.base}/account.html`);
      await page.locator('#totp-state').waitFor();
      await page.waitForFunction(() => document.getElementById('totp-state').textContent !== '');
      assert.deepEqual(await englishLeft(page, target), [], 'account page');

      // The admin page, with an API key in its list.
      const adminCtx = await browser.newContext({ locale: lang });
      const admin = await adminCtx.newPage();
      await admin.goto(`${server.base}/login`);
      await admin.locator('#email').fill(ADMIN_EMAIL);
      await admin.locator('#password').fill(ADMIN_PASSWORD);
      await admin.locator('form button[type="submit"]').click();
      await admin.waitForURL((u) => !u.pathname.startsWith('/login'));
      await admin.goto(`${server.base}/admin`);
      await loaded(admin);
      await admin.locator('#key-name').fill('Agenda');
      await admin.locator('#create-key button[type="submit"]').click();
      await admin.locator('#key-rows tr').first().waitFor();
      assert.deepEqual(await englishLeft(admin, target), [], 'admin page');
      await adminCtx.close();
    });
  });
}
