// Languages: with the browser asking for French, then German (Accept-Language and
// navigator.languages, from the context's locale), the sign-in, pre-join, waiting-room and
// in-call pages (patient and practitioner) carry no English sentence: every text node of the
// page is checked against the English catalogue (exact strings, and the sentences with
// placeholders as patterns). <html lang> follows; the switcher changes the language in place.
// The catalogues have the same keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fr from '../public/locales/fr.js';
import de from '../public/locales/de.js';
import { withCall, consultationId } from './harness.mjs';
import { flatten, EN, englishLeft } from './i18n-check.mjs';

test('catalogues have the same keys', () => {
  for (const [name, cat] of [['fr', fr], ['de', de]]) {
    assert.deepEqual([...flatten(cat).keys()].sort(), [...EN.keys()].sort(), `${name} keys`);
  }
});

for (const [lang, target, joinWord] of [['fr-FR', fr, 'Rejoindre'], ['de-DE', de, 'Beitreten']]) {
  test(`pages in ${lang} by Accept-Language: no English left`, { timeout: 120_000 }, async () => {
    await withCall(`i18n-${lang}`, async ({ server, browser, open }) => {
      const base = lang.slice(0, 2);
      // Sign-in page.
      const ctx = await browser.newContext({ locale: lang });
      const login = await ctx.newPage();
      await login.goto(`${server.base}/login`);
      await login.waitForFunction((l) => document.documentElement.lang === l, base);
      assert.deepEqual(await englishLeft(login, target), [], 'sign-in page');
      await ctx.close();

      const consultation = consultationId(`i18n-${base}`);
      const doctor = await open({ consultation, identity: 'Dr Sprache', role: 'practitioner', locale: lang });
      const patient = await open({ consultation, identity: 'Pat Langue', role: 'patient', locale: lang });
      await Promise.all([doctor, patient].map((p) => p.page.getByRole('button', { name: joinWord, exact: true }).waitFor()));
      await patient.page.waitForFunction(() => !document.getElementById('join').disabled);
      assert.equal(await patient.page.evaluate(() => document.documentElement.lang), base);
      assert.deepEqual(await englishLeft(patient.page, target), [], 'pre-join');
      await patient.page.locator('#join').click();
      await patient.page.waitForFunction(() => window.teleconsult.state === 'waiting');
      assert.deepEqual(await englishLeft(patient.page, target), [], 'waiting room');

      await doctor.page.waitForFunction(() => !document.getElementById('join').disabled);
      await doctor.page.locator('#join').click();
      await doctor.page.locator('#waiting-list li button.primary').waitFor();
      assert.deepEqual(await englishLeft(doctor.page, target), [], 'practitioner with the waiting list');
      await doctor.page.locator('#waiting-list li button.primary').click();
      await patient.page.waitForFunction(() => window.teleconsult.state === 'in_call');
      await doctor.page.locator('#tiles > li').waitFor();
      await patient.page.locator('#tiles > li').waitFor();
      await patient.page.locator('#chat-input').fill('Bonjour / Guten Tag');
      await patient.page.locator('#chat-input').press('Enter');
      await doctor.page.locator('#chat .chat-text').waitFor();
      await patient.page.locator('#toggle-devices').click();
      for (const [who, p] of [['patient', patient], ['practitioner', doctor]]) {
        assert.deepEqual(await englishLeft(p.page, target), [], `${who} in the call`);
      }
      // The switcher: back to English in place, <html lang> follows.
      await patient.page.locator('#lang-select').selectOption('en');
      await patient.page.getByRole('button', { name: 'Mute microphone' }).waitFor();
      assert.equal(await patient.page.evaluate(() => document.documentElement.lang), 'en');
      // (The check sees English when it is there.)
      assert.ok((await englishLeft(patient.page, target)).length > 10, 'the detector finds the English page');
      // Remembered on this device.
      assert.equal(await patient.page.evaluate(() => localStorage.getItem('teleconsult.lang')), 'en');
    });
  });
}
