// What Chromium's own statistics say about a 1:1 call through our media path (issue 10):
// packets lost at the start of the call, RTX negotiated and used, and whether the publisher's
// send-side estimator has an outgoing bitrate (TWCC feedback reaching it).
//
//   cargo build -p teleconsult && cd web-client && \
//     TELECONSULT_BIN=$PWD/../target/debug/teleconsult node ../bench/chromium-media-stats.mjs [SECONDS]
//
// Prints one JSON object per page. A measurement, not a test: nothing is asserted.
import {
  withCall,
  consultationId,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
} from '../web-client/tests/harness.mjs';

const seconds = Number(process.argv[2] || 10);

function stats(page) {
  return page.evaluate(async () => {
    const pc = window.teleconsult && window.teleconsult.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const out = { inbound: [], outbound: [], pair: null, rtxInAnswer: false, transportCcInOffer: false };
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.inbound.push({
          packetsReceived: s.packetsReceived,
          packetsLost: s.packetsLost,
          nackCount: s.nackCount,
          retransmittedPacketsReceived: s.retransmittedPacketsReceived,
          framesDecoded: s.framesDecoded,
          freezeCount: s.freezeCount,
          totalFreezesDuration: s.totalFreezesDuration,
          frameHeight: s.frameHeight,
          framesPerSecond: s.framesPerSecond,
          bytesReceived: s.bytesReceived,
        });
      }
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.outbound.push({
          packetsSent: s.packetsSent,
          retransmittedPacketsSent: s.retransmittedPacketsSent,
          nackCount: s.nackCount,
          targetBitrate: s.targetBitrate,
        });
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        out.pair = { availableOutgoingBitrate: s.availableOutgoingBitrate ?? null };
      }
    });
    const remote = pc.remoteDescription ? pc.remoteDescription.sdp : '';
    const local = pc.localDescription ? pc.localDescription.sdp : '';
    out.rtxInAnswer = /a=rtpmap:\d+ rtx\//.test(local);
    out.transportCcInOffer = /transport-wide-cc/.test(remote) && /a=rtcp-fb:\S+ transport-cc/.test(remote);
    return out;
  });
}

await withCall('chromium-media-stats', async ({ open }) => {
  const consultation = consultationId('stats');
  const doctor = await open({ consultation, identity: 'Dr Stats', role: 'practitioner' });
  const patient = await open({ consultation, identity: 'Pat Stats', role: 'patient' });
  await waitForPrejoin(doctor);
  await waitForPrejoin(patient);
  await patient.join();
  await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
  await doctor.join();
  await admit(doctor, 'Pat Stats');
  await Promise.all([
    waitForRemoteMedia(doctor, { videos: 1, audios: 1 }),
    waitForRemoteMedia(patient, { videos: 1, audios: 1 }),
  ]);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const p of [doctor, patient]) {
    console.log(JSON.stringify({ page: p.label, seconds, ...(await stats(p.page)) }));
  }
});
