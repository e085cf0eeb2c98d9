#!/usr/bin/env node
// Benchmark (not a test): time to connect over UDP, ICE-TCP and TURN/TLS. Real Chromium, the
// patient inside a network namespace (tests/netns.mjs) whose nft rules leave one path open; the
// practitioner on the host. One run: a new consultation, both join, the practitioner admits; the
// time measured is from the admit click to the patient's first decoded remote video frame (offer,
// answer, ICE, DTLS, first keyframe). Median of RUNS runs per path; prints markdown rows.
// Needs root (ip netns, nft) and coturn, like the reachability tests.
//
// Usage: node bench/connect-paths.mjs [runs]   (TELECONSULT_BIN overrides the server binary)

import { chromium } from 'playwright-core';
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  startServer,
  openLink,
  waitForPrejoin,
  admit,
  consultationId,
  waitFor,
  inboundStats,
} from '../tests/harness.mjs';
import { makeNetns, selectedPair, startCoturn } from '../tests/netns.mjs';

const RUNS = Number(process.argv[2] || process.env.RUNS || 10);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const ns = await makeNetns();
let server;
let turn;
const browsers = [];
try {
  const secret = `bench-turn-secret-${process.pid}-0123456789abcdefghij`;
  turn = await startCoturn(ns, { secret });
  server = await startServer({
    host: ns.hostIp,
    extraEnv: {
      TELECONSULT_TURN__URLS: `["turns:${ns.hostIp}:${turn.tlsPort}?transport=tcp"]`,
      TELECONSULT_TURN__SECRET: secret,
    },
  });
  const secure = `--unsafely-treat-insecure-origin-as-secure=${server.base}`;
  const host = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, secure], headless: true });
  browsers.push(host);
  const inside = await ns.launchBrowser([secure, '--ignore-certificate-errors']);
  browsers.push(inside);
  const paths = {
    // TURN is configured for every run; the UDP and ICE-TCP runs cannot reach it.
    UDP: { rules: [`ip daddr ${ns.hostIp} tcp dport ${turn.tlsPort} drop`], expect: (p) => p.local.protocol === 'udp' && p.local.candidateType !== 'relay' },
    'ICE-TCP': {
      rules: ['meta l4proto udp drop', `ip daddr ${ns.hostIp} tcp dport ${turn.tlsPort} drop`],
      expect: (p) => p.local.protocol === 'tcp' && p.local.candidateType !== 'relay',
    },
    'TURN/TLS': {
      rules: ['meta l4proto udp drop', `ip daddr ${ns.hostIp} tcp dport { ${server.port}, ${turn.tlsPort} } accept`, 'meta l4proto tcp drop'],
      expect: (p) => p.local.candidateType === 'relay' && p.local.relayProtocol === 'tls',
    },
  };
  const rows = [];
  for (const [name, { rules, expect }] of Object.entries(paths)) {
    await ns.exec('nft', ['flush', 'ruleset']);
    if (rules.length) {
      await ns.nft(`table inet bench {\n chain out {\n type filter hook output priority 0; policy accept;\n ${rules.join('\n ')}\n }\n}\n`);
    }
    const times = [];
    for (let i = 0; i < RUNS; i += 1) {
      const consultation = consultationId('paths');
      const dToken = await server.mintToken({ consultation, identity: 'Dr Bench', role: 'practitioner' });
      const pToken = await server.mintToken({ consultation, identity: 'Pat Bench', role: 'patient' });
      const doctor = await openLink(host, server.joinUrl(dToken), { token: dToken });
      const patient = await openLink(inside, server.joinUrl(pToken), { token: pToken });
      await Promise.all([waitForPrejoin(doctor), waitForPrejoin(patient)]);
      await patient.join();
      await doctor.join();
      await doctor.page
        .getByRole('region', { name: 'Waiting room' })
        .getByRole('button', { name: 'Admit Pat Bench', exact: true })
        .waitFor();
      const t0 = Date.now();
      await admit(doctor, 'Pat Bench');
      await waitFor(async () => (await inboundStats(patient.page)).some((s) => s.kind === 'video' && s.framesDecoded > 0), {
        what: `${name}: first frame`,
        timeoutMs: 30_000,
        intervalMs: 20,
      });
      const ms = Date.now() - t0;
      // The first frame may come over whichever path became usable first; the call must settle
      // on the path under test (Chromium switches to a better pair once it is writable).
      let pair = null;
      await waitFor(
        async () => {
          pair = await selectedPair(patient.page);
          return pair && expect(pair);
        },
        { what: `${name}: the call on its path`, timeoutMs: 10_000 },
      ).catch(() => {
        throw new Error(`${name}: the call used another path: ${JSON.stringify(pair)}`);
      });
      times.push(ms);
      process.stderr.write(`${name} run ${i + 1}: ${ms} ms (${pair.local.candidateType}/${pair.local.protocol})\n`);
      await doctor.context.close();
      await patient.context.close();
    }
    rows.push(`| admit → first frame, ${name} | ${RUNS} | ${median(times)} ms | ${Math.min(...times)} ms | ${Math.max(...times)} ms |`);
  }
  console.log('| path | runs | median | min | max |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
} finally {
  for (const b of browsers) await b.close().catch(() => {});
  if (server) await server.stop().catch(() => {});
  if (turn) await turn.stop().catch(() => {});
  await ns.destroy();
}
