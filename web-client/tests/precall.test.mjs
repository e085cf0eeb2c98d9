// The pre-call check in the waiting room: the camera preview plays, the microphone meter moves
// with Chromium's fake microphone (its beep), the speaker test plays, and the connection test
// gives a verdict in words with the measured round trip, after two media sessions of its own
// with the server: the media port reached over UDP and over TCP (on loopback both work), an
// upstream estimate from the browser's statistics; the patient is still waiting afterwards.
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
    // The connection test: two media sessions (UDP only, TCP only), a verdict in words.
    await page.locator('#precall-run').click();
    await page.waitForFunction(() => document.getElementById('precall-result').dataset.verdict, null, { timeout: 40_000 });
    const verdict = await page.locator('#precall-result').evaluate((el) => ({ ...el.dataset, rtt: Number(el.dataset.rtt), text: el.textContent }));
    assert.equal(await page.evaluate(() => window.teleconsult.precallSource), 'camera');
    assert.equal(verdict.udp, 'true', `the media port over UDP: ${JSON.stringify(verdict)}`);
    assert.equal(verdict.tcp, 'true', `the media port over TCP: ${JSON.stringify(verdict)}`);
    assert.ok(Number(verdict.up) > 0, `an upstream estimate: ${JSON.stringify(verdict)}`);
    const details = await page.locator('#precall-details li').allTextContents();
    assert.deepEqual(details.slice(0, 2), [
      'The video server can be reached over UDP (best for calls).',
      'The video server can be reached over TCP.',
    ]);
    assert.match(details[2], /^Estimated upload: [\d.,]+ Mbit\/s\.$/);
    assert.equal(await page.evaluate(() => window.teleconsult.state), 'waiting');
    // A verdict in words, naming the measured round trip (which verdict depends on the
    // machine's load: not asserted, as no timing is).
    assert.ok(['video', 'video_slow', 'audio'].includes(verdict.verdict), JSON.stringify(verdict));
    assert.ok(Number.isFinite(verdict.rtt) && verdict.rtt >= 0, JSON.stringify(verdict));
    assert.match(verdict.text, new RegExp(`\\b${verdict.rtt} ms\\b`));
    assert.match(verdict.text, /good for video|should work|audio only/);
    assert.ok(!patient.consoleText().includes('[pageerror]'), patient.consoleText());
  });
});
