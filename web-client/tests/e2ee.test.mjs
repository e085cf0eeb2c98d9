// End-to-end encryption (issue 13, policy `end_to_end`) in real Chromium through our SFU: both
// sides decode each other's video and audio; the SFU's own view of the media
// (`teleconsult_vp8_frames_inspected_total`, sfu/src/inspect.rs) sees ciphertext beyond the clear
// header, where a `standard` call (the control) shows plaintext; a recording request is refused;
// the verification codes match on both pages; when a third participant leaves, the key rotates
// (the key id changes on the remaining pages) and media keeps decoding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  BIN,
  withCall,
  consultationId,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  waitFor,
  inboundStats,
  Participant,
  waitForLayers,
  remoteVideo,
  sizeTile,
} from './harness.mjs';

const execFileP = promisify(execFile);

/** A patient or guest invitation; `policy` creates the consultation's record with it. */
async function invitation(server, consultation, label, role, policy) {
  const args = ['invite', '--dev', '--consultation', consultation, '--label', label, '--role', role];
  if (policy) args.push('--policy', policy);
  const { stdout } = await execFileP(BIN, args, { env: server.env, timeout: 15_000 });
  return /#token=([A-Za-z0-9_\-.]+)/.exec(stdout)[1];
}

/** The SFU's count of VP8 frames it could read as plaintext beyond the clear bytes, or not. */
async function inspected(server) {
  const m = /metrics_addr=([0-9.]+:\d+)/.exec(server.logText());
  assert.ok(m, 'the server logs its metrics address');
  const text = await (await fetch(`http://${m[1]}/metrics`)).text();
  const value = (view) => {
    const line = text.split('\n').find((l) => l.startsWith(`teleconsult_vp8_frames_inspected_total{view="${view}"}`));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  return { plausible: value('plausible'), opaque: value('opaque') };
}

/** Wait until the SFU inspected at least `n` more VP8 frames than `since`; the difference. */
async function inspectedFrames(server, since, n) {
  let now = since;
  await waitFor(
    async () => {
      now = await inspected(server);
      return now.plausible + now.opaque - since.plausible - since.opaque >= n;
    },
    { what: `the SFU inspecting ${n} VP8 frames`, timeoutMs: 30_000 },
  );
  return { plausible: now.plausible - since.plausible, opaque: now.opaque - since.opaque };
}

const e2ee = (p) => p.page.evaluate(() => window.teleconsult.e2ee);
const you = (p) => p.page.evaluate(() => window.teleconsult.you.id);

/** Remote videos' framesDecoded grow on `p` (again), from now on. */
async function keepsDecoding(p, videos) {
  const before = (await inboundStats(p.page)).filter((s) => s.kind === 'video');
  await waitFor(
    async () => {
      const now = (await inboundStats(p.page)).filter((s) => s.kind === 'video');
      const growing = now.filter((s) => {
        const b = before.find((x) => x.id === s.id);
        return s.framesDecoded > (b ? b.framesDecoded : 0) + 10;
      });
      return growing.length >= videos;
    },
    { what: `${p.label}: ${videos} remote videos decoding`, timeoutMs: 30_000 },
  );
}

async function openCall({ server, openLink }, consultation, policy, { guest = false } = {}) {
  const patientToken = await invitation(server, consultation, 'Pat E2E', 'patient', policy);
  const doctorToken = await server.mintToken({ consultation, identity: 'Dr E2E', role: 'practitioner' });
  const doctor = await openLink(server.joinUrl(doctorToken), { identity: 'Dr E2E', role: 'practitioner', token: doctorToken });
  const patient = await openLink(server.joinUrl(patientToken), { identity: 'Pat E2E', role: 'patient', token: patientToken });
  const people = [doctor, patient];
  let third = null;
  if (guest) {
    const guestToken = await invitation(server, consultation, 'Guest E2E', 'guest', null);
    third = await openLink(server.joinUrl(guestToken), { identity: 'Guest E2E', role: 'guest', token: guestToken });
    people.push(third);
  }
  for (const p of people) await waitForPrejoin(p);
  await patient.join();
  await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
  if (third) await third.join();
  await doctor.join();
  await admit(doctor, 'Pat E2E');
  if (third) await admit(doctor, 'Guest E2E');
  return { doctor, patient, guest: third };
}

test('end_to_end: frames encrypted between the browsers, ciphertext at the SFU, codes match, no recording, the key rotates on leave', { timeout: 180_000 }, async () => {
  await withCall('e2ee', async (ctx) => {
    const consultation = consultationId('e2ee');
    const { doctor, patient, guest } = await openCall(ctx, consultation, 'end_to_end', { guest: true });
    // The policy is shown before entering the call.
    await patient.page.locator('#policy-waiting').getByText('This consultation is end-to-end encrypted and cannot be recorded.').waitFor({ state: 'attached' });
    await Promise.all([
      waitForRemoteMedia(doctor, { videos: 2, audios: 2, timeoutMs: 45_000 }),
      waitForRemoteMedia(patient, { videos: 2, audios: 2, timeoutMs: 45_000 }),
      waitForRemoteMedia(guest, { videos: 2, audios: 2, timeoutMs: 45_000 }),
    ]);
    // Every page encrypts what it sends and decrypts what it receives, under one key.
    for (const p of [doctor, patient, guest]) {
      await waitFor(async () => {
        const s = (await e2ee(p)).stats;
        return s && s.encrypted > 50 && s.decrypted > 50;
      }, { what: `${p.label}: frames encrypted and decrypted`, timeoutMs: 10_000 });
    }
    const [d, pa] = [await e2ee(doctor), await e2ee(patient)];
    assert.equal(d.enabled, true);
    assert.notEqual(d.epoch, null);
    assert.equal(pa.epoch, d.epoch, 'one key for the call');

    // What the SFU sees: beyond the clear header, not a VP8 frame as libvpx writes one.
    const seen = await inspectedFrames(ctx.server, { plausible: 0, opaque: 0 }, 200);
    const share = seen.plausible / (seen.plausible + seen.opaque);
    console.log(`end_to_end: the SFU inspected ${JSON.stringify(seen)}; doctor ${JSON.stringify(d)}`);
    assert.ok(share < 0.2, `the SFU read ${seen.plausible} of ${seen.plausible + seen.opaque} VP8 frames as plaintext`);

    // The verification codes: the same on the practitioner's page and the patient's.
    const [doctorId, patientId] = [await you(doctor), await you(patient)];
    await waitFor(async () => (await e2ee(doctor)).codes[patientId] && (await e2ee(patient)).codes[doctorId], {
      what: 'verification codes on both pages',
    });
    const codeAtDoctor = (await e2ee(doctor)).codes[patientId];
    const codeAtPatient = (await e2ee(patient)).codes[doctorId];
    assert.match(codeAtDoctor, /^\d{3} \d{3}$/);
    assert.equal(codeAtDoctor, codeAtPatient, 'both pages show the same code');
    await doctor.page.locator(`#e2ee-code-list li[data-participant="${patientId}"] code`).getByText(codeAtDoctor).waitFor();
    await patient.page.locator(`#e2ee-code-list li[data-participant="${doctorId}"] code`).getByText(codeAtPatient).waitFor();
    // The guest's code with the practitioner is another one (other keys).
    const guestId = await you(guest);
    await waitFor(async () => (await e2ee(doctor)).codes[guestId], { what: "the guest's code" });
    assert.notEqual((await e2ee(doctor)).codes[guestId], codeAtDoctor);

    // No recording under end_to_end: no Record button, and a request is refused.
    assert.equal(await doctor.page.locator('#recording-toggle').isVisible(), false);
    await doctor.page.evaluate(() => window.teleconsult.requestRecording());
    await doctor.waitForMessage((m) => m.type === 'error' && m.code === 'recording_not_allowed', 10_000);
    await doctor.page.locator('#error').getByText('This consultation cannot be recorded.').waitFor();

    // The guest leaves: a new key for those who remain, and media keeps decoding.
    const before = d.epoch;
    await guest.page.getByRole('button', { name: 'Leave', exact: true }).click();
    await waitFor(async () => {
      const [a, b] = [await e2ee(doctor), await e2ee(patient)];
      return a.epoch !== before && a.epoch === b.epoch;
    }, { what: 'the key rotated on both remaining pages', timeoutMs: 15_000 });
    const after = await e2ee(patient);
    assert.notEqual(after.keyIndex, before & 0xff, 'frames carry the new key id');
    await Promise.all([keepsDecoding(doctor, 1), keepsDecoding(patient, 1)]);
    const since = await inspected(ctx.server);
    const later = await inspectedFrames(ctx.server, since, 100);
    console.log(`after the rotation: epoch ${before} → ${after.epoch}; the SFU inspected ${JSON.stringify(later)}; patient ${JSON.stringify(after.stats)}`);
    assert.ok(later.plausible / (later.plausible + later.opaque) < 0.2, `after the rotation: ${JSON.stringify(later)}`);
  });
});

test('end_to_end: simulcast layer switches and a screen share still work on encrypted frames', { timeout: 150_000 }, async () => {
  await withCall('e2ee-simulcast', async (ctx) => {
    const consultation = consultationId('e2ee-sim');
    const { doctor, patient } = await openCall(ctx, consultation, 'end_to_end');
    await waitForRemoteMedia(patient, { videos: 1, audios: 1, timeoutMs: 45_000 });
    const layers = await waitForLayers(doctor.page);
    const heights = Object.values(layers).map((v) => v.frameHeight);
    const [lowest, highest] = [Math.min(...heights), Math.max(...heights)];
    // The SFU picks the layer by keyframes it finds in the clear header: a large tile gets the
    // top layer, a thumbnail the lowest, and decoding goes on across each switch.
    await sizeTile(patient.page, 720);
    const top = await waitFor(async () => {
      const v = await remoteVideo(patient.page);
      return v && v.frameHeight >= highest ? v : null;
    }, { what: `the patient receives the top layer (${highest} px)`, timeoutMs: 20_000 });
    await sizeTile(patient.page, Math.max(24, Math.floor(lowest / 2)));
    const low = await waitFor(async () => {
      const v = await remoteVideo(patient.page);
      return v && v.frameHeight <= lowest && v.framesDecoded > top.framesDecoded + 10 ? v : null;
    }, { what: `the patient decodes the lowest layer (${lowest} px)`, timeoutMs: 20_000 });
    assert.equal(low.ssrc, top.ssrc, 'one subscription across the switch');

    // The patient shares the screen: the practitioner decodes it beside the camera.
    await patient.page.locator('#toggle-screen').click();
    await patient.page.waitForFunction(() => !!window.teleconsult.screenTrack);
    await waitForRemoteMedia(doctor, { videos: 2, audios: 1, timeoutMs: 30_000 });
    const seen = await inspectedFrames(ctx.server, await inspected(ctx.server), 100);
    console.log(`simulcast and screen share under end_to_end: the SFU inspected ${JSON.stringify(seen)}`);
    assert.ok(seen.plausible / (seen.plausible + seen.opaque) < 0.2, JSON.stringify(seen));
    const failed = (await e2ee(doctor)).stats.failed;
    assert.ok(failed < 20, `the practitioner dropped ${failed} frames it could not decrypt`);
  });
});

test('end_to_end: a reloaded page makes a new key pair, gets the key again, and the codes still match', { timeout: 150_000 }, async () => {
  await withCall('e2ee-reload', async (ctx) => {
    const consultation = consultationId('e2ee-reload');
    const { doctor, patient } = await openCall(ctx, consultation, 'end_to_end');
    await Promise.all([waitForRemoteMedia(doctor, { videos: 1, audios: 1 }), waitForRemoteMedia(patient, { videos: 1, audios: 1 })]);
    const [doctorId, patientId] = [await you(doctor), await you(patient)];
    await waitFor(async () => (await e2ee(patient)).codes[doctorId], { what: "the patient's code" });
    const before = (await e2ee(patient)).codes[doctorId];
    // The patient reloads: the tab takes its seat back (no new admission) with a new key pair.
    await patient.page.reload();
    await waitForRemoteMedia(patient, { videos: 1, audios: 1, timeoutMs: 45_000 });
    await keepsDecoding(doctor, 1);
    await waitFor(async () => {
      const [a, b] = [(await e2ee(doctor)).codes[patientId], (await e2ee(patient)).codes[doctorId]];
      return a && b && a === b && b !== before;
    }, { what: 'a new code, the same on both pages', timeoutMs: 15_000 });
    assert.equal((await you(patient)), patientId, 'the same seat');

    // The practitioner (the key leader) reloads: a new key pair and a new key for the call.
    const epoch = (await e2ee(patient)).epoch;
    const code = (await e2ee(patient)).codes[doctorId];
    await doctor.page.reload();
    await waitForRemoteMedia(doctor, { videos: 1, audios: 1, timeoutMs: 45_000 });
    await keepsDecoding(patient, 1);
    await waitFor(async () => {
      const [a, b] = [await e2ee(doctor), await e2ee(patient)];
      return a.epoch !== null && a.epoch === b.epoch && b.epoch !== epoch && a.codes[patientId] === b.codes[doctorId] && b.codes[doctorId] !== code;
    }, { what: 'a new key and a new code, the same on both pages', timeoutMs: 15_000 });
  });
});

test('end_to_end: two practitioners, one key leader; every pair with a practitioner has matching codes', { timeout: 150_000 }, async () => {
  await withCall('e2ee-two-practitioners', async (ctx) => {
    const consultation = consultationId('e2ee-two');
    const { doctor, patient } = await openCall(ctx, consultation, 'end_to_end');
    const otherToken = await ctx.server.mintToken({ consultation, identity: 'Dr Two', role: 'practitioner' });
    const other = await ctx.openLink(ctx.server.joinUrl(otherToken), { identity: 'Dr Two', role: 'practitioner', token: otherToken });
    await waitForPrejoin(other);
    await other.join();
    const people = [doctor, patient, other];
    try {
      await Promise.all(people.map((p) => waitForRemoteMedia(p, { videos: 2, audios: 2, timeoutMs: 45_000 })));
    } catch (err) {
      for (const p of people) console.log('DEBUG', p.label, await you(p), JSON.stringify(await e2ee(p)));
      throw err;
    }
    const ids = await Promise.all(people.map(you));
    const leader = [ids[0], ids[2]].sort()[0];
    // One leader, one key.
    await waitFor(async () => {
      const views = await Promise.all(people.map(e2ee));
      return views.every((v) => v.leader === leader && v.epoch !== null && v.epoch === views[0].epoch);
    }, { what: `everyone on the leader ${leader}'s key`, timeoutMs: 15_000 });
    // Each pair with a practitioner in it: the same code on both pages.
    const pairs = [[0, 1], [2, 1], [0, 2]];
    await waitFor(async () => {
      const views = await Promise.all(people.map(e2ee));
      return pairs.every(([a, b]) => views[a].codes[ids[b]] && views[a].codes[ids[b]] === views[b].codes[ids[a]]);
    }, { what: 'matching codes for every pair with a practitioner', timeoutMs: 15_000 });
    await Promise.all(people.map((p) => keepsDecoding(p, 2)));
  });
});

test('end_to_end: the pre-call connection test sends a generated picture, never the camera', { timeout: 90_000 }, async () => {
  await withCall('e2ee-precall', async ({ server, openLink }) => {
    const token = await invitation(server, consultationId('e2ee-pre'), 'Pat Pre', 'patient', 'end_to_end');
    const patient = await openLink(server.joinUrl(token), { identity: 'Pat Pre', role: 'patient', token });
    await waitForPrejoin(patient);
    await patient.join();
    const page = patient.page;
    await page.waitForFunction(() => window.teleconsult.state === 'waiting');
    await page.locator('#precall-run').click();
    await page.waitForFunction(() => document.getElementById('precall-result').dataset.verdict, null, { timeout: 40_000 });
    const verdict = await page.locator('#precall-result').evaluate((el) => ({ ...el.dataset }));
    // The session with the server carried a generated picture (it has no media key), and still
    // measured the upload.
    assert.equal(await page.evaluate(() => window.teleconsult.precallSource), 'generated');
    assert.equal(verdict.udp, 'true', JSON.stringify(verdict));
    assert.ok(Number(verdict.up) > 0, `an upstream estimate: ${JSON.stringify(verdict)}`);
  });
});

test('standard (the control): the SFU reads the same frames as plaintext', { timeout: 120_000 }, async () => {
  await withCall('e2ee-control', async (ctx) => {
    const consultation = consultationId('plain');
    const { doctor, patient } = await openCall(ctx, consultation, 'standard');
    await Promise.all([waitForRemoteMedia(doctor, { videos: 1, audios: 1 }), waitForRemoteMedia(patient, { videos: 1, audios: 1 })]);
    assert.equal((await e2ee(doctor)).enabled, false);
    await doctor.page.locator('#e2ee-codes').waitFor({ state: 'hidden' });
    const seen = await inspectedFrames(ctx.server, { plausible: 0, opaque: 0 }, 200);
    const share = seen.plausible / (seen.plausible + seen.opaque);
    console.log(`standard: the SFU inspected ${JSON.stringify(seen)}`);
    assert.ok(share > 0.95, `the SFU read only ${seen.plausible} of ${seen.plausible + seen.opaque} VP8 frames as plaintext`);
  });
});

test('end_to_end: a browser that cannot encrypt frames is refused before any media', { timeout: 60_000 }, async () => {
  await withCall('e2ee-unsupported', async ({ server, browser, participants }) => {
    const consultation = consultationId('e2ee-old');
    const token = await invitation(server, consultation, 'Pat Old', 'patient', 'end_to_end');
    const context = await browser.newContext();
    await context.grantPermissions(['camera', 'microphone'], { origin: server.base });
    // A browser without encoded transforms (neither the standard API nor Chromium's own).
    await context.addInitScript(() => {
      delete window.RTCRtpScriptTransform;
      delete RTCRtpSender.prototype.createEncodedStreams;
    });
    const page = await context.newPage();
    const p = new Participant({ context, page, identity: 'Pat Old', role: 'patient', token, label: 'Pat Old' });
    participants.push(p);
    await page.goto(server.joinUrl(token));
    await waitForPrejoin(p);
    await p.join();
    await page.getByText('this browser cannot encrypt video calls').waitFor();
    assert.equal(await page.evaluate(() => window.teleconsult.pc), null, 'no peer connection was made');
    assert.equal(await page.evaluate(() => window.teleconsult.state), 'error');
    // The policy came with `joined`, before any media.
    assert.ok(p.received.some((m) => m.type === 'joined' && m.policy === 'end_to_end'));
  });
});
