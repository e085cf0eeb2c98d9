// The practitioner plays a recording back from the workspace (issue 13, access): the demo
// practitioner signs in, creates a `recordable` consultation, starts it from the workspace,
// records the patient with consent, ends it; the past consultation then lists the recording,
// "Play" shows one player per participant, and the player really decodes the file and seeks in
// it (by HTTP Range: the server answers 206). "Delete" removes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, waitForPrejoin, admit, waitForRemoteMedia, waitFor, signInPractitioner } from './harness.mjs';

/** Media flows for this long: what the test records (a span of media, not a wait for an event). */
const media = (ms) => new Promise((r) => setTimeout(r, ms));

test('workspace: a recorded consultation plays back per participant, seeks by Range, and is deleted', { timeout: 180_000 }, async () => {
  await withCall('recording-playback', async (ctx) => {
    const doctor = await signInPractitioner(ctx);
    const page = doctor.page;
    await page.getByLabel('Patient label').fill('Patient 77');
    await page.locator('#policy').selectOption('recordable');
    await page.getByRole('button', { name: 'Create consultation' }).click();
    const field = page.getByLabel('Link for Patient Patient 77', { exact: true });
    await field.waitFor();
    const patientUrl = await field.inputValue();
    const token = patientUrl.split('#token=')[1];

    await page.getByRole('button', { name: 'Start consultation with Patient 77' }).click();
    await page.waitForURL(/\/join$/);
    await page.waitForFunction(() => !document.getElementById('join').disabled);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    await page.getByRole('button', { name: 'End consultation' }).waitFor();
    const patient = await ctx.openLink(patientUrl, { identity: 'Patient 77', role: 'patient', token });
    await waitForPrejoin(patient);
    await patient.join();
    await admit({ page }, 'Patient 77');
    await Promise.all([
      waitForRemoteMedia({ page, label: 'practitioner' }, { videos: 1, audios: 1 }),
      waitForRemoteMedia(patient, { videos: 1, audios: 1 }),
    ]);

    await page.getByRole('button', { name: 'Record', exact: true }).click();
    const dialog = patient.page.getByRole('alertdialog', { name: 'Recording request' });
    await dialog.getByRole('button', { name: 'I agree to be recorded' }).click();
    await waitFor(async () => (await page.evaluate(() => window.teleconsult.recording.recorded.length)) === 2, {
      what: 'both recorded',
    });
    await media(6_000);
    await page.getByRole('button', { name: 'Stop recording', exact: true }).click();
    await page.getByRole('button', { name: 'End consultation' }).click();

    // Back in the workspace: the past consultation lists its recording (once it is stored).
    const ranges = [];
    page.on('response', (r) => {
      if (r.url().includes('/recordings/') && r.url().includes('/files/')) ranges.push({ status: r.status(), range: r.request().headers().range ?? null });
    });
    await page.goto(`${ctx.server.base}/workspace`);
    await page.waitForFunction(() => document.body.dataset.loaded === 'true');
    const past = page.locator('#past li.ws-item').filter({ hasText: 'Patient 77' });
    await waitFor(
      async () => {
        await past.getByRole('button', { name: 'Show the recordings of the consultation with Patient 77' }).click();
        return (await past.locator('li.ws-recording').count()) === 1;
      },
      { what: 'the recording listed once stored', timeoutMs: 20_000, intervalMs: 500 },
    );
    await past.locator('li.ws-recording').getByRole('button', { name: /^Play the recording of / }).click();
    const players = past.locator('video.ws-player');
    await waitFor(async () => (await players.count()) === 2, { what: 'one player per participant' });
    const captions = (await past.locator('.ws-players figcaption').allTextContents()).map((t) => t.split(' · ')[0]);
    assert.ok(captions.includes('Patient 77'), `players named by pseudonym: ${captions}`);

    // The patient's player decodes the file and seeks in it.
    const player = past.locator('figure').filter({ hasText: 'Patient 77' }).locator('video');
    const info = await waitFor(
      () =>
        player.evaluate((v) =>
          v.readyState >= 1 && Number.isFinite(v.duration) && v.duration > 0 ? { duration: v.duration, w: v.videoWidth } : null,
        ),
      { what: 'the player has the file\'s metadata', timeoutMs: 20_000 },
    );
    assert.ok(info.duration >= 4, `${info.duration} s recorded`);
    assert.ok(info.w > 0, 'a video track');
    await player.evaluate(
      (v) =>
        new Promise((resolve, reject) => {
          v.muted = true;
          v.addEventListener('seeked', resolve, { once: true });
          v.addEventListener('error', () => reject(new Error(`media error ${v.error && v.error.code}`)), { once: true });
          v.currentTime = v.duration / 2;
        }),
    );
    await waitFor(() => player.evaluate((v) => v.readyState >= 2), { what: 'a frame decoded after the seek' });
    assert.ok(ranges.some((r) => r.status === 206 && r.range), `ranged requests answered 206: ${JSON.stringify(ranges)}`);

    // Deleted: the list no longer has it.
    await past.locator('li.ws-recording').getByRole('button', { name: /^Delete the recording of / }).click();
    await waitFor(async () => (await past.locator('li.ws-recording').count()) === 0, { what: 'the recording gone from the list' });
    await page.locator('#status').getByText('Recording deleted.').waitFor();
  });
});
