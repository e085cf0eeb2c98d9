// (e) Muting the microphone (and turning the camera off) shows on the other page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit } from './harness.mjs';

test('muting the microphone shows the mute indicator on the other page', { timeout: 120_000 }, async () => {
  await withCall('mute', async ({ open }) => {
    const consultation = consultationId('mute');
    const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    const patient = await open({ consultation, identity: 'Pat Example', role: 'patient' });
    await Promise.all([doctor, patient].map(waitForPrejoin));
    await patient.join();
    await doctor.join();
    await admit(doctor, 'Pat Example');

    const tileOnDoctor = doctor.page.getByRole('group', { name: /^Pat Example \(patient\)/ });
    await tileOnDoctor.waitFor();
    assert.doesNotMatch(await tileOnDoctor.getAttribute('aria-label'), /microphone muted/);
    const badge = doctor.page.locator('#tiles li .mic-muted');
    assert.equal(await badge.isVisible(), false);

    // Mute: the toggle is pressed (aria-pressed), the track is disabled, the doctor sees the
    // indicator.
    const mic = patient.page.getByRole('button', { name: 'Mute microphone' });
    assert.equal(await mic.getAttribute('aria-pressed'), 'false');
    await mic.click();
    await patient.page.getByRole('button', { name: 'Mute microphone', pressed: true }).waitFor();
    assert.equal(
      await patient.page.evaluate(() =>
        window.teleconsult.pc.getSenders().filter((s) => s.track && s.track.kind === 'audio').every((s) => !s.track.enabled),
      ),
      true,
    );
    await doctor.page.getByRole('group', { name: /^Pat Example \(patient\), microphone muted/ }).waitFor();
    await badge.waitFor({ state: 'visible' });
    assert.equal(await badge.textContent(), 'Microphone muted');

    // Unmute: the indicator goes away.
    await mic.click();
    assert.equal(await mic.getAttribute('aria-pressed'), 'false');
    await badge.waitFor({ state: 'hidden' });

    // Camera off shows too.
    await patient.page.getByRole('button', { name: 'Turn camera off' }).click();
    await patient.page.getByRole('button', { name: 'Turn camera off', pressed: true }).waitFor();
    await doctor.page.locator('#tiles li .cam-off').waitFor({ state: 'visible' });
  });
});
