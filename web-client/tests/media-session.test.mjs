// The client's media negotiation (public/media-session.js) against an in-page stand-in for the
// SFU that behaves as docs/signaling.md says: the server offers (recvonly audio+video for the
// client's own tracks, plus the tracks it forwards, in a stream whose id names the publisher),
// trickles candidates in the protocol's shape, and renegotiates when a track goes away.
// Needs no server binary: the public/ directory is served by a tiny static server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { launchBrowser, REPO_ROOT } from './harness.mjs';

const PUBLIC = path.join(REPO_ROOT, 'web-client', 'public');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

function staticServer() {
  const srv = http.createServer(async (req, res) => {
    const name = path.basename(new URL(req.url, 'http://x').pathname) || 'index.html';
    try {
      const body = await readFile(path.join(PUBLIC, name));
      res.setHeader('content-type', TYPES[path.extname(name)] || 'application/octet-stream');
      res.end(body);
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

test('media session: answers server offers, trickles candidates, groups tracks by stream id, renegotiates', { timeout: 60_000 }, async () => {
  const srv = await staticServer();
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${srv.address().port}/index.html`);
    const result = await page.evaluate(async () => {
      const { MediaSession } = await import('/media-session.js');
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const forwarded = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const sent = [];

      // The stand-in SFU: recvonly sections for the client's tracks, then the forwarded ones.
      const sfu = new RTCPeerConnection();
      sfu.addTransceiver('audio', { direction: 'recvonly' });
      sfu.addTransceiver('video', { direction: 'recvonly' });
      const senders = forwarded.getTracks().map((t) => sfu.addTransceiver(t, { direction: 'sendonly', streams: [forwarded] }).sender);
      const sfuGot = [];
      sfu.ontrack = (ev) => sfuGot.push(ev.track.kind);

      let session;
      const send = (msg) => {
        sent.push(msg.type);
        if (msg.type === 'answer') sfu.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        if (msg.type === 'ice_candidate') {
          const c = msg.candidate;
          sfu.addIceCandidate(c ? { candidate: c.candidate, sdpMid: c.sdp_mid, sdpMLineIndex: c.sdp_mline_index } : undefined).catch(() => {});
        }
      };
      sfu.onicecandidate = (ev) =>
        session.handleRemoteCandidate(
          ev.candidate ? { candidate: ev.candidate.candidate, sdp_mid: ev.candidate.sdpMid, sdp_mline_index: ev.candidate.sdpMLineIndex } : null,
        );
      const tracks = [];
      session = new MediaSession({ localStream: local, send, onTrack: (ev) => tracks.push({ kind: ev.track.kind, stream: ev.streams[0] }) });

      const offer = await sfu.createOffer();
      await sfu.setLocalDescription(offer);
      await session.handleOffer(offer.sdp);

      const framesDecoded = async (pc) => {
        let n = 0;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0;
        });
        return n;
      };
      for (let i = 0; i < 100 && ((await framesDecoded(session.pc)) === 0 || (await framesDecoded(sfu)) === 0); i++) await sleep(100);
      const clientDecoded = await framesDecoded(session.pc);
      const sfuDecoded = await framesDecoded(sfu);
      const stream = tracks[0] && tracks[0].stream;

      // Renegotiation: the forwarded video goes away.
      let removed = false;
      stream.addEventListener('removetrack', () => (removed = true));
      sfu.getTransceivers().find((t) => t.sender === senders[1]).stop();
      const offer2 = await sfu.createOffer();
      await sfu.setLocalDescription(offer2);
      await session.handleOffer(offer2.sdp);
      for (let i = 0; i < 50 && !removed; i++) await sleep(100);

      const out = {
        sent: [...new Set(sent)],
        answers: sent.filter((t) => t === 'answer').length,
        trackKinds: tracks.map((t) => t.kind).sort(),
        sameStream: tracks.every((t) => t.stream && t.stream.id === forwarded.id),
        sfuGot: sfuGot.sort(),
        clientDecoded,
        sfuDecoded,
        removed,
        remaining: stream.getTracks().map((t) => t.kind),
        senderKinds: session.pc.getSenders().filter((s) => s.track).map((s) => s.track.kind).sort(),
      };
      session.close();
      sfu.close();
      return out;
    });
    assert.deepEqual(result.trackKinds, ['audio', 'video'], 'client receives the forwarded audio and video');
    assert.ok(result.sameStream, 'tracks arrive grouped in the publisher stream');
    assert.deepEqual(result.sfuGot, ['audio', 'video'], "the offer's recvonly sections carry the client's tracks");
    assert.deepEqual(result.senderKinds, ['audio', 'video'], 'exactly one audio and one video sender');
    assert.ok(result.clientDecoded > 0, 'client decodes the forwarded video');
    assert.ok(result.sfuDecoded > 0, "the stand-in SFU decodes the client's video");
    assert.ok(result.sent.includes('ice_candidate'), 'client trickles candidates');
    assert.equal(result.answers, 2, 'one answer per offer');
    assert.ok(result.removed, 'a renegotiation that stops a track removes it from the stream');
    assert.deepEqual(result.remaining, ['audio']);
  } finally {
    await browser.close();
    await new Promise((r) => srv.close(r));
  }
});
