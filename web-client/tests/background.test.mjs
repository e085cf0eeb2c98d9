// Phones (issue 11, surviving changes), with real Chromium: a page that may not start sound by
// itself (autoplay refused without a gesture: a tab the browser restored, with no camera or
// microphone, since Chromium lets capturing pages play) offers "Tap to start audio", and the tap
// brings the sound; a tab frozen in the background for a minute (as a phone's browser does) comes back
// into the call when it is shown again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  startServer,
  openLink,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  inboundStats,
  consultationId,
  waitFor,
} from './harness.mjs';

const state = (p) => p.page.evaluate(() => window.teleconsult.state);
const framesDecoded = async (p) =>
  (await inboundStats(p.page)).filter((s) => s.kind === 'video').reduce((n, s) => n + s.framesDecoded, 0);

/** A practitioner (usual browser) and a patient in `patientBrowser`, admitted, media flowing. */
async function call(server, patientBrowser, doctorBrowser, name) {
  const consultation = consultationId(name);
  const dToken = await server.mintToken({ consultation, identity: `Dr ${name}`, role: 'practitioner' });
  const pToken = await server.mintToken({ consultation, identity: `Pat ${name}`, role: 'patient' });
  const doctor = await openLink(doctorBrowser, server.joinUrl(dToken), { identity: `Dr ${name}`, token: dToken });
  const patient = await openLink(patientBrowser, server.joinUrl(pToken), { identity: `Pat ${name}`, token: pToken });
  await Promise.all([waitForPrejoin(doctor), waitForPrejoin(patient)]);
  await patient.join();
  await doctor.join();
  await admit(doctor, `Pat ${name}`);
  await Promise.all([
    waitForRemoteMedia(doctor, { videos: 1, audios: 1 }),
    waitForRemoteMedia(patient, { videos: 1, audios: 1 }),
  ]);
  return { doctor, patient };
}

/** The page's remote media elements that carry sound: muted, paused. */
const soundElements = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('video, audio')]
      .filter((el) => el.srcObject && el.srcObject.getAudioTracks && el.srcObject.getAudioTracks().length > 0)
      .filter((el) => !el.classList.contains('self'))
      .map((el) => ({ muted: el.muted, paused: el.paused })),
  );

test('a restored tab that may not start sound by itself: "Tap to start audio", and the tap brings the sound', { timeout: 150_000 }, async () => {
  const server = await startServer();
  const browsers = [];
  try {
    const doctorBrowser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    browsers.push(doctorBrowser);
    // The patient's browser starts sound only after a gesture on the page, as phones do.
    const strict = [...CHROMIUM_ARGS.filter((a) => !a.startsWith('--autoplay-policy')), '--autoplay-policy=document-user-activation-required'];
    const patientBrowser = await chromium.launch({ executablePath: CHROMIUM, args: strict, headless: true });
    browsers.push(patientBrowser);
    const { patient } = await call(server, patientBrowser, doctorBrowser, 'Autoplay');
    // The Join click was a gesture: sound plays.
    await waitFor(async () => (await soundElements(patient.page)).some((e) => !e.muted && !e.paused), {
      what: 'sound playing after the Join click',
    });

    // The phone's browser drops the tab and restores it later (a new page with the tab's
    // session storage: the token and the seat secret): it rejoins by itself, with no gesture on
    // this page, so the browser refuses sound. (A plain reload keeps Chromium's same-origin
    // activation and would not show it.)
    const saved = await patient.page.evaluate(() => Object.fromEntries(Object.entries(sessionStorage)));
    const url = patient.page.url().split('#')[0];
    await patient.context.close();
    // Chromium lets a page that captures the camera or microphone start sound by itself (a
    // call), so this restored tab has none: its camera and microphone are refused (no fake
    // permission UI, nothing granted), as for a patient who said no to them. It still joins, to
    // see and hear.
    const restoreBrowser = await chromium.launch({
      executablePath: CHROMIUM,
      args: strict.filter((a) => a !== '--use-fake-ui-for-media-stream'),
      headless: true,
    });
    browsers.push(restoreBrowser);
    const context = await restoreBrowser.newContext({ viewport: { width: 1024, height: 768 } });
    await context.addInitScript((entries) => {
      for (const [k, v] of Object.entries(entries)) if (sessionStorage.getItem(k) === null) sessionStorage.setItem(k, v);
    }, saved);
    const restored = await context.newPage();
    // Read the page through CDP without a user gesture: Playwright's own `evaluate` counts as
    // one, and would let the page start its sound.
    const cdp = await context.newCDPSession(restored);
    const look = async (expression) =>
      (await cdp.send('Runtime.evaluate', { expression, returnByValue: true, userGesture: false })).result.value;
    await restored.goto(url);
    patient.page = restored;
    await waitFor(async () => (await look('window.teleconsult && window.teleconsult.state').catch(() => null)) === 'in_call', {
      what: 'back in the call',
      timeoutMs: 20_000,
    });
    assert.equal(await look('navigator.userActivation.hasBeenActive'), false, 'no gesture on the restored page');
    const tap = patient.page.getByRole('button', { name: 'Tap to start audio' });
    await tap.waitFor({ state: 'visible', timeout: 15_000 });
    const held = JSON.parse(await look(`JSON.stringify([...document.querySelectorAll('video, audio')]
      .filter((el) => !el.classList.contains('self') && el.srcObject && el.srcObject.getAudioTracks().length > 0)
      .map((el) => ({ muted: el.muted, paused: el.paused })))`));
    assert.ok(held.length > 0 && held.every((e) => e.muted && !e.paused), `played muted until the tap: ${JSON.stringify(held)}`);

    // Video shows meanwhile (its frames are counted once the tap was made: reading the page's
    // statistics before it would itself count as a gesture).
    await tap.click();
    const before = await framesDecoded(patient);
    await waitFor(async () => (await framesDecoded(patient)) > before + 10, { what: 'video decoding' });
    await waitFor(
      async () => {
        const els = await soundElements(patient.page);
        return els.length > 0 && els.every((e) => !e.muted && !e.paused);
      },
      { what: 'sound playing after the tap' },
    );
    assert.ok(await tap.isHidden(), 'the button goes');
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    await server.stop().catch(() => {});
  }
});

test('a tab frozen in the background for a minute comes back into the call when shown', { timeout: 200_000 }, async () => {
  const server = await startServer();
  const browsers = [];
  try {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    browsers.push(browser);
    const { doctor, patient } = await call(server, browser, browser, 'Background');
    // Hidden, then frozen (no script runs: what a phone's browser does to a background tab).
    const cdp = await patient.page.context().newCDPSession(patient.page);
    await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    const frozenAt = Date.now();
    // A minute in the background (a span of time is what is being tested, not a wait for an
    // event); the practitioner's page meanwhile sees the patient as reconnecting or still there.
    await new Promise((r) => setTimeout(r, 60_000));
    await cdp.send('Page.setWebLifecycleState', { state: 'active' });
    const shownAt = Date.now();
    await waitFor(async () => (await state(patient).catch(() => null)) === 'in_call', {
      what: 'the patient\'s page in the call again',
      timeoutMs: 20_000,
    });
    const mine = await framesDecoded(patient);
    const theirs = await framesDecoded(doctor);
    await waitFor(async () => (await framesDecoded(patient)) > mine + 15, {
      what: 'the patient decoding the practitioner again',
      timeoutMs: 20_000,
    }).catch(async (err) => {
      const seen = await patient.page.evaluate(async () => {
        const pc = window.teleconsult.pc;
        const inbound = [];
        if (pc) (await pc.getStats()).forEach((s) => s.type === 'inbound-rtp' && inbound.push({ kind: s.kind, ssrc: s.ssrc, frames: s.framesDecoded, packets: s.packetsReceived }));
        return { state: window.teleconsult.state, ice: pc && pc.iceConnectionState, conn: pc && pc.connectionState, inbound };
      }).catch((e) => e.message);
      throw new Error(`${err.message}; the patient's page: ${JSON.stringify(seen)}\n${server.logText().slice(-3000)}`);
    });
    await waitFor(async () => (await framesDecoded(doctor)) > theirs + 15, {
      what: 'the practitioner decoding the patient again',
      timeoutMs: 20_000,
    });
    await waitFor(
      async () => {
        const ps = await doctor.page.evaluate(() => window.teleconsult.participants);
        return ps.length === 1 && ps[0].state === 'admitted';
      },
      { what: 'the patient admitted on the practitioner\'s page', timeoutMs: 20_000 },
    );
    process.stderr.write(`background: frozen ${shownAt - frozenAt} ms, back in the call with media ${Date.now() - shownAt} ms after being shown\n`);
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    await server.stop().catch(() => {});
  }
});
