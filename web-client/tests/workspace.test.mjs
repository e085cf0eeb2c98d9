// The practitioner's workspace in real browsers: the demo practitioner of `serve --dev` signs in,
// creates a consultation with an interpreter guest, reads both links from the page, starts the
// call from the workspace (their own session, no link); the patient and the interpreter open
// their links in their own browser contexts, wait, are admitted, and all three decode each
// other's video. Then the practitioner cancels from the workspace and both links stop working.
// The page is also checked at 360 px wide (no horizontal scrolling).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, waitForPrejoin, admit, waitForRemoteMedia } from './harness.mjs';

// Printed by `serve --dev` (accounts/src/service.rs: DEMO_EMAIL, DEMO_PASSWORD).
const DEMO_EMAIL = 'practitioner@demo.teleconsult.test';
const DEMO_PASSWORD = 'demo-practitioner-password';

test('workspace: create with a guest, start, admit, three-way video, cancel', { timeout: 180_000 }, async () => {
  await withCall('workspace', async ({ server, browser, participants, openLink }) => {
    // The practitioner, in a context of their own (cookie jar, camera).
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: server.base });
    const page = await context.newPage();
    const doctor = { context, page, label: 'practitioner', token: '', console: [] };
    doctor.consoleText = () => doctor.console.join('\n');
    page.on('console', (m) => doctor.console.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => doctor.console.push(`[pageerror] ${e.message}`));
    participants.push(doctor);
    page.on('dialog', (d) => d.accept());

    await page.goto(`${server.base}/login`);
    await page.getByLabel('Email').fill(DEMO_EMAIL);
    await page.getByLabel('Password').fill(DEMO_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/workspace$/);
    await page.waitForFunction(() => document.body.dataset.loaded === 'true');

    // New consultation: a patient label (not a name) and an interpreter.
    await page.getByLabel('Patient label').fill('Patient 42');
    await page.getByRole('button', { name: 'Add a guest' }).click();
    await page.getByLabel('Guest 1 label').fill('Interpreter');
    await page.getByRole('button', { name: 'Create consultation' }).click();
    const patientField = page.getByLabel('Link for Patient Patient 42', { exact: true });
    const guestField = page.getByLabel('Link for Guest Interpreter', { exact: true });
    await patientField.waitFor();
    const patientUrl = await patientField.inputValue();
    const guestUrl = await guestField.inputValue();
    assert.match(patientUrl, new RegExp(`^${server.base}/join#token=[A-Za-z0-9_.-]+$`));
    assert.match(guestUrl, new RegExp(`^${server.base}/join#token=[A-Za-z0-9_.-]+$`));
    assert.notEqual(patientUrl, guestUrl);
    const tokens = [patientUrl, guestUrl].map((u) => u.split('#token=')[1]);
    doctor.token = tokens[0];
    assert.equal(await page.locator('#error').textContent(), '');
    // The patient's link as a QR code (an SVG rendered by the server).
    await page.getByRole('button', { name: 'Show QR code for Patient Patient 42' }).click();
    const qr = page.getByRole('img', { name: 'QR code of the link for Patient Patient 42' });
    await qr.waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('img.ws-qr')].some((i) => !i.hidden && i.naturalWidth > 0));

    // Start: the call page, joined by this session (no token in the address bar).
    await page.getByRole('button', { name: 'Start consultation with Patient 42' }).click();
    await page.waitForURL(/\/join$/);
    await page.getByRole('button', { name: 'Join', exact: true }).waitFor();
    await page.waitForFunction(() => !document.getElementById('join').disabled);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    await page.getByRole('button', { name: 'End consultation' }).waitFor();

    const patient = await openLink(patientUrl, { identity: 'Patient 42', role: 'patient', token: tokens[0] });
    const interpreter = await openLink(guestUrl, { identity: 'Interpreter', role: 'guest', token: tokens[1] });
    await Promise.all([patient, interpreter].map(waitForPrejoin));
    await patient.join();
    await interpreter.join();
    await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    await interpreter.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    const lead = { page };
    await admit(lead, 'Patient 42');
    await admit(lead, 'Interpreter');

    const all = [
      { page, label: 'practitioner' },
      patient,
      interpreter,
    ];
    const results = await Promise.all(all.map((p) => waitForRemoteMedia(p, { videos: 2, audios: 2, timeoutMs: 60_000 })));
    for (const [i, r] of results.entries()) {
      assert.equal(r.growingVideos.length, 2, `${all[i].label} decodes both remote videos`);
      assert.equal(new Set(r.growingVideos.map((s) => s.ssrc)).size, 2);
    }

    // Back to the workspace (the call ends for everyone when cancelled): cancel, confirm.
    await page.goto(`${server.base}/workspace`);
    await page.waitForFunction(() => document.body.dataset.loaded === 'true');
    await page.getByRole('button', { name: 'Cancel consultation with Patient 42' }).click();
    await page.getByText('Consultation with Patient 42 cancelled').waitFor();
    // The call ended on the patient's page.
    await patient.page.getByRole('heading', { name: 'The consultation has ended' }).waitFor();
    // The links no longer work: a fresh browser opening either is refused as cancelled.
    for (const [url, token, label] of [
      [patientUrl, tokens[0], 'patient again'],
      [guestUrl, tokens[1], 'guest again'],
    ]) {
      const again = await openLink(url, { identity: label, token });
      await waitForPrejoin(again);
      await again.join();
      await again.page.getByText('This consultation was cancelled by your practice.').waitFor();
    }
    // No link fields are shown for it any more; it is listed under "Past and cancelled".
    // (The demo consultation of `serve --dev` keeps its own link.)
    assert.equal(await patientField.count(), 0);
    assert.equal(await guestField.count(), 0);
    await page.getByRole('region', { name: 'Past and cancelled' }).getByText(/^Cancelled · /).waitFor();

    // 360 px wide: nothing scrolls sideways.
    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the workspace scrolls ${overflow} px sideways at 360 px`);
    assert.ok(!doctor.consoleText().includes('[pageerror]'), doctor.consoleText());
  });
});
