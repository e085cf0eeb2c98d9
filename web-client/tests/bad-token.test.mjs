// (d) Bad links give a clear, specific error (close code 4401 and client-side checks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withCall, consultationId, waitForPrejoin, craftToken } from './harness.mjs';

test('bad token links show a clear error', { timeout: 120_000 }, async () => {
  await withCall('bad-token', async ({ server, open, openLink }) => {
    const consultation = consultationId('bad');

    // 1. A tampered signature: the page decodes the claims for display, the server refuses (4401).
    const good = await server.mintToken({ consultation, identity: 'Pat Example', role: 'patient' });
    const [body, sig] = good.split('.');
    const flipped = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
    const tampered = await openLink(server.joinUrl(`${body}.${flipped}`), {
      identity: 'tampered',
      token: `${body}.${flipped}`,
    });
    await waitForPrejoin(tampered);
    assert.equal((await tampered.page.locator('#error').textContent()).trim(), '', 'no error before joining');
    await tampered.join();
    await tampered.page.getByRole('alert').filter({ hasText: 'This consultation link is not valid' }).waitFor();
    assert.equal(await tampered.page.evaluate(() => window.teleconsult.state), 'error');
    assert.equal(await tampered.page.evaluate(() => window.teleconsult.pc), null);

    // 2. An expired link, correctly signed: the reason of the 4401 close says which.
    const now = Math.floor(Date.now() / 1000);
    const expiredToken = craftToken({
      v: 2,
      kid: 'k1',
      jti: 'an-old-invitation',
      consultation,
      role: 'patient',
      nbf: now - 7200,
      exp: now - 3600,
    });
    const expired = await openLink(server.joinUrl(expiredToken), { identity: 'expired', token: expiredToken });
    await waitForPrejoin(expired);
    await expired.join();
    await expired.page.getByRole('alert').filter({ hasText: 'This consultation link has expired' }).waitFor();

    // 3. No token at all, and garbage: refused before anything is sent.
    const none = await openLink(`${server.base}/join`, { identity: 'no-token' });
    await none.page.getByRole('alert').filter({ hasText: 'personal consultation link' }).waitFor();
    assert.equal(await none.page.getByRole('button', { name: 'Join', exact: true }).isVisible(), false);
    const garbage = await openLink(server.joinUrl('not-a-token'), { identity: 'garbage' });
    await garbage.page.getByRole('alert').filter({ hasText: 'This consultation link is not valid' }).waitFor();
    assert.ok(!garbage.page.url().includes('not-a-token'), 'even a bad token leaves the address bar');

    // A good link still works afterwards (the server is unharmed).
    const ok = await open({ consultation, identity: 'Dr Ada Lovelace', role: 'practitioner' });
    await waitForPrejoin(ok);
    await ok.join();
    await ok.page.getByRole('button', { name: 'End consultation' }).waitFor();
  });
});
