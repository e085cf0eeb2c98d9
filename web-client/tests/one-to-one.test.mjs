// (a) A 1:1 consultation: the patient waits, the practitioner admits, both decode the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withCall,
  consultationId,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  tiles,
  visibleHeading,
} from './harness.mjs';

test('1:1: patient waits, practitioner admits, both decode remote video and audio', { timeout: 120_000 }, async () => {
  await withCall('one-to-one', async ({ open }) => {
    const consultation = consultationId('one');
    const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    const patient = await open({ consultation, identity: 'Pat Example', role: 'patient' });

    // The token is read from the fragment and removed from the address bar at once.
    for (const p of [doctor, patient]) {
      await waitForPrejoin(p);
      assert.ok(!p.page.url().includes('token'), `${p.label}: token still in the address bar`);
      assert.ok(!p.page.url().includes(p.token));
    }
    // The pre-join screen names the role (an invitation carries no name: the label the
    // practitioner chose arrives with `joined`).
    assert.match(await patient.page.locator('#prejoin-as').textContent(), /\(patient\)/);
    assert.ok(!(await patient.page.content()).includes('Pat Example'), 'no label before joining');

    // The patient joins first and waits, seeing no one.
    await patient.join();
    await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    assert.match(await patient.page.locator('#whoami').textContent(), /^Pat Example · patient/);
    assert.equal(await tiles(patient).count(), 0, 'a waiting patient sees no remote tile');
    assert.equal(await patient.page.evaluate(() => window.teleconsult.participants.length), 0);
    assert.equal(await patient.page.evaluate(() => window.teleconsult.state), 'waiting');

    // The practitioner joins, sees the patient in the waiting room and admits them.
    await doctor.join();
    const region = doctor.page.getByRole('region', { name: 'Waiting room' });
    await region.getByRole('button', { name: 'Admit Pat Example', exact: true }).waitFor();
    await region.getByRole('button', { name: 'Reject Pat Example', exact: true }).waitFor();
    await admit(doctor, 'Pat Example');

    // Both pages decode the other's video and receive their audio. (How fast is measured by
    // bench/first-frame.mjs, never asserted here: the deadline only bounds the wait.)
    const [d, p] = await Promise.all([
      waitForRemoteMedia(doctor, { videos: 1, audios: 1 }),
      waitForRemoteMedia(patient, { videos: 1, audios: 1 }),
    ]);
    assert.equal(d.growingVideos.length, 1);
    assert.equal(p.growingVideos.length, 1);

    // One tile each, labelled with the other person's name.
    assert.equal(await tiles(doctor).count(), 1);
    assert.equal(await tiles(patient).count(), 1);
    await doctor.page.getByRole('group', { name: /^Pat Example \(patient\)/ }).waitFor();
    await patient.page.getByRole('group', { name: /^Dr Ada Lovelace \(practitioner\)/ }).waitFor();
    // The practitioner's controls; the patient has none of them.
    await doctor.page.getByRole('button', { name: 'Remove Pat Example' }).waitFor();
    await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
    assert.equal(await patient.page.getByRole('button', { name: 'End consultation' }).count(), 0);
    assert.equal(await patient.page.getByRole('button', { name: /^Remove / }).count(), 0);
    assert.equal(await visibleHeading(patient).textContent(), 'In consultation');
  });
});
