#!/usr/bin/env node
// Benchmark (not a test): from opening the sign-in page to the first decoded remote video frame of
// a scheduled consultation, as a practitioner does it: sign in, land on the workspace, "Start",
// "Join", admit the patient (who has opened their link and is waiting), first frame. The
// consultation is created beforehand through the workspace API by another signed-in tab. Median
// of RUNS runs after one warm-up run. Prints one markdown row on stdout (details on stderr).
//
// Usage: node bench/login-to-first-frame.mjs [runs]   (TELECONSULT_BIN overrides the binary)

import { startServer, launchBrowser, openLink, waitForPrejoin } from '../tests/harness.mjs';

const RUNS = Number(process.argv[2] || process.env.RUNS || 10);
// Printed by `serve --dev` (accounts/src/service.rs: DEMO_EMAIL, DEMO_PASSWORD).
const DEMO_EMAIL = 'practitioner@demo.teleconsult.test';
const DEMO_PASSWORD = 'demo-practitioner-password';

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A consultation scheduled now with one patient: its id and the patient's link. */
async function schedule(setup, server, label) {
  return setup.evaluate(
    async ({ email, password, label }) => {
      const login = await fetch('/api/auth/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email, password }),
      });
      const { csrf_token: csrf } = await login.json();
      const res = await fetch('/api/workspace/consultations', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: JSON.stringify({ patient_label: label, scheduled_at: Date.now() }),
      });
      const c = await res.json();
      return { id: c.id, token: c.invitations[0].token };
    },
    { email: DEMO_EMAIL, password: DEMO_PASSWORD, label },
  ).then((c) => ({ ...c, url: `${server.base}/join#token=${c.token}` }));
}

async function oneRun(browser, server, setup, n) {
  const label = `Patient ${n}`;
  const c = await schedule(setup, server, label);
  const patient = await openLink(browser, c.url, { identity: label, role: 'patient', token: c.token });
  await waitForPrejoin(patient);
  await patient.join();
  await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();

  const context = await browser.newContext();
  await context.grantPermissions(['camera', 'microphone'], { origin: server.base });
  const page = await context.newPage();
  const t0 = Date.now();
  await page.goto(`${server.base}/login`);
  await page.getByLabel('Email').fill(DEMO_EMAIL);
  await page.getByLabel('Password').fill(DEMO_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/workspace$/);
  await page.getByRole('button', { name: `Start consultation with ${label}`, exact: true }).click();
  await page.waitForFunction(() => {
    const b = document.getElementById('join');
    return b && !b.disabled;
  });
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page
    .getByRole('region', { name: 'Waiting room' })
    .getByRole('button', { name: `Admit ${label}`, exact: true })
    .click();
  // Poll inside the page so the measurement does not include a round trip per sample.
  const t1 = await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + 30_000;
        const tick = async () => {
          const pc = window.teleconsult && window.teleconsult.pc;
          if (pc) {
            const report = await pc.getStats();
            let decoded = 0;
            report.forEach((s) => {
              if (s.type === 'inbound-rtp' && s.kind === 'video') decoded += s.framesDecoded || 0;
            });
            if (decoded > 0) return resolve(Date.now());
          }
          if (Date.now() > deadline) return reject(new Error('no remote frame decoded within 30 s'));
          setTimeout(tick, 10);
        };
        tick();
      }),
  );
  await context.close();
  await patient.context.close();
  return t1 - t0;
}

async function main() {
  const server = await startServer();
  const browser = await launchBrowser();
  const version = browser.version();
  const times = [];
  try {
    const setupContext = await browser.newContext();
    const setup = await setupContext.newPage();
    await setup.goto(`${server.base}/login`);
    await oneRun(browser, server, setup, 0); // warm-up, not counted
    for (let i = 1; i <= RUNS; i += 1) {
      const ms = await oneRun(browser, server, setup, i);
      times.push(ms);
      process.stderr.write(`run ${i}/${RUNS}: ${ms} ms\n`);
    }
  } finally {
    await browser.close().catch(() => {});
    await server.stop().catch(() => {});
  }
  process.stdout.write(
    `| login → first decoded frame, scheduled 1:1 on loopback (sign-in page opened → practitioner decodes the patient) | ${RUNS} | ` +
      `${Math.round(median(times))} ms | ${Math.min(...times)} ms | ${Math.max(...times)} ms | Chromium ${version} |\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
