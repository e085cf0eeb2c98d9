// The practitioner's billing page lists a consultation that really happened (two browsers, the
// patient admitted, then the consultation ended) and draws its billable minutes in the chart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startServer,
  launchBrowser,
  openParticipant,
  consultationId,
  waitForPrejoin,
  admit,
  waitFor,
  wallClockPast,
} from './harness.mjs';

test('billing page lists a real consultation with its billable time', { timeout: 120_000 }, async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'teleconsult-billing-'));
  const server = await startServer({
    extraEnv: { TELECONSULT_STORAGE__DATA_DIR: dataDir, TELECONSULT_BILLING__CHECKPOINT_SECS: '1' },
  });
  const browser = await launchBrowser();
  try {
    const consultation = consultationId('bill');
    const doctor = await openParticipant(browser, server, { consultation, identity: 'Dr Billing Page', role: 'practitioner' });
    const patient = await openParticipant(browser, server, { consultation, identity: 'Pat Billing', role: 'patient' });
    await Promise.all([doctor, patient].map(waitForPrejoin));
    await doctor.join();
    await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
    await patient.join();
    await admit(doctor, 'Pat Billing');
    await patient.page.getByRole('button', { name: 'Leave' }).waitFor();
    // The patient is in: the billing clock runs from (no later than) now.
    const admittedBy = Date.now();

    // The practitioner opens the billing page from the call (a new tab).
    const [billing] = await Promise.all([
      doctor.context.waitForEvent('page'),
      doctor.page.getByRole('button', { name: 'Billing', exact: true }).click(),
    ]);
    await billing.waitForLoadState();
    assert.equal(new URL(billing.url()).hash, '', 'the token left the address bar');
    await billing.getByRole('heading', { name: 'Your consultations' }).waitFor();

    // Reload until the listing satisfies `done(row)`: the token is kept in this tab's session
    // storage, never in the URL.
    const row = billing.locator(`#rows tr[data-consultation="${consultation}"]`);
    const listed = (what, done) =>
      waitFor(
        async () => {
          await billing.reload();
          await billing.waitForFunction(
            () => document.body.dataset.loaded === 'true' || document.getElementById('error').textContent !== '',
          );
          assert.equal(await billing.locator('#error').textContent(), '');
          return (await row.count()) === 1 && done(await row.textContent());
        },
        { what, timeoutMs: 20_000, intervalMs: 300 },
      );
    // The running consultation is stored (the clock started), listed as in progress.
    await listed('the consultation listed in progress', (text) => text.includes('in progress'));
    // Billable time is time itself: let a couple of seconds of it pass before the end.
    await wallClockPast(admittedBy + 2_000);
    await doctor.page.getByRole('button', { name: 'End consultation' }).click();
    await patient.page.getByRole('heading', { name: 'The consultation has ended' }).waitFor();
    await listed('the ended consultation listed', (text) => !text.includes('in progress'));
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[0], consultation);
    assert.match(cells[1], /^pt-[0-9a-f]{12}$/, 'a pseudonym, not the name');
    assert.match(cells[4], /^0:00:\d\d$/);
    const billableSeconds = Number(cells[4].slice(-2));
    assert.ok(billableSeconds >= 1, `billable time counted: ${cells[4]}`);
    assert.equal(cells[6], '2');
    assert.ok(!(await billing.content()).includes('Pat Billing'), 'no patient name on the page');

    // The chart has a bar for today with the billable minutes.
    const today = new Date().toISOString().slice(0, 10);
    const bar = billing.locator(`#chart rect.bar[data-day="${today}"]`);
    assert.equal(await bar.count(), 1);
    assert.ok(Number(await bar.getAttribute('data-minutes')) > 0);
    assert.ok(Number(await bar.getAttribute('height')) > 0);

    // Without a practitioner token the page refuses, and the API says 403.
    const patientPage = await patient.context.newPage();
    await patientPage.goto(`${server.base}/billing.html#token=${patient.token}`);
    await patientPage.getByText('This page needs a practitioner link').waitFor();
    const status = await patientPage.evaluate(async (t) => {
      const r = await fetch('/api/billing/export?from=2000-01-01&to=2100-01-01', { headers: { Authorization: `Bearer ${t}` } });
      return r.status;
    }, patient.token);
    assert.equal(status, 403);
  } finally {
    await browser.close().catch(() => {});
    await server.stop().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
});
