// Simulcast (issue 11): the practitioner's camera goes out in three layers (the server's offer
// asks for them by rid); the patient's tile size picks the layer it receives. A small tile gets
// the lowest layer, a large one the top layer again, and video keeps decoding across each switch
// (the server switches only at a keyframe of the target layer, with sequence numbers,
// timestamps and VP8 picture ids kept continuous: a decoder that saw a gap or a jump would
// freeze or stop).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit, waitForRemoteMedia, inboundStats, waitFor, waitForLayers, remoteVideo, sizeTile } from './harness.mjs';

test('simulcast: three layers out, the tile size picks the layer in, decoding across switches', { timeout: 150_000 }, async () => {
  await withCall('simulcast', async ({ open }) => {
    const consultation = consultationId('sim');
    const doctor = await open({ consultation, identity: 'Dr Sim', role: 'practitioner' });
    const patient = await open({ consultation, identity: 'Pat Sim', role: 'patient' });
    await Promise.all([waitForPrejoin(doctor), waitForPrejoin(patient)]);
    await patient.join();
    await doctor.join();
    await admit(doctor, 'Pat Sim');
    await waitForRemoteMedia(patient, { videos: 1, audios: 1 });

    // The offer asked for layers; the practitioner's browser sends more than one.
    const offer = await doctor.page.evaluate(() => window.teleconsult.pc.remoteDescription.sdp);
    assert.match(offer, /a=simulcast:recv q;h;f/);
    const layers = await waitForLayers(doctor.page);
    const heights = Object.values(layers).map((v) => v.frameHeight);
    const lowest = Math.min(...heights);
    const highest = Math.max(...heights);
    assert.ok(lowest < highest, `layers of different sizes: ${JSON.stringify(layers)}`);

    // A large tile: the top layer.
    assert.equal(await sizeTile(patient.page, 720), 720);
    const top = await waitFor(
      async () => {
        const v = await remoteVideo(patient.page);
        return v && v.frameHeight >= highest ? v : null;
      },
      { what: `the patient receives the top layer (${highest} px)`, timeoutMs: 20_000 },
    );

    // A thumbnail: the lowest layer, and decoding goes on.
    assert.ok((await sizeTile(patient.page, Math.max(24, Math.floor(lowest / 2)))) < lowest);
    const low = await waitFor(
      async () => {
        const v = await remoteVideo(patient.page);
        return v && v.frameHeight <= lowest && v.framesDecoded > top.framesDecoded ? v : null;
      },
      { what: `the patient receives the lowest layer (${lowest} px)`, timeoutMs: 20_000 },
    );
    await waitFor(
      async () => {
        const v = await remoteVideo(patient.page);
        return v && v.framesDecoded > low.framesDecoded + 10 && v.frameHeight <= lowest;
      },
      { what: 'video keeps decoding on the lowest layer', timeoutMs: 15_000 },
    );

    // Large again: back to the top layer.
    await sizeTile(patient.page, 720);
    const back = await waitFor(
      async () => {
        const v = await remoteVideo(patient.page);
        return v && v.frameHeight >= highest && v.framesDecoded > low.framesDecoded ? v : null;
      },
      { what: 'the patient is back on the top layer', timeoutMs: 20_000 },
    );
    // One inbound video stream throughout: the switches happened inside one subscription.
    const videos = (await inboundStats(patient.page)).filter((s) => s.kind === 'video');
    assert.equal(videos.length, 1);
    assert.equal(videos[0].ssrc, back.ssrc);
    assert.equal(back.ssrc, top.ssrc);
  });
});
