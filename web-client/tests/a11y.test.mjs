// Accessibility audit with axe-core (injected into each page; the contexts bypass our CSP for
// that only): the pre-join, waiting, in-call (with chat), practitioner (waiting list, notice
// form), sign-in and workspace pages have no serious or critical violations. And the call is
// usable from the keyboard alone: Tab reaches the controls, each with a visible focus ring,
// and Enter in the chat box sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withCall,
  waitForPrejoin,
  signInPractitioner,
  createConsultation,
  seriousA11yViolations,
} from './harness.mjs';

async function audit(page, what) {
  const v = await seriousA11yViolations(page);
  assert.deepEqual(v, [], `${what}: serious or critical accessibility violations:\n${JSON.stringify(v, null, 2)}`);
}

test('axe: no serious or critical violations on the pages of a call; keyboard operation', { timeout: 120_000 }, async () => {
  await withCall('a11y', async (ctx) => {
    const { server, openLink } = ctx;
    const login = await ctx.browser.newContext({ bypassCSP: true });
    const loginPage = await login.newPage();
    await loginPage.goto(`${server.base}/login`);
    await loginPage.locator('#email').waitFor();
    await audit(loginPage, 'sign-in');
    await login.close();

    const doctor = await signInPractitioner(ctx, { bypassCSP: true });
    const c = await createConsultation(doctor, server, { patient: 'Patient A11y', guests: ['Guest A11y'] });
    await audit(doctor.page, 'workspace');
    await doctor.page.locator(`li.ws-item[data-consultation="${c.id}"] button.primary`).click();
    await doctor.page.waitForURL(/\/join$/);
    await doctor.page.waitForFunction(() => !document.getElementById('join').disabled);
    await audit(doctor.page, 'pre-join (practitioner)');
    await doctor.page.locator('#join').click();
    await doctor.page.locator('#end').waitFor();

    const patient = await openLink(c.links['Patient A11y'], { identity: 'Patient A11y', role: 'patient', token: c.token('Patient A11y'), bypassCSP: true });
    await waitForPrejoin(patient);
    await audit(patient.page, 'pre-join');
    await patient.join();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'waiting');
    await audit(patient.page, 'waiting room');
    const guest = await openLink(c.links['Guest A11y'], { identity: 'Guest A11y', role: 'guest', token: c.token('Guest A11y') });
    await waitForPrejoin(guest);
    await guest.join();
    await guest.page.waitForFunction(() => window.teleconsult.state === 'waiting');

    const patientId = await patient.page.evaluate(() => window.teleconsult.you.id);
    await doctor.page.locator(`#waiting-list li[data-participant="${patientId}"] button.primary`).click();
    await patient.page.waitForFunction(() => window.teleconsult.state === 'in_call');
    await patient.page.locator('#tiles > li').waitFor();

    // Keyboard only: Tab from the page's start reaches the chat box; Enter sends.
    await patient.page.locator('body').focus();
    let reached = false;
    for (let i = 0; i < 40 && !reached; i += 1) {
      await patient.page.keyboard.press('Tab');
      reached = await patient.page.evaluate(() => document.activeElement && document.activeElement.id === 'chat-input');
    }
    assert.ok(reached, 'Tab reaches the chat box');
    await patient.page.keyboard.type('Hello from the keyboard');
    await patient.page.keyboard.press('Enter');
    await doctor.page.locator('#chat .chat-text', { hasText: 'Hello from the keyboard' }).waitFor();
    // Every control of the call toolbar is reachable and shows a focus ring.
    for (const id of ['toggle-mic', 'toggle-camera', 'toggle-devices', 'leave']) {
      await patient.page.locator(`#${id}`).focus();
      const outline = await patient.page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', `${id}: no visible focus`);
    }
    // Space toggles the microphone from the keyboard.
    await patient.page.locator('#toggle-mic').focus();
    await patient.page.keyboard.press('Space');
    assert.equal(await patient.page.locator('#toggle-mic').getAttribute('aria-pressed'), 'true');

    await audit(patient.page, 'in call with chat');
    await audit(doctor.page, 'in call, practitioner (waiting list, notice form, chat)');
  });
});
