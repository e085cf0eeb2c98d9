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
  signInPractitioner,
  createConsultation,
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

/** Two --dev nodes in cluster mode on one database (ports picked), each page's CSP allowing the other. */
async function startTwoNodes(name) {
  const database = `browser_${name}_${Math.random().toString(16).slice(2, 10)}`;
  const ports = [await freePort(), await freePort()];
  const nodes = [];
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
  for (const [i, node] of nodes.entries()) {
    const other = `ws://127.0.0.1:${ports[1 - i]}`;
    await waitFor(
      async () => ((await fetch(`${node.base}/join`)).headers.get('content-security-policy') || '').includes(other),
      { what: `node ${i}'s CSP allows ${other}` },
    );
  }
  return { ports, nodes };
}

// Stop 11: the practitioner signed in on node 0 (their session cookie is node 0's) starts a
// consultation that node 1 owns: node 0's `redirect` carries a join ticket, the page presents it
// as its join token on node 1 (where no cookie of theirs exists), and they are in the call there.
test('cluster: a signed-in practitioner redirected to the owner joins with the ticket', { timeout: 180_000, skip: noMongo }, async () => {
  assert.ok(MONGO, 'CI runs this test: TELECONSULT_TEST_MONGODB_URI must be set');
  let browser;
  let nodes = [];
  const participants = [];
  try {
    const started = await startTwoNodes('ticket');
    nodes = started.nodes;
    const { ports } = started;
    browser = await launchBrowser();
    const doctor = await signInPractitioner({ server: nodes[0], browser, participants });
    // A consultation placed on node 1: its patient opens the link on node 1 first (placement is
    // two random choices: a new consultation until one stays on node 1).
    let c;
    let patient;
    for (let attempt = 0; attempt < 8 && !patient; attempt += 1) {
      c = await createConsultation(doctor, nodes[0], { patient: `Patient ${attempt}` });
      const token = c.token(`Patient ${attempt}`);
      const p = await openLink(browser, nodes[1].joinUrl(token), { identity: `Patient ${attempt}`, role: 'patient', token });
      participants.push(p);
      const urls = [];
      p.page.on('websocket', (ws) => urls.push(ws.url()));
      await waitForPrejoin(p);
      await p.join();
      await p.page.waitForFunction(() => window.teleconsult.state === 'waiting');
      if (urls.length === 1 && urls[0] === `ws://127.0.0.1:${ports[1]}/ws/${c.id}`) patient = p;
      else await p.context.close();
    }
    assert.ok(patient, 'a consultation placed on node 1 within 8 tries');

    // The practitioner starts it from the workspace on node 0.
    const drSockets = [];
    const sent = [];
    doctor.page.on('websocket', (ws) => {
      drSockets.push(ws.url());
      ws.on('framesent', (f) => sent.push({ url: ws.url(), payload: String(f.payload) }));
    });
    await doctor.page.locator(`li.ws-item[data-consultation="${c.id}"] button.primary`).click();
    await doctor.page.waitForURL(/\/join$/);
    await doctor.page.waitForFunction(() => !document.getElementById('join').disabled);
    await doctor.page.locator('#join').click();
    await waitFor(async () => (await doctor.page.evaluate(() => window.teleconsult.state)) === 'in_call', {
      what: 'the practitioner in the call on the owner',
    });
    assert.deepEqual(drSockets, [`ws://127.0.0.1:${ports[0]}/ws/${c.id}`, `ws://127.0.0.1:${ports[1]}/ws/${c.id}`]);
    const joins = sent.filter((f) => f.payload.includes('"type":"join"')).map((f) => ({ url: f.url, msg: JSON.parse(f.payload) }));
    assert.equal(joins[0].msg.token, '', 'the first join is the session (cookie) join');
    assert.ok(joins.at(-1).msg.token.startsWith('tkt1.'), 'the redirected join presents the ticket');
    assert.equal(joins.at(-1).url, `ws://127.0.0.1:${ports[1]}/ws/${c.id}`);
    assert.ok(drSockets.every((u) => !u.includes('tkt1') && !u.includes('?')), 'never in a URL');
    // In the call on node 1: the patient waiting there is theirs to admit.
    await admit(doctor, patient.identity);
    await waitForRemoteMedia(patient, { videos: 1 });
    await waitForRemoteMedia(doctor, { videos: 1 });
    assert.ok(!doctor.consoleText().includes('tkt1.'), 'the ticket in the console');
  } finally {
    await browser?.close().catch(() => {});
    for (const n of nodes) await n.stop().catch(() => {});
  }
});

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
