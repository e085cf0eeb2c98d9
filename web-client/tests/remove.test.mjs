// The practitioner removes a participant: the removed page says so and its media stops, the
// others lose that tile, and the call goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit, tiles } from './harness.mjs';

test('Remove takes a participant out of the call for everyone', { timeout: 120_000 }, async () => {
  await withCall('remove', async ({ open }) => {
    const consultation = consultationId('remove');
    const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    const patient = await open({ consultation, identity: 'Pat Example', role: 'patient' });
    const family = await open({ consultation, identity: 'Fay Family', role: 'guest' });
    await Promise.all([doctor, patient, family].map(waitForPrejoin));

    await doctor.join();
    await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
    await patient.join();
    await family.join();
    await admit(doctor, 'Pat Example');
    await admit(doctor, 'Fay Family');
    for (const p of [doctor, patient, family]) {
      await p.page.waitForFunction(() => document.querySelectorAll('#tiles > li').length === 2);
    }

    await doctor.page.getByRole('button', { name: 'Remove Fay Family' }).click();
    await family.page.getByRole('heading', { name: 'You were removed from the consultation' }).waitFor();
    assert.equal(await family.page.evaluate(() => window.teleconsult.pc), null, 'media is torn down');
    for (const p of [doctor, patient]) {
      await p.page.getByRole('group', { name: /^Fay Family \(/ }).waitFor({ state: 'detached' });
      assert.equal(await tiles(p).count(), 1, `${p.label} has one tile left`);
    }
    // The call itself goes on.
    assert.equal(await patient.page.evaluate(() => window.teleconsult.state), 'in_call');
  });
});
