// (b) A group of four: two practitioners, a patient and an interpreter (guest).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit, waitForRemoteMedia, tiles } from './harness.mjs';

test('group of 4: every page decodes three remote videos in three tiles', { timeout: 180_000 }, async () => {
  await withCall('group-of-four', async ({ open }) => {
    const consultation = consultationId('group');
    const people = [
      { consultation, identity: 'Dr Grace Hopper', role: 'practitioner' },
      { consultation, identity: 'Pat Example', role: 'patient' },
      { consultation, identity: 'Ines Interpreter', role: 'guest' },
      { consultation, identity: 'Dr Second Opinion', role: 'practitioner' },
    ];
    const [lead, patient, interpreter, second] = await Promise.all(people.map((p) => open(p)));
    await Promise.all([lead, patient, interpreter, second].map(waitForPrejoin));

    await lead.join();
    await lead.page.getByRole('button', { name: 'End consultation' }).waitFor();
    await patient.join();
    await interpreter.join();
    await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    await interpreter.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();

    await admit(lead, 'Pat Example');
    await admit(lead, 'Ines Interpreter');
    // A second practitioner is admitted at once.
    await second.join();
    await second.page.getByRole('button', { name: 'End consultation' }).waitFor();

    const all = [lead, patient, interpreter, second];
    const results = await Promise.all(
      all.map((p) => waitForRemoteMedia(p, { videos: 3, audios: 3, timeoutMs: 60_000 })),
    );
    for (const [i, r] of results.entries()) {
      assert.equal(r.growingVideos.length, 3, `${all[i].label} decodes three remote videos`);
      // Three distinct incoming streams, not one counted thrice.
      assert.equal(new Set(r.growingVideos.map((s) => s.ssrc)).size, 3);
    }
    for (const p of all) {
      assert.equal(await tiles(p).count(), 3, `${p.label} shows three remote tiles`);
      const others = all.filter((o) => o !== p).map((o) => o.identity);
      for (const name of others) {
        await p.page.getByRole('group', { name: new RegExp(`^${name} \\(`) }).waitFor();
      }
      // Every tile plays a video element with real frames.
      await p.page.waitForFunction(
        () => [...document.querySelectorAll('#tiles video')].filter((v) => v.videoWidth > 0).length === 3,
      );
    }
  });
});
