// Chat in a real call: the practitioner (signed in, started from the workspace) and the
// admitted patient chat both ways; markup and links stay plain text; a guest still in the
// waiting room gets the practitioner's notice and none of the chat; the stored chat (read from
// the SQLite file itself, with Python's sqlite3) holds no plaintext; after the call the
// practitioner reads the chat back and exports it from the workspace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { withCall, waitForPrejoin, signInPractitioner, createConsultation } from './harness.mjs';

const execFileP = promisify(execFile);

const FROM_DOCTOR = 'Please show me the rash <b>bold</b> https://example.org/x';
const FROM_PATIENT = 'It started on Tuesday, itching a lot';
const NOTICE = 'Running 10 minutes late';

/** Every column of the chat tables of the server's SQLite file, as one string. */
async function storedChat(server) {
  const db = path.join(server.env.TELECONSULT_STORAGE__DATA_DIR, 'teleconsult.sqlite3');
  const script = [
    'import sqlite3, sys',
    'c = sqlite3.connect(sys.argv[1])',
    'rows = c.execute("SELECT * FROM chat_messages").fetchall() + c.execute("SELECT * FROM chat_keys").fetchall()',
    'print(len(c.execute("SELECT * FROM chat_messages").fetchall()))',
    'print(repr(rows))',
  ].join('\n');
  const { stdout } = await execFileP('python3', ['-c', script, db]);
  const [count, ...rest] = stdout.split('\n');
  return { count: Number(count), text: rest.join('\n') };
}

async function send(page, text) {
  await page.locator('#chat-input').fill(text);
  await page.locator('#chat form button[type="submit"]').click();
}

test('chat both ways, notices to the waiting room only, sealed at rest, read back after the call', { timeout: 120_000 }, async () => {
  await withCall('chat', async (ctx) => {
    const { server, openLink } = ctx;
    const doctor = await signInPractitioner(ctx);
    const c = await createConsultation(doctor, server, { patient: 'Patient 7', guests: ['Relative'] });
    // Start from the workspace: the call page, joined with this session.
    await doctor.page.locator(`li.ws-item[data-consultation="${c.id}"] button.primary`).click();
    await doctor.page.waitForURL(/\/join$/);
    await doctor.page.waitForFunction(() => !document.getElementById('join').disabled);
    await doctor.page.locator('#join').click();
    await doctor.page.locator('#end').waitFor();

    const patient = await openLink(c.links['Patient 7'], { identity: 'Patient 7', role: 'patient', token: c.token('Patient 7') });
    const relative = await openLink(c.links.Relative, { identity: 'Relative', role: 'guest', token: c.token('Relative') });
    for (const p of [patient, relative]) {
      await waitForPrejoin(p);
      await p.join();
      await p.page.waitForFunction(() => window.teleconsult.state === 'waiting');
    }
    const patientId = await patient.page.evaluate(() => window.teleconsult.you.id);
    await doctor.page.locator(`#waiting-list li[data-participant="${patientId}"] button.primary`).click();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'in_call');

    // Both ways. The markup arrives as text; the link is not an anchor.
    await send(doctor.page, FROM_DOCTOR);
    const onPatient = patient.page.locator('#chat .chat-log li .chat-text', { hasText: FROM_DOCTOR });
    await onPatient.waitFor();
    assert.equal(await onPatient.textContent(), FROM_DOCTOR);
    assert.equal(await patient.page.locator('#chat .chat-log b, #chat .chat-log a').count(), 0, 'no markup, no links rendered');
    await send(patient.page, FROM_PATIENT);
    await doctor.page.locator('#chat .chat-log li .chat-text', { hasText: FROM_PATIENT }).waitFor();
    // The sender sees their own message too, marked as theirs.
    await patient.page.locator('#chat .chat-log li[data-mine="true"] .chat-text', { hasText: FROM_PATIENT }).waitFor();
    assert.equal(await doctor.page.locator('#chat .chat-log li').count(), 2);

    // A notice to the waiting room: the relative (still waiting) reads it; the patient in the
    // call does not get it.
    await doctor.page.locator('#notice-input').fill(NOTICE);
    await doctor.page.locator('#notice-form button[type="submit"]').click();
    await relative.page.locator('#notices .notice-text', { hasText: NOTICE }).waitFor();
    assert.ok(await relative.page.locator('#notices').isVisible());
    // The practitioner's page confirms it (the echo arrives after the waiting room's copy).
    await doctor.page.waitForFunction(() => document.getElementById('notice-status').textContent.length > 0);
    const relativeText = await relative.page.evaluate(() => document.body.innerText + document.body.innerHTML);
    for (const t of [FROM_DOCTOR, FROM_PATIENT, 'itching']) {
      assert.ok(!relativeText.includes(t), `the waiting room saw chat: ${t}`);
    }
    assert.ok(!(await patient.page.evaluate(() => document.body.innerHTML)).includes(NOTICE));

    // At rest: three messages, none of their words in the clear.
    const stored = await (async () => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const s = await storedChat(server);
        if (s.count >= 3 || Date.now() > deadline) return s;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    assert.equal(stored.count, 3, 'two chat messages and a notice stored');
    assert.match(stored.text, /AES-256-GCM-chat-v1/);
    for (const t of ['rash', 'bold', 'example.org', 'Tuesday', 'itching', 'minutes late', 'Patient 7']) {
      assert.ok(!stored.text.includes(t), `stored in plaintext: ${t}`);
    }

    // End the call (confirmed), then read the chat back from the workspace.
    await doctor.page.locator('#end').click();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'ended');
    await doctor.page.goto(`${server.base}/workspace`);
    await doctor.page.waitForFunction(() => document.body.dataset.loaded === 'true');
    const item = doctor.page.locator(`#past li.ws-item[data-consultation="${c.id}"]`);
    await item.locator('.ws-chat button').click();
    const log = item.locator('.ws-chat-log');
    await log.locator('.ws-chat-text', { hasText: FROM_DOCTOR }).waitFor();
    const texts = await log.locator('.ws-chat-text').allTextContents();
    assert.deepEqual(texts, [FROM_DOCTOR, FROM_PATIENT, NOTICE]);
    assert.equal(await log.locator('b, a').count(), 0);
    // The export: a JSON attachment with the same messages.
    const exported = await doctor.page.evaluate(async (href) => {
      const res = await fetch(href);
      return { disposition: res.headers.get('content-disposition'), body: await res.json() };
    }, await item.locator('.ws-chat a').getAttribute('href'));
    assert.match(exported.disposition, /^attachment; filename="chat-/);
    assert.deepEqual(
      exported.body.messages.map((m) => [m.kind, m.text]),
      [['chat', FROM_DOCTOR], ['chat', FROM_PATIENT], ['notice', NOTICE]],
    );
    for (const p of [doctor, patient, relative]) assert.ok(!p.consoleText().includes('[pageerror]'), p.consoleText());
  });
});
