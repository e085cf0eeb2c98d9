// (c) Leaving removes a tile everywhere; ending the consultation ends it for everyone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit, tiles, visibleHeading } from './harness.mjs';

test('leave removes the tile for the others; End consultation ends every page', { timeout: 120_000 }, async () => {
  await withCall('leave-and-end', async ({ open }) => {
    const consultation = consultationId('end');
    const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    const patient = await open({ consultation, identity: 'Pat Example', role: 'patient' });
    const guest = await open({ consultation, identity: 'Gus Guest', role: 'guest' });
    await Promise.all([doctor, patient, guest].map(waitForPrejoin));

    await doctor.join();
    await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
    await patient.join();
    await guest.join();
    await admit(doctor, 'Pat Example');
    await admit(doctor, 'Gus Guest');

    for (const p of [doctor, patient, guest]) {
      await p.page.getByRole('button', { name: 'Leave' }).waitFor();
      await p.page.waitForFunction(() => document.querySelectorAll('#tiles > li').length === 2);
    }
    await doctor.page.getByRole('group', { name: /^Gus Guest \(guest\)/ }).waitFor();
    await patient.page.getByRole('group', { name: /^Gus Guest \(guest\)/ }).waitFor();

    // The guest leaves: their own page says so, the others lose the guest's tile.
    await guest.page.getByRole('button', { name: 'Leave' }).click();
    await guest.page.getByRole('heading', { name: 'You left the consultation' }).waitFor();
    for (const p of [doctor, patient]) {
      await p.page.getByRole('group', { name: /^Gus Guest \(/ }).waitFor({ state: 'detached' });
      assert.equal(await tiles(p).count(), 1, `${p.label} has one tile left`);
    }

    // The practitioner ends the consultation: every page shows the ended screen.
    await doctor.page.getByRole('button', { name: 'End consultation' }).click();
    for (const p of [doctor, patient]) {
      await p.page.getByRole('heading', { name: 'The consultation has ended' }).waitFor();
      assert.equal(await p.page.evaluate(() => window.teleconsult.state), 'ended');
      assert.equal(await p.page.evaluate(() => window.teleconsult.pc), null, 'media is torn down');
    }
    await patient.page.getByText('This consultation has ended.').waitFor();
    // The guest who left earlier still sees their own screen, unchanged.
    assert.equal(await visibleHeading(guest).textContent(), 'You left the consultation');
  });
});
