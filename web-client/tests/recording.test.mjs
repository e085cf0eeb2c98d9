// Recording with consent (issue 13): a recordable consultation in real Chromium through our
// SFU, the journal on disk, `teleconsult recording list/export`, and the files checked with
// ffprobe/ffmpeg. Durations are compared with the consented span the manifest records (the
// server's own clock), never with timings of this machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, withCall, consultationId, waitForPrejoin, admit, waitForRemoteMedia, waitFor, startServer } from './harness.mjs';

const execFileP = promisify(execFile);

/** Media flows for this long: what the test records (a span of media, not a wait for an event). */
const media = (ms) => new Promise((r) => setTimeout(r, ms));

/** A patient invitation to a new `recordable` consultation (the CLI creates its record). */
async function recordableInvitation(server, consultation, label) {
  const { stdout } = await execFileP(
    BIN,
    ['invite', '--dev', '--consultation', consultation, '--label', label, '--role', 'patient', '--policy', 'recordable'],
    { env: server.env, timeout: 15_000 },
  );
  return /#token=([A-Za-z0-9_\-.]+)/.exec(stdout)[1];
}

async function cli(server, args) {
  const { stdout } = await execFileP(BIN, ['recording', ...args, '--dev'], { env: server.env, timeout: 60_000 });
  return stdout;
}

async function listed(server) {
  return JSON.parse(await cli(server, ['list', '--json']));
}

/** ffprobe's view of a file: codec per stream type, and the duration (seconds). */
async function probe(file) {
  const { stdout } = await execFileP('ffprobe', [
    '-v', 'error', '-show_entries', 'stream=codec_type,codec_name:format=duration', '-of', 'json', file,
  ]);
  const j = JSON.parse(stdout);
  const codecs = Object.fromEntries(j.streams.map((s) => [s.codec_type, s.codec_name]));
  return { codecs, duration: Number(j.format.duration) };
}

/**
 * `ffmpeg -v error` decoding the whole file: what it complains about (empty: clean). Frames are
 * passed through as timed (`-fps_mode passthrough`): a browser's video is variable-rate, and
 * Debian's ffmpeg 5.1 otherwise squeezes it onto the frame rate it guessed (20 fps) for the null
 * output and reports two frames in one 50 ms slot as "non monotonically increasing dts" — a
 * complaint about its own conversion, not about the file (whose timestamps ffprobe shows
 * strictly increasing).
 */
async function decodeErrors(file) {
  const args = ['-v', 'error', '-i', file, '-fps_mode', 'passthrough', '-enc_time_base', '-1', '-f', 'null', '-'];
  const { stderr } = await execFileP('ffmpeg', args, {
    timeout: 60_000,
  });
  return stderr.trim();
}

/** The file's packet timestamps are strictly increasing per stream (what players rely on). */
async function strictlyIncreasing(file) {
  const { stdout } = await execFileP('ffprobe', ['-v', 'error', '-show_entries', 'packet=stream_index,pts', '-of', 'csv=p=0', file]);
  const last = new Map();
  for (const line of stdout.trim().split('\n')) {
    const [stream, pts] = line.split(',').map(Number);
    if (last.has(stream) && pts <= last.get(stream)) return `stream ${stream}: ${pts} after ${last.get(stream)}`;
    last.set(stream, pts);
  }
  return '';
}

/** Practitioner and patient of a new recordable consultation, both in the call with media. */
async function recordableCall({ server, openLink }, name) {
  const consultation = consultationId(name);
  const patientToken = await recordableInvitation(server, consultation, 'Pat Rec');
  // The practitioner's (pre-accounts) token: the consultation's record gives its policy.
  const doctorToken = await server.mintToken({ consultation, identity: 'Dr Rec', role: 'practitioner' });
  const doctor = await openLink(server.joinUrl(doctorToken), { identity: 'Dr Rec', role: 'practitioner', token: doctorToken });
  const patient = await openLink(server.joinUrl(patientToken), { identity: 'Pat Rec', role: 'patient', token: patientToken });
  await waitForPrejoin(doctor);
  await waitForPrejoin(patient);
  await patient.join();
  await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
  // The policy is shown before entering the call.
  await patient.page.locator('#policy-waiting').getByText('This consultation may be recorded, but only with your consent').waitFor();
  await doctor.join();
  await admit(doctor, 'Pat Rec');
  await Promise.all([
    waitForRemoteMedia(doctor, { videos: 1, audios: 1 }),
    waitForRemoteMedia(patient, { videos: 1, audios: 1 }),
  ]);
  return { consultation, doctor, patient };
}

const recorded = (p) => p.page.evaluate(() => window.teleconsult.recording.recorded.length);
const you = (p) => p.page.evaluate(() => window.teleconsult.you.id);

async function waitRecorded(p, n, what) {
  await waitFor(async () => (await recorded(p)) === n, { what: `${p.label}: ${what}`, timeoutMs: 10_000 });
}

/** The recordings of `consultation` once `count` of them are in the store. */
async function storedOf(server, consultation, { count = 1 } = {}) {
  let found = [];
  await waitFor(
    async () => {
      // (A journal moving into the store may vanish from the disk while being listed.)
      const all = await listed(server).catch(() => []);
      found = all.filter((r) => r.consultation === consultation);
      return found.length === count && found.every((r) => r.stored);
    },
    { what: `${count} stored recording(s) of ${consultation}`, timeoutMs: 20_000 },
  );
  return found;
}

async function exported(server, id) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'teleconsult-export-'));
  await cli(server, ['export', id, '--output', dir]);
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  return { dir, manifest };
}

/** When the manifest says `participant`'s consent was given, and when it ended (withdrawn, or the stop). */
function consentedSpan(manifest, participant) {
  const given = manifest.events.find((e) => e.type === 'consent_given' && e.participant === participant);
  const ended =
    manifest.events.find((e) => e.type === 'consent_withdrawn' && e.participant === participant && e.at_ms > given.at_ms) ||
    manifest.events.find((e) => e.type === 'stopped');
  return { from: given.at_ms, to: ended.at_ms, seconds: (ended.at_ms - given.at_ms) / 1000 };
}

test('both consent: one WebM per participant, VP8 + Opus, as long as the consented span, decoding cleanly', { timeout: 180_000 }, async () => {
  await withCall('recording-consent', async (ctx) => {
    const { consultation, doctor, patient } = await recordableCall(ctx, 'rec-both');
    // The practitioner asks; the patient sees the server's consent text and a choice.
    await doctor.page.getByRole('button', { name: 'Record', exact: true }).click();
    const dialog = patient.page.getByRole('alertdialog', { name: 'Recording request' });
    await dialog.waitFor();
    assert.match(await dialog.textContent(), /withdraw your consent at any time/);
    // Until the patient answers, only the practitioner is recorded (and everyone sees it).
    await waitRecorded(patient, 1, 'the indicator shows the practitioner recorded');
    assert.equal(await patient.page.locator('#recording-indicator').textContent(), 'Recording (not you)');
    await dialog.getByRole('button', { name: 'I agree to be recorded' }).click();
    await waitRecorded(doctor, 2, 'both recorded');
    await waitRecorded(patient, 2, 'both recorded');
    assert.equal(await patient.page.locator('#recording-indicator').textContent(), 'Recording (including you)');
    await media(20_000);
    // Sealed at rest while it is written: the pseudonyms are not in the journal's bytes.
    const journals = path.join(ctx.server.env.TELECONSULT_STORAGE__DATA_DIR, 'recordings');
    const [file] = readdirSync(journals).filter((f) => f.endsWith('.journal'));
    const journal = readFileSync(path.join(journals, file));
    assert.ok(journal.length > 10_000, `${journal.length} bytes journaled`);
    assert.ok(!journal.includes(Buffer.from('Pat Rec')) && !journal.includes(Buffer.from('Dr Rec')), 'names in the clear');
    await doctor.page.getByRole('button', { name: 'Stop recording', exact: true }).click();
    await waitRecorded(patient, 0, 'the indicator goes off');
    assert.ok(await patient.page.locator('#recording-indicator').isHidden());

    // Stored when it ends (the local journal goes), and exported from the store.
    const [rec] = await storedOf(ctx.server, consultation);
    assert.equal(`${rec.id}.journal`, file);
    assert.ok(!readdirSync(journals).includes(file), 'moved off the disk');
    const { dir, manifest } = await exported(ctx.server, rec.id);
    assert.equal(manifest.participants.length, 2);
    const ids = { [await you(doctor)]: 'Dr Rec', [await you(patient)]: 'Pat Rec' };
    for (const p of manifest.participants) {
      assert.equal(p.pseudonym, ids[p.participant], 'the manifest names each by their label');
      const file = path.join(dir, p.file);
      const { codecs, duration } = await probe(file);
      assert.deepEqual(codecs, { video: 'vp8', audio: 'opus' }, p.file);
      const span = consentedSpan(manifest, p.participant);
      assert.ok(
        Math.abs(duration - span.seconds) <= 0.05 * span.seconds,
        `${p.pseudonym}: ${duration.toFixed(2)} s of media for ${span.seconds.toFixed(2)} s consented`,
      );
      assert.equal(await decodeErrors(file), '', `${p.file} decodes without errors`);
      assert.equal(await strictlyIncreasing(file), '', `${p.file} timestamps`);
    }
    assert.deepEqual(readdirSync(dir).sort(), [...manifest.participants.map((p) => p.file), 'manifest.json'].sort());

    // The composite: both side by side at 360 px high, both voices mixed, as long as the
    // recording's timeline, decoding cleanly.
    const again = mkdtempSync(path.join(os.tmpdir(), 'teleconsult-composite-'));
    await cli(ctx.server, ['export', rec.id, '--output', again, '--composite']);
    const composite = path.join(again, 'composite.webm');
    const { codecs, duration } = await probe(composite);
    assert.deepEqual(codecs, { video: 'vp8', audio: 'opus' }, 'composite codecs');
    const { stdout: dims } = await execFileP('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', composite]);
    const [w, h] = dims.trim().split(',').map(Number);
    assert.equal(h, 360, 'scaled to 360 px high');
    assert.ok(w >= 2 * 360, `two pictures side by side: ${w}x${h}`);
    const end = Math.max(...manifest.participants.map((p) => p.start_offset_ms + p.duration_ms)) / 1000;
    assert.ok(Math.abs(duration - end) <= 0.05 * end, `composite ${duration.toFixed(2)} s for a ${end.toFixed(2)} s timeline`);
    assert.equal(await decodeErrors(composite), '', 'the composite decodes without errors');
  });
});

test('decline records only the practitioner; a withdrawal stops the patient within 1 s; after SIGKILL and a restart the journal is stored and exports', { timeout: 240_000 }, async () => {
  await withCall('recording-withdraw', async (ctx) => {
    const { consultation, doctor, patient } = await recordableCall(ctx, 'rec-decline');
    const patientId = await you(patient);
    const doctorId = await you(doctor);
    const dialog = patient.page.getByRole('alertdialog', { name: 'Recording request' });

    // 1. The patient declines: only the practitioner's tracks are recorded.
    await doctor.page.getByRole('button', { name: 'Record', exact: true }).click();
    await dialog.getByRole('button', { name: 'Decline' }).click();
    await media(4_000);
    await doctor.page.getByRole('button', { name: 'Stop recording', exact: true }).click();
    await waitRecorded(patient, 0, 'the indicator goes off');
    const [declined] = await storedOf(ctx.server, consultation);
    const first = await exported(ctx.server, declined.id);
    assert.deepEqual(first.manifest.participants.map((p) => p.participant), [doctorId]);
    {
      const only = first.manifest.participants[0];
      const s = consentedSpan(first.manifest, doctorId);
      const { codecs, duration } = await probe(path.join(first.dir, only.file));
      assert.deepEqual(codecs, { video: 'vp8', audio: 'opus' });
      assert.ok(Math.abs(duration - s.seconds) <= 0.05 * s.seconds, `${duration} s for ${s.seconds} s consented`);
    }
    assert.ok(!first.manifest.events.some((e) => e.participant === patientId && e.type === 'consent_given'));

    // 2. The patient accepts, then withdraws: their tracks stop there (manifest and file agree).
    await doctor.page.getByRole('button', { name: 'Record', exact: true }).click();
    await dialog.getByRole('button', { name: 'I agree to be recorded' }).click();
    await waitRecorded(doctor, 2, 'both recorded');
    await media(6_000);
    await patient.page.getByRole('button', { name: 'Stop recording me' }).click();
    await waitRecorded(doctor, 1, 'only the practitioner recorded');
    // The patient's own page hears of it on its socket, a moment after the practitioner's.
    await patient.page.waitForFunction(
      () => document.getElementById('recording-indicator').textContent === 'Recording (not you)',
    );
    await media(4_000);
    await doctor.page.getByRole('button', { name: 'Stop recording', exact: true }).click();
    await waitRecorded(patient, 0, 'the indicator goes off');
    const both = await storedOf(ctx.server, consultation, { count: 2 });
    const withdrawn = both.find((r) => r.id !== declined.id);
    const second = await exported(ctx.server, withdrawn.id);
    const pat = second.manifest.participants.find((p) => p.participant === patientId);
    const span = consentedSpan(second.manifest, patientId);
    assert.ok(second.manifest.events.some((e) => e.type === 'consent_withdrawn' && e.participant === patientId));
    // Nothing of the patient after the withdrawal (plus at most 1 s): by the manifest…
    for (const t of pat.tracks) {
      assert.ok(t.start_offset_ms + t.duration_ms <= span.to + 1000, `${t.kind} runs to ${t.start_offset_ms + t.duration_ms} ms, withdrawn at ${span.to}`);
    }
    // …and by the file itself.
    const { codecs, duration } = await probe(path.join(second.dir, pat.file));
    assert.deepEqual(codecs, { video: 'vp8', audio: 'opus' });
    assert.ok(duration <= span.seconds + 1, `${duration} s of the patient for ${span.seconds} s consented`);
    assert.ok(duration >= 0.95 * span.seconds, `${duration} s of the patient for ${span.seconds} s consented`);
    const doc = second.manifest.participants.find((p) => p.participant === doctorId);
    const docSpan = consentedSpan(second.manifest, doctorId);
    assert.ok(doc.duration_ms / 1000 > span.seconds, 'the practitioner is recorded on after the withdrawal');
    assert.ok(Math.abs(doc.duration_ms / 1000 - docSpan.seconds) <= 0.05 * docSpan.seconds);

    // 3. A recording running when the server is killed: after a restart its journal is stored
    // up to its last synced chunk, listed as interrupted, and exports files that decode.
    await doctor.page.getByRole('button', { name: 'Record', exact: true }).click();
    await dialog.getByRole('button', { name: 'I agree to be recorded' }).click();
    await waitRecorded(doctor, 2, 'both recorded');
    await media(4_000);
    const killed = new Promise((r) => ctx.server.child.once('exit', r));
    ctx.server.child.kill('SIGKILL');
    await killed;
    const again = await startServer({ extraEnv: { TELECONSULT_STORAGE__DATA_DIR: ctx.server.env.TELECONSULT_STORAGE__DATA_DIR } });
    try {
      const all = await storedOf(again, consultation, { count: 3 });
      const crashed = all.filter((r) => r.interrupted);
      assert.equal(crashed.length, 1, `one interrupted recording: ${JSON.stringify(all)}`);
      const third = await exported(again, crashed[0].id);
      assert.ok(third.manifest.recovered.chunks > 0, 'complete chunks were recovered');
      assert.equal(third.manifest.participants.length, 2);
      for (const p of third.manifest.participants) {
        const file = path.join(third.dir, p.file);
        const { codecs, duration } = await probe(file);
        assert.deepEqual(codecs, { video: 'vp8', audio: 'opus' }, p.file);
        assert.ok(duration > 1, `${p.file}: ${duration} s recovered`);
        assert.equal(await decodeErrors(file), '', `${p.file} decodes without errors`);
        assert.equal(await strictlyIncreasing(file), '', `${p.file} timestamps`);
      }
    } finally {
      await again.stop();
    }
  });
});
