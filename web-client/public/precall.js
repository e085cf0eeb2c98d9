// The pre-call check in the waiting room: the camera preview (the waiting screen's own), a
// microphone level meter, a speaker test sound (devices.js), and a connection test with a
// plain-language verdict. The connection test measures the round-trip time to the server over
// the signalling connection (five pings, the median); it does not (yet) probe the media port
// or measure throughput, and says no more than it measured.

import { t, formatNumber } from './i18n.js';

/**
 * @param {object} opts
 * @param {() => MediaStream|null} opts.getStream
 * @param {() => Promise<number>} opts.ping one signalling round trip, in milliseconds
 * @param {() => void} opts.playTestSound
 */
export function createPrecall({ getStream, ping, playTestSound }) {
  const meter = document.getElementById('mic-meter');
  const result = document.getElementById('precall-result');
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

  async function testConnection() {
    run.disabled = true;
    result.textContent = t('precall.testing');
    delete result.dataset.verdict;
    const samples = [];
    try {
      for (let i = 0; i < 5; i += 1) samples.push(await ping());
    } catch {
      result.dataset.verdict = 'offline';
      result.textContent = t('precall.offline');
      run.disabled = false;
      return;
    }
    samples.sort((a, b) => a - b);
    const rtt = samples[Math.floor(samples.length / 2)];
    const verdict = rtt < 200 ? 'video' : rtt < 500 ? 'video_slow' : 'audio';
    result.dataset.verdict = verdict;
    result.dataset.rtt = String(Math.round(rtt));
    result.textContent = t(`precall.${verdict}`, { rtt: formatNumber(Math.round(rtt)) });
    run.disabled = false;
  }

  run.addEventListener('click', testConnection);
  document.getElementById('precall-speaker').addEventListener('click', playTestSound);
  return { startMeter, stopMeter, testConnection };
}
