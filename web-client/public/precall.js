// The pre-call check in the waiting room: the camera preview (the waiting screen's own), a
// microphone level meter, a speaker test sound (devices.js), and a connection test with a
// plain-language verdict. The connection test opens two short media sessions of its own with
// the server (`precall_start`, docs/signaling.md), one reaching the media port over UDP only
// and one over TCP only, exactly as the call will, and reads from the browser's statistics
// which transports worked, the round trip and the upstream estimate (the server's
// transport-wide feedback drives it); five signalling pings come first and stand in for the
// round trip if neither works. It does not measure the downstream (the server sends the test
// nothing), and says no more than it measured.

import { t, formatNumber } from './i18n.js';

const OFFER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 6000;
const MEASURE_MS = 2500;

/**
 * @param {object} opts
 * @param {() => MediaStream|null} opts.getStream
 * @param {() => Promise<number>} opts.ping one signalling round trip, in milliseconds
 * @param {(msg: object) => void} opts.send sends a signalling message
 * @param {() => void} opts.playTestSound
 * @param {() => boolean} [opts.synthetic] send a generated picture, not the camera (end_to_end:
 *   the server must not see the camera unencrypted, and the test session has no media key)
 */
export function createPrecall({ getStream, ping, send, playTestSound, synthetic = () => false }) {
  const meter = document.getElementById('mic-meter');
  const result = document.getElementById('precall-result');
  const details = document.getElementById('precall-details');
  const run = document.getElementById('precall-run');
  let audio = null;
  let timer = null;

  function startMeter() {
    stopMeter();
    const stream = getStream();
    const track = stream && stream.getAudioTracks()[0];
    if (!track || typeof AudioContext === 'undefined') {
      meter.value = 0;
      meter.dataset.live = 'false';
      return;
    }
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    audio = ctx;
    meter.dataset.live = 'true';
    timer = setInterval(() => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const x of data) sum += x * x;
      // RMS, scaled so that speech sits mid-scale.
      meter.value = Math.min(1, Math.sqrt(sum / data.length) * 4);
    }, 100);
  }

  function stopMeter() {
    clearInterval(timer);
    timer = null;
    if (audio) audio.close().catch(() => {});
    audio = null;
  }

  // ---------------------------------------------------------------- the connection test

  /** What the last connection test sent: `camera`, `generated` or null (tests). */
  let lastSource = null;

  /**
   * A generated 640×480 picture (moving noise, about as costly to encode as a camera) for the
   * connection test of an end_to_end consultation.
   */
  function generatedVideo() {
    const canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 480;
    const g = canvas.getContext('2d');
    const draw = () => {
      for (let i = 0; i < 48; i++) {
        g.fillStyle = `hsl(${Math.floor(Math.random() * 360)} 60% 50%)`;
        g.fillRect(Math.floor(Math.random() * 600), Math.floor(Math.random() * 440), 40, 40);
      }
    };
    draw();
    const every = setInterval(draw, 66);
    const track = canvas.captureStream(15).getVideoTracks()[0];
    return {
      track,
      stop() {
        clearInterval(every);
        track.stop();
      },
    };
  }

  /** The offer of the test session the server is about to send (`precall_offer`). */
  let offerWaiter = null;
  let ended = null;

  function onOffer(sdp) {
    if (offerWaiter) offerWaiter(sdp);
    offerWaiter = null;
  }

  function onEnded() {
    if (ended) ended();
  }

  /**
   * One test session, reaching the media port over `transport` only (`udp` or `tcp`: the
   * other's candidates are left out of the offer). Sends our camera, so the server's
   * transport-wide feedback gives the browser an upstream estimate. Resolves to what the
   * browser measured: reachable, round trip (ms), available upstream (bit/s).
   */
  async function probe(transport) {
    const offer = await new Promise((resolve, reject) => {
      offerWaiter = resolve;
      send({ type: 'precall_start' });
      setTimeout(() => reject(new Error('no offer')), OFFER_TIMEOUT_MS);
    });
    const pc = new RTCPeerConnection();
    const stream = getStream();
    const generated = synthetic() ? generatedVideo() : null;
    const video = generated ? generated.track : stream && stream.getVideoTracks()[0];
    lastSource = generated ? 'generated' : video ? 'camera' : null;
    if (video) pc.addTrack(video, new MediaStream([video]));
    const stopped = new Promise((resolve) => {
      ended = resolve;
    });
    try {
      const sdp = offer
        .split('\r\n')
        .filter((l) => !l.startsWith('a=candidate:') || l.split(' ')[2].toLowerCase() === transport)
        .join('\r\n');
      await pc.setRemoteDescription({ type: 'offer', sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      send({ type: 'precall_answer', sdp: pc.localDescription.sdp });
      const connected = await Promise.race([
        new Promise((resolve) => {
          const check = () => {
            if (pc.connectionState === 'connected') resolve(true);
            if (pc.connectionState === 'failed') resolve(false);
          };
          pc.addEventListener('connectionstatechange', check);
          check();
        }),
        stopped.then(() => false),
        new Promise((resolve) => setTimeout(() => resolve(false), CONNECT_TIMEOUT_MS)),
      ]);
      if (!connected) return { reachable: false };
      // A measuring window: the round trip and the estimate settle over a few seconds.
      await new Promise((resolve) => setTimeout(resolve, MEASURE_MS));
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId) || pair;
      });
      if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
      return {
        reachable: true,
        rtt: pair && typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
        up: pair && typeof pair.availableOutgoingBitrate === 'number' ? pair.availableOutgoingBitrate : null,
      };
    } finally {
      ended = null;
      pc.close();
      if (generated) generated.stop();
      send({ type: 'precall_stop' });
    }
  }

  async function medianPing() {
    const samples = [];
    for (let i = 0; i < 5; i += 1) samples.push(await ping());
    samples.sort((a, b) => a - b);
    return samples[Math.floor(samples.length / 2)];
  }

  function detail(key, params) {
    const li = document.createElement('li');
    li.textContent = t(key, params);
    return li;
  }

  async function testConnection() {
    run.disabled = true;
    result.textContent = t('precall.testing');
    details.replaceChildren();
    for (const k of ['verdict', 'rtt', 'udp', 'tcp', 'up']) delete result.dataset[k];
    let signalling;
    try {
      signalling = await medianPing();
    } catch {
      result.dataset.verdict = 'offline';
      result.textContent = t('precall.offline');
      run.disabled = false;
      return;
    }
    const measured = {};
    for (const transport of ['udp', 'tcp']) {
      try {
        measured[transport] = await probe(transport);
      } catch {
        measured[transport] = { reachable: false };
      }
    }
    const { udp, tcp } = measured;
    const best = udp.reachable ? udp : tcp.reachable ? tcp : null;
    const rtt = Math.round(best && best.rtt !== null ? best.rtt : signalling);
    const up = best && best.up !== null ? best.up : null;
    let verdict;
    if (!best) verdict = 'blocked';
    else if (rtt < 200 && (up === null || up >= 300_000)) verdict = 'video';
    else if (rtt < 500 && (up === null || up >= 150_000)) verdict = 'video_slow';
    else verdict = 'audio';
    result.dataset.verdict = verdict;
    result.dataset.rtt = String(rtt);
    result.dataset.udp = String(udp.reachable);
    result.dataset.tcp = String(tcp.reachable);
    if (up !== null) result.dataset.up = String(Math.round(up));
    result.textContent = t(`precall.${verdict}`, { rtt: formatNumber(rtt) });
    details.append(
      detail(udp.reachable ? 'precall.udpOk' : 'precall.udpBlocked'),
      detail(tcp.reachable ? 'precall.tcpOk' : 'precall.tcpBlocked'),
    );
    if (up !== null) {
      details.append(detail('precall.upload', { rate: formatNumber(up / 1e6, { maximumFractionDigits: 1 }) }));
    }
    run.disabled = false;
  }

  run.addEventListener('click', testConnection);
  document.getElementById('precall-speaker').addEventListener('click', playTestSound);
  return {
    startMeter,
    stopMeter,
    testConnection,
    onOffer,
    onEnded,
    get lastSource() {
      return lastSource;
    },
  };
}
