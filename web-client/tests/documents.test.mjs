// Shared documents in the call screen, against the real server: upload with progress, live
// list over signalling, download with the same bytes, type refusal, who may delete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withCall, consultationId, waitForPrejoin, admit } from './harness.mjs';

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** A small but real PDF: header, one empty page, xref, trailer; random bytes in a comment. */
function pdfBytes() {
  const body = [
    '%PDF-1.4',
    `% ${randomBytes(24).toString('hex')}`,
    '1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj',
    '2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj',
    '3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj',
  ].join('\n');
  const pad = 'x'.repeat(40_000); // big enough for several upload progress events
  return Buffer.from(`${body}\n% ${pad}\ntrailer << /Root 1 0 R >>\n%%EOF\n`, 'latin1');
}

/** The Documents region of a page. */
const docs = (p) => p.page.getByRole('region', { name: 'Documents' });

/** Record every request URL a page makes (the token must never appear in one). */
function recordUrls(p) {
  const urls = [];
  p.page.on('request', (r) => urls.push(r.url()));
  return urls;
}

test('documents: upload with progress, live list, download, refused type, delete rights', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'teleconsult-docs-'));
  try {
    await withCall('documents', async ({ open, server }) => {
      const consultation = consultationId('docs');
      const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
      const patient = await open({ consultation, identity: 'Pat Example', role: 'patient' });
      const doctorUrls = recordUrls(doctor);
      const patientUrls = recordUrls(patient);
      await Promise.all([doctor, patient].map(waitForPrejoin));
      await doctor.join();
      await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
      await patient.join();
      await admit(doctor, 'Pat Example');
      await docs(patient).waitFor();
      await docs(doctor).getByText('No documents shared yet.').waitFor();
      // A marker that a reload would wipe: the list must update through signalling.
      await doctor.page.evaluate(() => {
        window.__notReloaded = true;
      });

      // The patient uploads a PDF; the progress bar reaches 100 %.
      const pdf = pdfBytes();
      const pdfPath = path.join(dir, 'report.pdf');
      writeFileSync(pdfPath, pdf);
      await docs(patient).getByLabel('Upload a document').setInputFiles(pdfPath);
      await docs(patient).getByText('report.pdf uploaded.').waitFor();
      const bar = docs(patient).getByRole('progressbar', { name: 'Upload progress' });
      assert.equal(await bar.getAttribute('max'), '100');
      assert.equal(await bar.evaluate((el) => el.value), 100);

      // The practitioner's page shows it without a reload, with size and uploader role.
      const doctorRow = docs(doctor).locator('li', { hasText: 'report.pdf' });
      await docs(doctor).getByRole('button', { name: 'Download report.pdf', exact: true }).waitFor();
      assert.equal(await doctor.page.evaluate(() => window.__notReloaded), true);
      const rowText = await doctorRow.textContent();
      assert.match(rowText, /patient/);
      assert.match(rowText, /\d+(\.\d)? KiB/);
      // The practitioner may delete anyone's document.
      assert.equal(await docs(doctor).getByRole('button', { name: 'Delete report.pdf' }).count(), 1);

      // The practitioner downloads it: the same bytes.
      const [download] = await Promise.all([
        doctor.page.waitForEvent('download'),
        docs(doctor).getByRole('button', { name: 'Download report.pdf', exact: true }).click(),
      ]);
      assert.equal(download.suggestedFilename(), 'report.pdf');
      const saved = readFileSync(await download.path());
      assert.equal(sha256(saved), sha256(pdf), 'downloaded bytes differ from the upload');

      // An executable renamed to .pdf is refused with the "type not allowed" sentence.
      const exe = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), randomBytes(4096)]);
      const exePath = path.join(dir, 'setup.pdf');
      writeFileSync(exePath, exe);
      await docs(patient).getByLabel('Upload a document').setInputFiles(exePath);
      await docs(patient)
        .getByRole('alert')
        .filter({ hasText: 'This type of file is not allowed.' })
        .waitFor();
      assert.match(await docs(patient).getByRole('alert').textContent(), /PDF, PNG, JPEG, WebP, plain text and DICOM/);
      assert.equal(await docs(patient).getByText('setup.pdf').count(), 0);

      // The practitioner shares a document; the patient sees it but may not delete it.
      const rx = Buffer.from(`%PDF-1.4\n% prescription ${randomBytes(8).toString('hex')}\n%%EOF\n`, 'latin1');
      const rxPath = path.join(dir, 'prescription.pdf');
      writeFileSync(rxPath, rx);
      await docs(doctor).getByLabel('Upload a document').setInputFiles(rxPath);
      await docs(patient).getByRole('button', { name: 'Download prescription.pdf', exact: true }).waitFor();
      assert.match(await docs(patient).locator('li', { hasText: 'prescription.pdf' }).textContent(), /practitioner/);
      assert.equal(await docs(patient).getByRole('button', { name: 'Delete prescription.pdf' }).count(), 0);
      // The patient deletes their own one, though.
      assert.equal(await docs(patient).getByRole('button', { name: 'Delete report.pdf' }).count(), 1);

      // Trying anyway (with the patient's own token, outside the page): the server refuses.
      const api = `${server.base}/api/consultations/${encodeURIComponent(consultation)}/documents`;
      const listed = await (await fetch(api, { headers: { Authorization: `Bearer ${patient.token}` } })).json();
      assert.deepEqual(listed.map((d) => d.filename).sort(), ['prescription.pdf', 'report.pdf']);
      const rxDoc = listed.find((d) => d.filename === 'prescription.pdf');
      const refused = await fetch(`${api}/${rxDoc.id}`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${patient.token}` },
      });
      assert.equal(refused.status, 403);
      assert.equal((await refused.json()).code, 'not_uploader');

      // The patient deletes their own document; it leaves the practitioner's list live.
      await docs(patient).getByRole('button', { name: 'Delete report.pdf' }).click();
      await docs(doctor).getByRole('button', { name: 'Download report.pdf', exact: true }).waitFor({ state: 'detached' });
      await docs(doctor).getByRole('button', { name: 'Download prescription.pdf', exact: true }).waitFor();
      assert.equal(await doctor.page.evaluate(() => window.__notReloaded), true);

      // The token never went into a URL.
      for (const [p, list] of [
        [doctor, doctorUrls],
        [patient, patientUrls],
      ]) {
        assert.ok(list.some((u) => u.includes('/documents')), `${p.label} made documents requests`);
        for (const u of list) assert.ok(!u.includes(p.token), `${p.label}: token in a request URL`);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('documents: a participant admitted later gets the current list', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'teleconsult-docs-'));
  try {
    await withCall('documents-late', async ({ open }) => {
      const consultation = consultationId('docs-late');
      const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
      await waitForPrejoin(doctor);
      await doctor.join();
      await doctor.page.getByRole('button', { name: 'End consultation' }).waitFor();
      const notes = Buffer.from(`Clinical notes ${randomBytes(8).toString('hex')}\n`, 'utf8');
      const notesPath = path.join(dir, 'notes.txt');
      writeFileSync(notesPath, notes);
      await docs(doctor).getByLabel('Upload a document').setInputFiles(notesPath);
      await docs(doctor).getByText('notes.txt uploaded.').waitFor();

      // A guest who arrives afterwards sees it once admitted (from the list request), not before.
      const guest = await open({ consultation, identity: 'Ivy Interpreter', role: 'guest' });
      await waitForPrejoin(guest);
      await guest.join();
      await guest.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
      assert.equal(await guest.page.getByRole('button', { name: 'Download notes.txt' }).isVisible(), false);
      await admit(doctor, 'Ivy Interpreter');
      await docs(guest).getByRole('button', { name: 'Download notes.txt', exact: true }).waitFor();
      assert.equal(await docs(guest).getByRole('button', { name: 'Delete notes.txt' }).count(), 0);
      const [download] = await Promise.all([
        guest.page.waitForEvent('download'),
        docs(guest).getByRole('button', { name: 'Download notes.txt', exact: true }).click(),
      ]);
      assert.equal(sha256(readFileSync(await download.path())), sha256(notes));
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
