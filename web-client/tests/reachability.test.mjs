// Reachability (issue 11), with real Chromium inside network namespaces we create: a patient
// whose network drops all UDP connects over ICE-TCP; one whose network allows only TCP to the
// TURN port (and the web server) connects through coturn over TLS. The selected candidate pair
// from getStats() proves which path carried the call; both sides decode each other's video.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  startServer,
  openLink,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  consultationId,
  waitFor,
} from './harness.mjs';
import { makeNetns, selectedPair, startCoturn } from './netns.mjs';
import { chromium } from 'playwright-core';

/** The server's ICE-TCP address, from its start-up log. */
async function tcpPortOf(server) {
  const m = await waitFor(() => /media ICE-TCP on [0-9.]+:(\d+)/.exec(server.logText()), {
    what: 'the ICE-TCP start-up line',
  });
  return Number(m[1]);
}

/**
 * A 1:1 call: the practitioner in `doctorBrowser` (on the host), the patient in `patientBrowser`
 * (inside the namespace). Returns both participants once each decodes the other's video.
 */
async function call(server, doctorBrowser, patientBrowser) {
  const consultation = consultationId('reach');
  const dToken = await server.mintToken({ consultation, identity: 'Dr Reach', role: 'practitioner' });
  const pToken = await server.mintToken({ consultation, identity: 'Pat Reach', role: 'patient' });
  const doctor = await openLink(doctorBrowser, server.joinUrl(dToken), { identity: 'Dr Reach', role: 'practitioner', token: dToken });
  const patient = await openLink(patientBrowser, server.joinUrl(pToken), { identity: 'Pat Reach', role: 'patient', token: pToken });
  try {
    await Promise.all([waitForPrejoin(doctor), waitForPrejoin(patient)]);
  } catch (err) {
    // Say which page did not get to its Join button, and what it showed and logged.
    const seen = async (who, p) =>
      `${who} (${p.page.url()}):\n  page: ${(await p.page.innerText('body').catch((e) => `<${e.message}>`)).slice(0, 600)}\n  console:\n${p.consoleText()}`;
    throw new Error(`${err.message}\n${await seen('doctor', doctor)}\n${await seen('patient', patient)}\nserver log:\n${server.logText().slice(-3000)}`);
  }
  await patient.join();
  await doctor.join();
  await doctor.page
    .getByRole('region', { name: 'Waiting room' })
    .getByRole('button', { name: 'Admit Pat Reach', exact: true })
    .waitFor();
  await admit(doctor, 'Pat Reach');
  try {
    await Promise.all([
      waitForRemoteMedia(doctor, { videos: 1, audios: 1, timeoutMs: 45_000 }),
      waitForRemoteMedia(patient, { videos: 1, audios: 1, timeoutMs: 45_000 }),
    ]);
  } catch (err) {
    throw new Error(`${err.message}\npatient console:\n${patient.consoleText()}\nserver log:\n${server.logText().slice(-4000)}`);
  }
  return { doctor, patient };
}

/** A browser on the host that may use getUserMedia on the server's non-loopback origin. */
function hostBrowser(server) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${server.base}`],
    headless: true,
  });
}

test('ICE-TCP: a patient whose network drops all UDP connects over TCP and decodes video', { timeout: 150_000 }, async () => {
  const ns = await makeNetns();
  let server;
  const browsers = [];
  try {
    server = await startServer({ host: ns.hostIp });
    const tcpPort = await tcpPortOf(server);
    // The hospital firewall: no UDP at all towards the server (nor anywhere else).
    await ns.nft(`table inet hospital {
      chain out { type filter hook output priority 0; policy accept; meta l4proto udp drop; }
      chain in { type filter hook input priority 0; policy accept; meta l4proto udp drop; }
    }`);
    const doctorBrowser = await hostBrowser(server);
    browsers.push(doctorBrowser);
    const patientBrowser = await ns.launchBrowser([`--unsafely-treat-insecure-origin-as-secure=${server.base}`]);
    browsers.push(patientBrowser);
    const { doctor, patient } = await call(server, doctorBrowser, patientBrowser);

    const p = await waitFor(() => selectedPair(patient.page), { what: 'the patient\'s selected pair' });
    assert.equal(p.local.protocol, 'tcp', JSON.stringify(p));
    assert.equal(p.remote.protocol, 'tcp', JSON.stringify(p));
    assert.equal(p.remote.port, tcpPort, `the pair ends at the server's ICE-TCP port: ${JSON.stringify(p)}`);
    assert.equal(p.remote.address, ns.hostIp);
    // The practitioner, whose network allows UDP, settles on it (Chromium may carry the first
    // packets over whichever pair was writable first, then switches to the better one).
    let d = null;
    await waitFor(
      async () => {
        d = await selectedPair(doctor.page);
        return d && d.local.protocol === 'udp' && d.remote.port === server.udpPort;
      },
      { what: 'the doctor on UDP' },
    ).catch((err) => {
      throw new Error(`${err.message}: ${JSON.stringify(d)}`);
    });
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    if (server) await server.stop().catch(() => {});
    await ns.destroy();
  }
});

test('TURN/TLS: a patient whose network allows only TCP to the TURN port connects through coturn', { timeout: 150_000 }, async () => {
  const ns = await makeNetns();
  let server;
  let turn;
  const browsers = [];
  const secret = `turn-test-secret-${process.pid}-0123456789abcdefghij`;
  try {
    turn = await startCoturn(ns, { secret });
    server = await startServer({
      host: ns.hostIp,
      extraEnv: {
        TELECONSULT_TURN__URLS: `["turns:${ns.hostIp}:${turn.tlsPort}?transport=tcp"]`,
        TELECONSULT_TURN__SECRET: secret,
      },
    });
    const tcpPort = await tcpPortOf(server);
    // Only HTTPS-like traffic: TCP to the web server and to TURN's TLS port; no UDP, and not
    // the media server's ICE-TCP port.
    await ns.nft(`table inet hospital {
      chain out {
        type filter hook output priority 0; policy accept;
        meta l4proto udp drop;
        ip daddr ${ns.hostIp} tcp dport { ${server.port}, ${turn.tlsPort} } accept;
        meta l4proto tcp drop;
      }
    }`);
    const doctorBrowser = await hostBrowser(server);
    browsers.push(doctorBrowser);
    const patientBrowser = await ns.launchBrowser([
      `--unsafely-treat-insecure-origin-as-secure=${server.base}`,
      // coturn's test certificate is self-signed.
      '--ignore-certificate-errors',
    ]);
    browsers.push(patientBrowser);
    const { patient } = await call(server, doctorBrowser, patientBrowser);

    // The patient's peer connection was given the TURN server with a credential of its own.
    const iceServers = await patient.page.evaluate(() => window.teleconsult.pc.getConfiguration().iceServers);
    assert.equal(iceServers.length, 1, JSON.stringify(iceServers.map((s) => s.urls)));
    assert.deepEqual(iceServers[0].urls, [`turns:${ns.hostIp}:${turn.tlsPort}?transport=tcp`]);
    const [expiry, who] = iceServers[0].username.split(':');
    assert.ok(Number(expiry) > Date.now() / 1000, 'the credential expires in the future');
    assert.ok(who.length > 0, 'the username names the participant');
    const credential = iceServers[0].credential;
    assert.ok(credential && credential.length >= 20);
    const p = await waitFor(() => selectedPair(patient.page), { what: 'the patient\'s selected pair' });
    assert.equal(p.local.candidateType, 'relay', JSON.stringify(p));
    assert.equal(p.local.relayProtocol, 'tls', JSON.stringify(p));
    assert.notEqual(p.remote.port, tcpPort);
    assert.equal(p.remote.port, server.udpPort, `relayed to the server's UDP port: ${JSON.stringify(p)}`);
    // The credential never appears in the server's log.
    const log = server.logText();
    assert.ok(!log.includes(secret), 'the TURN secret is not logged');
    assert.ok(!log.includes(credential), 'the TURN credential is not logged');
    assert.ok(!patient.consoleText().includes(credential), 'nor in the page console');
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    if (server) await server.stop().catch(() => {});
    if (turn) await turn.stop().catch(() => {});
    await ns.destroy();
  }
});
