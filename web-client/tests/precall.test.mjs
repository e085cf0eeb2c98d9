// The pre-call check in the waiting room: the camera preview plays, the microphone meter moves
// with Chromium's fake microphone (its beep), the speaker test plays, and the connection test
// gives a verdict in words with the measured round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin } from './harness.mjs';

test('pre-call check: preview, microphone meter, connection verdict', { timeout: 60_000 }, async () => {
  await withCall('precall', async ({ open }) => {
    const patient = await open({ consultation: consultationId('precall'), identity: 'Pat Check', role: 'patient' });
    await waitForPrejoin(patient);
    await patient.join();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'waiting');
    const page = patient.page;
    await page.locator('#precall').waitFor();
    // The camera preview plays.
    await page.waitForFunction(() => document.getElementById('waiting-preview').videoWidth > 0);
    // The meter follows the microphone: the fake one beeps, so its level goes above silence.
    await page.waitForFunction(() => document.getElementById('mic-meter').value > 0.01, null, { timeout: 10_000 });
    await page.locator('#precall-speaker').click();
    // The connection test: five round trips over the signalling socket, a verdict in words.
    await page.locator('#precall-run').click();
    await page.waitForFunction(() => document.getElementById('precall-result').dataset.verdict);
    const verdict = await page.locator('#precall-result').evaluate((el) => ({ verdict: el.dataset.verdict, rtt: Number(el.dataset.rtt), text: el.textContent }));
    // A verdict in words, naming the measured round trip (which verdict depends on the
    // machine's load: not asserted, as no timing is).
    assert.ok(['video', 'video_slow', 'audio'].includes(verdict.verdict), JSON.stringify(verdict));
    assert.ok(Number.isFinite(verdict.rtt) && verdict.rtt >= 0, JSON.stringify(verdict));
    assert.match(verdict.text, new RegExp(`\\b${verdict.rtt} ms\\b`));
    assert.match(verdict.text, /good for video|should work|audio only/);
    assert.ok(!patient.consoleText().includes('[pageerror]'), patient.consoleText());
  });
});
