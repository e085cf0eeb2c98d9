// One seat, one connection (issue 9): a patient link opened on a second browser (another
// context: other storage, other devices) lands in the waiting room as a "second device" while
// the first stays in the call; a reload of the first tab resumes its own seat with the secret it
// keeps in sessionStorage; admitting the second device disconnects the first, with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, admit, waitFor } from './harness.mjs';

const state = (p) => p.page.evaluate(() => window.teleconsult.state);

test('a forwarded patient link waits as a second device; a reload resumes the seat', { timeout: 180_000 }, async () => {
  await withCall('second-device', async ({ server, open, openLink }) => {
    const consultation = consultationId('dev2');
    const doctor = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    const first = await open({ consultation, identity: 'Pat Example', role: 'patient' });
    for (const p of [doctor, first]) await waitForPrejoin(p);
    await doctor.join();
    await first.join();
    await admit(doctor, 'Pat Example');
    await waitFor(async () => (await state(first)) === 'in_call', { what: 'the first device in the call' });

    // The same link in a second browser context (a forwarded link, another device).
    const second = await openLink(server.joinUrl(first.token), { identity: 'forwarded', token: first.token });
    await waitForPrejoin(second);
    await second.join();
    await second.page.getByRole('heading', { name: 'Waiting for your practitioner' }).waitFor();
    assert.equal(await state(second), 'waiting');
    const region = doctor.page.getByRole('region', { name: 'Waiting room' });
    const admitSecond = region.getByRole('button', { name: 'Admit second device for Pat Example', exact: true });
    await admitSecond.waitFor();
    // The first device is untouched: still in the call, no error.
    assert.equal(await state(first), 'in_call');
    assert.equal((await first.page.locator('#error').textContent()).trim(), '');

    // A reload of the first tab: the fragment is gone, the token and the seat secret are in
    // sessionStorage; the page rejoins by itself and resumes the seat, straight into the call
    // (no waiting room, no second-device entry for it).
    await first.page.reload();
    await waitFor(async () => (await state(first)) === 'in_call', { what: 'the reloaded tab back in the call' });
    assert.equal(await region.getByRole('button', { name: /^Admit / }).count(), 1, 'only the second device waits');
    assert.equal(await state(second), 'waiting');

    // Admitting the second device disconnects the first, which says why.
    await admitSecond.click();
    await waitFor(async () => (await state(second)) === 'in_call', { what: 'the second device in the call' });
    await first.page.getByRole('alert').filter({ hasText: 'continues on another device' }).waitFor();
    assert.equal(await state(first), 'error');
  });
});
