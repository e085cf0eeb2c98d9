// The call as people see it: in a 1:1 call on a desktop window the other person fills the stage
// (the remote picture covers at least half of the viewport) with the self-view small in a
// corner; the same call on a phone (390×844) has no sideways scrolling; screenshots of both are
// saved under target/ui-artefacts/. A device switch mid-call (the second fake camera, through
// the Devices picker: replaceTrack) keeps the other page decoding. A screen share (Chromium's
// fake capture) reaches the other page as a second video track, announced with source `screen`
// in `track_published`, takes its stage while the sharer's camera keeps decoding beside it, and
// stops cleanly when the track ends as it does on the browser's own "Stop sharing"; while it
// lasts, a second share is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  withCall,
  consultationId,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  inboundStats,
  REPO_ROOT,
  waitFor,
} from './harness.mjs';

const ARTEFACTS = path.join(REPO_ROOT, 'target', 'ui-artefacts');

/** The remote picture on the stage: its rendered area (object-fit: contain) and the viewport's. */
function stageArea(page) {
  return page.evaluate(() => {
    const v = document.querySelector('#tiles > li.on-stage video');
    if (!v || !v.videoWidth) return null;
    const r = v.getBoundingClientRect();
    const ar = v.videoWidth / v.videoHeight;
    const w = Math.min(r.width, r.height * ar);
    const h = Math.min(r.height, r.width / ar);
    return { picture: w * h, viewport: window.innerWidth * window.innerHeight, box: [r.width, r.height] };
  });
}

/** Total frames decoded of the page's remote videos. */
async function framesDecoded(page) {
  return (await inboundStats(page)).filter((s) => s.kind === 'video').reduce((n, s) => n + s.framesDecoded, 0);
}

/** Frames decoded of the screen share on the page's stage, and of every other remote video. */
async function screenAndCameraFrames(page) {
  const screenTrack = await page.evaluate(() => {
    const v = document.querySelector('#tiles > li.on-stage video');
    const s = v && v.srcObject;
    return s && s.id.endsWith('~screen') && s.getVideoTracks()[0] ? s.getVideoTracks()[0].id : null;
  });
  const videos = (await inboundStats(page)).filter((s) => s.kind === 'video');
  const screen = videos.find((s) => screenTrack && s.trackIdentifier === screenTrack);
  const others = videos.filter((s) => s !== screen).reduce((n, s) => n + s.framesDecoded, 0);
  return { screen: screen ? screen.framesDecoded : null, others, width: screen ? screen.frameWidth : 0 };
}

/** Wait until the page decodes `more` frames beyond what it had decoded when called. */
async function keepsDecoding(p, what, more = 20) {
  const before = await framesDecoded(p.page);
  await waitFor(async () => (await framesDecoded(p.page)) >= before + more, { what: `${p.label}: ${what}`, timeoutMs: 20_000 });
}

test('layout, device switch and screen share in a 1:1 call', { timeout: 180_000 }, async () => {
  mkdirSync(ARTEFACTS, { recursive: true });
  await withCall('layout', async ({ open }) => {
    const consultation = consultationId('layout');
    const viewport = { width: 1280, height: 800 };
    const doctor = await open({ consultation, identity: 'Dr Layout', role: 'practitioner', viewport });
    const patient = await open({ consultation, identity: 'Pat Layout', role: 'patient', viewport });
    await Promise.all([doctor, patient].map(waitForPrejoin));
    // The pickers are there before joining, with the two fake cameras.
    await patient.page.locator('#camera-select option').nth(1).waitFor({ state: 'attached' });
    await patient.join();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'waiting');
    await doctor.join();
    await admit(doctor, 'Pat Layout');
    await Promise.all([doctor, patient].map((p) => waitForRemoteMedia(p, { videos: 1, audios: 1 })));

    // Desktop 1:1: the other person on the stage, at least half the window.
    for (const p of [patient, doctor]) {
      const area = await waitFor(() => stageArea(p.page), { what: `${p.label}: a picture on the stage` });
      const share = area.picture / area.viewport;
      assert.ok(share >= 0.5, `${p.label}: the remote picture covers ${(share * 100).toFixed(1)} % of the viewport (box ${area.box})`);
      await p.page.screenshot({ path: path.join(ARTEFACTS, `call-1280x800-${p.role}.png`) });
    }
    // The self-view is small and inside the stage (a corner).
    const self = await patient.page.evaluate(() => {
      const s = document.querySelector('.self-tile').getBoundingClientRect();
      const st = document.getElementById('stage').getBoundingClientRect();
      return { area: s.width * s.height, stage: st.width * st.height, inside: s.right <= st.right + 1 && s.bottom <= st.bottom + 1 };
    });
    assert.ok(self.inside && self.area < self.stage * 0.1, JSON.stringify(self));
    // Toggles say their state.
    assert.equal(await patient.page.locator('#toggle-mic').getAttribute('aria-pressed'), 'false');
    assert.match(await patient.page.locator('#call-timer').textContent(), /^\d+:\d\d$/);

    // Device switch mid-call: the second camera, chosen in the picker.
    await patient.page.locator('#toggle-devices').click();
    const before = await patient.page.evaluate(() => window.teleconsult.pc.getSenders().find((s) => s.track && s.track.kind === 'video').track.getSettings().deviceId);
    // (Chromium's fake_device_1 is a depth camera WebRTC does not encode: take fake_device_2.)
    const other = await patient.page.evaluate(
      (id) => [...document.querySelectorAll('#camera-select option')].find((o) => o.value !== id && o.textContent === 'fake_device_2')?.value,
      before,
    );
    assert.ok(other, 'a second camera to switch to');
    await patient.page.locator('#camera-select').selectOption(other);
    await patient.page.waitForFunction(
      (id) => window.teleconsult.pc.getSenders().find((s) => s.track && s.track.kind === 'video').track.getSettings().deviceId === id,
      other,
    );
    await keepsDecoding(doctor, 'keeps decoding the patient after the camera switch');
    // Remembered on this device.
    assert.equal(await patient.page.evaluate(() => JSON.parse(localStorage.getItem('teleconsult.devices')).camera), other);

    // Screen share: the patient shares; the doctor's stage shows it, decoded, as a second video.
    const published = doctor.waitForMessage((m) => m.type === 'track_published' && m.track.source === 'screen');
    await patient.page.locator('#toggle-screen').click();
    await patient.page.waitForFunction(() => !!window.teleconsult.screenTrack);
    const patientId = await patient.page.evaluate(() => window.teleconsult.you.id);
    await doctor.page.waitForFunction((id) => window.teleconsult.screenSharer === id && window.teleconsult.onStage === id, patientId);
    await doctor.page.locator(`#tiles > li.on-stage[data-screen="true"]`).waitFor();
    await doctor.page.locator('#screen-indicator').waitFor({ state: 'visible' });
    const announced = await published;
    assert.equal(announced.participant, patientId);
    assert.equal(announced.track.kind, 'video');
    await doctor.page.waitForFunction((id) => window.teleconsult.onStageStream === `${id}~screen`, patientId);
    const first = await waitFor(async () => {
      const f = await screenAndCameraFrames(doctor.page);
      return f.screen !== null && f.screen > 0 ? f : null;
    }, { what: 'the doctor decodes the shared screen', timeoutMs: 20_000 });
    // Both keep going: the screen on the stage, the patient's camera in its own tile.
    await waitFor(async () => {
      const f = await screenAndCameraFrames(doctor.page);
      return f.screen >= first.screen + 10 && f.others >= first.others + 20 ? f : null;
    }, { what: 'the doctor decodes the screen and the camera side by side', timeoutMs: 20_000 });
    assert.equal(await doctor.page.locator('#tiles > li').count(), 2, 'a screen tile beside the patient\'s tile');
    await doctor.page.screenshot({ path: path.join(ARTEFACTS, 'screen-share-1280x800-practitioner.png') });
    // One at a time: the doctor's own share is refused while the patient's lasts.
    await doctor.page.locator('#toggle-screen').click();
    await doctor.page.waitForFunction(() => document.getElementById('error').textContent.length > 0);
    assert.equal(await doctor.page.evaluate(() => window.teleconsult.screenTrack), null);

    // The browser's own "Stop sharing" ends the track: the share stops for everyone.
    await patient.page.evaluate(() => window.teleconsult.screenTrack.dispatchEvent(new Event('ended')));
    await doctor.page.waitForFunction(() => window.teleconsult.screenSharer === null);
    await doctor.page.locator('#screen-indicator').waitFor({ state: 'hidden' });
    assert.equal(await patient.page.locator('#toggle-screen').getAttribute('aria-pressed'), 'false');
    await doctor.page.waitForFunction((id) => window.teleconsult.onStage === id && window.teleconsult.onStageStream === id, patientId);
    assert.equal(await doctor.page.locator('#tiles > li').count(), 1, 'the screen tile is gone');
    await keepsDecoding(doctor, 'decodes the camera on the stage again');

    // Phone portrait: nothing scrolls sideways, the other person is still on the stage.
    await patient.page.setViewportSize({ width: 390, height: 844 });
    await patient.page.locator('#toggle-devices').click();
    const phone = await patient.page.evaluate(() => ({
      overflow: document.documentElement.scrollWidth - window.innerWidth,
      stage: document.querySelector('#tiles > li.on-stage video').getBoundingClientRect().width,
    }));
    assert.ok(phone.overflow <= 0, `scrolls ${phone.overflow} px sideways at 390 px`);
    assert.ok(phone.stage >= 300, `the stage is ${phone.stage} px wide at 390 px`);
    await patient.page.screenshot({ path: path.join(ARTEFACTS, 'call-390x844-patient.png') });
    for (const p of [doctor, patient]) assert.ok(!p.consoleText().includes('[pageerror]'), p.consoleText());
  });
});
