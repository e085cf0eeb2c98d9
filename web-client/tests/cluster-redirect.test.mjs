// Many servers, one service (issue 14), in the browser: two `teleconsult` nodes in cluster mode
// on one MongoDB-compatible store (FerretDB: TELECONSULT_TEST_MONGODB_URI, which scripts/test
// sets). The practitioner's page connects to /ws/{consultation} and the consultation is placed on
// one node; the patient opens the link on the other node: its signalling connection is answered
// with `redirect`, the page follows it to the owner (the page's CSP allows the other node's
// WebSocket origin), and the call works (remote media decoded both ways).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer,
  launchBrowser,
  openLink,
  waitForPrejoin,
  admit,
  waitForRemoteMedia,
  consultationId,
  waitFor,
} from './harness.mjs';

const MONGO = process.env.TELECONSULT_TEST_MONGODB_URI;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const noMongo = !MONGO && !process.env.CI ? 'needs TELECONSULT_TEST_MONGODB_URI (scripts/test sets it)' : false;

test('cluster: a join on the wrong node is redirected to the owner, and the call works', { timeout: 150_000, skip: noMongo }, async () => {
  assert.ok(MONGO, 'CI runs this test: TELECONSULT_TEST_MONGODB_URI must be set');
  const database = `browser_cluster_${Math.random().toString(16).slice(2, 10)}`;
  const ports = [await freePort(), await freePort()];
  const nodes = [];
  let browser;
  try {
    for (const [i, port] of ports.entries()) {
      nodes.push(
        await startServer({
          extraEnv: {
            TELECONSULT_SERVER__PORT: String(port),
            TELECONSULT_STORAGE__MONGODB_URI: MONGO,
            TELECONSULT_STORAGE__DATABASE: database,
            TELECONSULT_CLUSTER__ENABLED: 'true',
            TELECONSULT_CLUSTER__NODE_ID: `browser-${i}`,
            TELECONSULT_CLUSTER__PUBLIC_URL: `http://127.0.0.1:${port}`,
            TELECONSULT_CLUSTER__LEASE_SECS: '2',
          },
        }),
      );
    }
    // Each node's pages allow the other's WebSocket origin once it has read the live nodes.
    for (const [i, node] of nodes.entries()) {
      const other = `ws://127.0.0.1:${ports[1 - i]}`;
      await waitFor(
        async () => ((await fetch(`${node.base}/join`)).headers.get('content-security-policy') || '').includes(other),
        { what: `node ${i}'s CSP allows ${other}` },
      );
    }
    browser = await launchBrowser();
    const consultation = consultationId('cluster');
    const sockets = (p) => {
      const urls = [];
      p.page.on('websocket', (ws) => urls.push(ws.url()));
      return urls;
    };

    // The practitioner, through node 0: served by whichever node the placement chose.
    const drToken = await nodes[0].mintToken({ consultation, identity: 'dr-cluster', role: 'practitioner' });
    const doctor = await openLink(browser, nodes[0].joinUrl(drToken), { identity: 'dr-cluster', role: 'practitioner', token: drToken });
    const drSockets = sockets(doctor);
    await waitForPrejoin(doctor);
    await doctor.join();
    await waitFor(async () => (await doctor.page.evaluate(() => window.teleconsult.state)) === 'in_call', {
      what: 'the practitioner in the call',
    });
    const ownerUrl = drSockets.at(-1);
    const owner = ports.findIndex((p) => ownerUrl === `ws://127.0.0.1:${p}/ws/${consultation}`);
    assert.ok(owner >= 0, `the practitioner's socket is on a node: ${drSockets}`);
    const other = 1 - owner;

    // The patient opens the link on the other node: redirected to the owner.
    const ptToken = await nodes[other].mintToken({ consultation, identity: 'Pat Cluster', role: 'patient' });
    const patient = await openLink(browser, nodes[other].joinUrl(ptToken), { identity: 'Pat Cluster', role: 'patient', token: ptToken });
    const ptSockets = sockets(patient);
    await waitForPrejoin(patient);
    await patient.join();
    await patient.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    assert.deepEqual(ptSockets, [
      `ws://127.0.0.1:${ports[other]}/ws/${consultation}`,
      `ws://127.0.0.1:${ports[owner]}/ws/${consultation}`,
    ]);
    await admit(doctor, 'Pat Cluster');
    await waitForRemoteMedia(patient, { videos: 1 });
    await waitForRemoteMedia(doctor, { videos: 1 });
    for (const p of [doctor, patient]) {
      assert.ok(!p.consoleText().includes(p.token), `${p.label}: the token in the console`);
      assert.ok(!p.consoleText().includes('Content Security Policy'), `${p.label}: a CSP violation:\n${p.consoleText()}`);
    }
  } finally {
    await browser?.close().catch(() => {});
    for (const n of nodes) await n.stop().catch(() => {});
  }
});
