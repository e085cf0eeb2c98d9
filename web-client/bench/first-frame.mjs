#!/usr/bin/env node
// Benchmark (not a test): time from opening the practitioner's join link (the patient has already
// joined and is waiting; admission is clicked automatically as soon as the patient shows up) to
// the first decoded remote video frame on the practitioner's page. Median of RUNS runs.
// Prints one markdown row on stdout (details on stderr), e.g. for docs/benchmarks.md:
//   | first remote frame, 1:1 loopback (practitioner) | 10 | 812 ms | 790 ms | 905 ms | Chromium 1xx |
//
// Usage: node bench/first-frame.mjs [runs]   (TELECONSULT_BIN overrides the server binary)

import { readFileSync } from 'node:fs';
import {
  startServer,
  launchBrowser,
  openParticipant,
  waitForPrejoin,
  consultationId,
} from '../tests/harness.mjs';

const RUNS = Number(process.argv[2] || process.env.RUNS || 10);

/** Resident set size of a process in MiB, from /proc/<pid>/status. */
function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function oneRun(browser, server) {
  const consultation = consultationId('bench');
  const patient = await openParticipant(browser, server, {
    consultation,
    identity: 'Pat Bench',
    role: 'patient',
  });
  await waitForPrejoin(patient);
  await patient.join();
  await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();

  const token = await server.mintToken({ consultation, identity: 'Dr Bench', role: 'practitioner' });
  const context = await browser.newContext();
  await context.grantPermissions(['camera', 'microphone'], { origin: server.base });
  const page = await context.newPage();

  const t0 = Date.now();
  await page.goto(server.joinUrl(token));
  const join = page.getByRole('button', { name: 'Join', exact: true });
  await page.waitForFunction(() => {
    const b = document.getElementById('join');
    return b && !b.disabled;
  });
  await join.click();
  await page
    .getByRole('region', { name: 'Waiting room' })
    .getByRole('button', { name: 'Admit Pat Bench', exact: true })
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
  // Let the call run a few seconds, then read the server's memory with this 1:1 up.
  await page.waitForTimeout(3000);
  const rss = rssMiB(server.child.pid);
  await context.close();
  await patient.context.close();
  return { ms: t1 - t0, rss };
}

async function main() {
  const server = await startServer();
  const browser = await launchBrowser();
  const version = browser.version();
  const times = [];
  const rss = [];
  let idleRss = NaN;
  try {
    idleRss = rssMiB(server.child.pid);
    // One warm-up run (page cache, codec start-up), not counted.
    await oneRun(browser, server);
    for (let i = 0; i < RUNS; i += 1) {
      const { ms, rss: r } = await oneRun(browser, server);
      times.push(ms);
      rss.push(r);
      process.stderr.write(`run ${i + 1}/${RUNS}: ${ms} ms, server RSS ${r.toFixed(1)} MiB\n`);
    }
  } finally {
    await browser.close().catch(() => {});
    await server.stop().catch(() => {});
  }
  process.stderr.write(
    '| benchmark | runs | median | min | max | browser |\n| --- | --- | --- | --- | --- | --- |\n',
  );
  process.stdout.write(
    `| first remote frame, 1:1 loopback (practitioner link opened → first decoded frame) | ${RUNS} | ` +
      `${Math.round(median(times))} ms | ${Math.min(...times)} ms | ${Math.max(...times)} ms | Chromium ${version} |\n`,
  );
  process.stdout.write(
    `| server RSS with one 1:1 consultation running (3 s into the call) | ${RUNS} | ` +
      `${median(rss).toFixed(1)} MiB | ${Math.min(...rss).toFixed(1)} MiB | ${Math.max(...rss).toFixed(1)} MiB | idle before the first call: ${idleRss.toFixed(1)} MiB |\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
