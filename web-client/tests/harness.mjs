// Test harness for the browser end-to-end tests: starts the real `teleconsult` binary on loopback
// ports it picks itself (port 0, read back from its start-up line), mints join tokens with its
// CLI, and drives headless Chromium (Debian's /usr/bin/chromium; playwright-core never downloads
// a browser) with a fake camera and microphone. Waits are on conditions, with deadlines.

import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const execFileP = promisify(execFile);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.TELECONSULT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'teleconsult');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const RESULTS_DIR = path.join(REPO_ROOT, 'web-client', 'test-results');

export const CHROMIUM_ARGS = [
  '--use-fake-ui-for-media-stream',
  // Three fake cameras (Chromium's second is a Y16 depth camera that WebRTC cannot encode; the
  // third, MJPEG, is a camera like any other), so a device switch can be tested.
  '--use-fake-device-for-media-stream=device-count=3',
  // getDisplayMedia picks the (fake) screen without a dialog.
  '--auto-select-desktop-capture-source=Entire screen',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  // Remote audio starts without a click on every page (the Join click counts too, but a
  // reconnection or a practitioner's page must not depend on it).
  '--autoplay-policy=no-user-gesture-required',
];

/** The development signing secret (signaling/src/config.rs); used only to craft bad tokens. */
export const DEV_SIGNING_SECRET = 'teleconsult-development-secret-do-not-use-in-production';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `probe` (sync or async) every `intervalMs` until it returns a truthy value, which is
 * returned; throws naming `what` (and the last value seen) after `timeoutMs`.
 */
export async function waitFor(probe, { what, timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`${what || 'condition'}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Wait until the wall clock has passed `when` (ms since the epoch): for rules defined by time
 * itself (billable seconds), never as a stand-in for an event.
 */
export async function wallClockPast(when) {
  await waitFor(() => Date.now() >= when, { what: 'the wall clock', timeoutMs: Math.max(0, when - Date.now()) + 5_000, intervalMs: 20 });
}

/** The start-up line naming the bound addresses (server/src/server.rs). */
const LISTENING = /listening \(HTTPS? on ([0-9.]+):(\d+), media UDP on ([0-9.]+):(\d+)\)/;

let uniq = 0;
/** A consultation id unique to this process. */
export function consultationId(prefix = 'c') {
  uniq += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${uniq}`;
}

/**
 * Start `teleconsult serve --dev` on loopback with port 0 for HTTP and media (the server binds
 * free ones and keeps them: no probe-then-bind race), read the bound ports from its start-up
 * line, and wait for `GET /healthz`.
 * @returns {Promise<Server>}
 */
export async function startServer({ extraEnv = {}, timeoutMs = 30_000, host = '127.0.0.1' } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(
      `server binary not found at ${BIN}: build it with \`cargo build -p teleconsult\` or set TELECONSULT_BIN`,
    );
  }
  const env = {
    ...process.env,
    // The start-up line is logged at info, whatever else the caller asks for.
    RUST_LOG: process.env.RUST_LOG ? `${process.env.RUST_LOG},teleconsult::server=info` : 'info',
    TELECONSULT_SERVER__PORT: '0',
    TELECONSULT_SERVER__BIND: host,
    TELECONSULT_MEDIA__UDP_PORT: '0',
    TELECONSULT_MEDIA__BIND: host,
    // ICE-TCP on a free port too (the development default, 40000, is for one server per host).
    TELECONSULT_MEDIA__TCP_PORT: '0',
    TELECONSULT_METRICS__PORT: '0',
    // A store of its own, shared with the CLI that mints its links (same env).
    TELECONSULT_STORAGE__DATA_DIR: mkdtempSync(path.join(os.tmpdir(), 'teleconsult-browser-')),
    ...extraEnv,
  };
  const child = spawn(BIN, ['serve', '--dev'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  let listening = null;
  let pending = '';
  const keep = (chunk) => {
    const text = chunk.toString();
    log.push(text);
    if (log.length > 2000) log.splice(0, log.length - 2000);
    if (!listening) {
      pending += text;
      const m = LISTENING.exec(pending);
      if (m) listening = { port: Number(m[2]), udpPort: Number(m[4]) };
      else pending = pending.slice(-500);
    }
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const logText = () => log.join('');
  const stopChild = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await done;
    }
  };

  const deadline = Date.now() + timeoutMs;
  const ready = async () => {
    if (exited) throw new Error(`teleconsult exited early (${JSON.stringify(exited)}):\n${logText()}`);
    if (!listening) return false;
    try {
      return (await fetch(`http://${host}:${listening.port}/healthz`)).ok;
    } catch {
      return false; // not serving yet
    }
  };
  try {
    await waitFor(ready, { what: 'teleconsult listening and answering /healthz', timeoutMs: Math.max(0, deadline - Date.now()) });
  } catch (err) {
    await stopChild();
    throw new Error(`${err.message}\n${logText()}`);
  }
  return new Server({ child, port: listening.port, udpPort: listening.udpPort, env, log: logText, host });
}

export class Server {
  constructor({ child, port, udpPort, env, log, host = '127.0.0.1' }) {
    this.child = child;
    this.port = port;
    this.udpPort = udpPort;
    this.env = env;
    this.logText = log;
    this.base = `http://${host}:${port}`;
  }

  /**
   * A join link's token from the server's CLI: `teleconsult invite` for a patient or guest
   * (an invitation labelled `identity`, created in the server's own store), the pre-accounts
   * `teleconsult token` for a practitioner. Returns the raw token.
   */
  async mintToken({ consultation, identity, role }) {
    const args =
      role === 'practitioner'
        ? ['token', '--dev', '--consultation', consultation, '--identity', identity, '--role', role]
        : ['invite', '--dev', '--consultation', consultation, '--label', identity, '--role', role];
    const { stdout } = await execFileP(BIN, args, { env: this.env, timeout: 15_000 });
    const m = /#token=([A-Za-z0-9_\-.]+)/.exec(stdout);
    if (!m) throw new Error(`\`teleconsult ${args[0]}\` printed no link containing #token=`);
    return m[1];
  }

  /** The join link on our port (the CLI's link may name another host or port). */
  joinUrl(token) {
    return `${this.base}/join#token=${token}`;
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const done = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await done;
    clearTimeout(t);
  }
}

/** Launch Debian's Chromium. */
export function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: run scripts/install-test-deps`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/**
 * One participant: its own browser context (cookies, storage, devices) and page.
 */
export class Participant {
  constructor({ context, page, identity, role, token, label }) {
    this.context = context;
    this.page = page;
    this.identity = identity;
    this.role = role;
    this.token = token;
    this.label = label;
    this.console = [];
    page.on('console', (msg) => this.console.push(`[${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (err) => this.console.push(`[pageerror] ${err.message}`));
    // "Remove …?" and "End the consultation for everyone?" are confirmed.
    page.on('dialog', (d) => d.accept());
    // The signalling messages the page received (parsed), for tests that wait on one.
    this.received = [];
    this.messageWaiters = [];
    page.on('websocket', (ws) => {
      ws.on('framereceived', (frame) => {
        let msg;
        try {
          msg = JSON.parse(typeof frame.payload === 'string' ? frame.payload : frame.payload.toString());
        } catch {
          return;
        }
        this.received.push(msg);
        for (const w of this.messageWaiters.splice(0)) {
          if (w.match(msg)) w.resolve(msg);
          else this.messageWaiters.push(w);
        }
      });
    });
  }

  /** The first signalling message the page received (so far, or from now on) for which `match(msg)` holds. */
  waitForMessage(match, timeoutMs = 30_000) {
    const seen = this.received.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve };
      this.messageWaiters.push(waiter);
      setTimeout(() => {
        const i = this.messageWaiters.indexOf(waiter);
        if (i >= 0) {
          this.messageWaiters.splice(i, 1);
          reject(new Error(`${this.label}: no signalling message matched within ${timeoutMs} ms`));
        }
      }, timeoutMs).unref();
    });
  }

  joinButton() {
    return this.page.getByRole('button', { name: 'Join', exact: true });
  }

  async join() {
    await this.joinButton().click();
  }

  /** Everything the page logged: the token must never appear in it. */
  consoleText() {
    return this.console.join('\n');
  }
}

/**
 * Mint a token and open the join page in a fresh context; waits for the pre-join screen.
 */
export async function openParticipant(browser, server, { consultation, identity, role, viewport, locale, bypassCSP }) {
  const token = await server.mintToken({ consultation, identity, role });
  return openLink(browser, server.joinUrl(token), { identity, role, token, viewport, locale, bypassCSP });
}

export async function openLink(
  browser,
  url,
  { identity = '', role = '', token = '', viewport = { width: 1024, height: 768 }, locale, bypassCSP = false } = {},
) {
  // `bypassCSP`: only for the accessibility audit, which injects axe-core into the page.
  const context = await browser.newContext({ viewport, bypassCSP, ...(locale ? { locale } : {}) });
  const origin = new URL(url).origin;
  await context.grantPermissions(['camera', 'microphone'], { origin });
  const page = await context.newPage();
  const p = new Participant({ context, page, identity, role, token, label: identity || 'anonymous' });
  await page.goto(url);
  return p;
}

/** Wait until the Join button is enabled (the camera preview has started or failed). */
export async function waitForPrejoin(p) {
  await p.joinButton().waitFor({ state: 'visible' }).catch(async (err) => {
    // What the page shows instead (an error panel, a blank page), so a failure says why.
    const shown = await p.page.evaluate(() => document.body?.innerText ?? '(no body)').catch((e) => `(page gone: ${e.message})`);
    throw new Error(`${err.message}\n${p.label}'s page at ${p.page.url().split('#')[0]} shows:\n${shown.slice(0, 800)}`);
  });
  await p.page.waitForFunction(() => {
    const b = document.getElementById('join');
    return b && !b.disabled;
  });
}

/** The practitioner admits `name` from the "Waiting room" region. */
export async function admit(practitioner, name) {
  const region = practitioner.page.getByRole('region', { name: 'Waiting room' });
  await region.getByRole('button', { name: `Admit ${name}`, exact: true }).click();
}

/** Inbound RTP stats of the page's current peer connection. */
export function inboundStats(page) {
  return page.evaluate(async () => {
    const pc = window.teleconsult && window.teleconsult.pc;
    if (!pc) return [];
    const report = await pc.getStats();
    const out = [];
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out.push({
          id: s.id,
          kind: s.kind,
          ssrc: s.ssrc,
          mid: s.mid ?? null,
          trackIdentifier: s.trackIdentifier ?? null,
          packetsReceived: s.packetsReceived ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
        });
      }
    });
    return out;
  });
}

/**
 * Wait until the page decodes `videos` remote videos (framesDecoded growing since a first sample
 * where they all decode) and receives `audios` remote audio streams (packetsReceived > 0).
 * Throws with the last stats seen when the deadline passes.
 */
export async function waitForRemoteMedia(p, { videos, audios = videos, timeoutMs = 30_000 }) {
  const deadline = Date.now() + timeoutMs;
  let first = null;
  let last = [];
  while (Date.now() < deadline) {
    const now = await inboundStats(p.page);
    last = now;
    const decoding = now.filter((s) => s.kind === 'video' && s.framesDecoded > 0);
    const hearing = now.filter((s) => s.kind === 'audio' && s.packetsReceived > 0);
    if (decoding.length >= videos && hearing.length >= audios) {
      if (!first) {
        first = now;
      } else {
        const growing = now.filter((s) => {
          if (s.kind !== 'video') return false;
          const before = first.find((x) => x.id === s.id);
          return before && s.framesDecoded > before.framesDecoded;
        });
        if (growing.length >= videos) return { stats: now, growingVideos: growing, audio: hearing };
      }
    }
    await sleep(200);
  }
  throw new Error(
    `${p.label}: expected ${videos} decoding remote videos and ${audios} remote audio streams ` +
      `within ${timeoutMs} ms; last inbound-rtp stats: ${JSON.stringify(last)}`,
  );
}

/** The publisher's video layers now: rid → { frameHeight, framesEncoded }. */
export function outboundLayers(page) {
  return page.evaluate(async () => {
    const pc = window.teleconsult.pc;
    const out = {};
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) {
        out[s.rid] = { frameHeight: s.frameHeight ?? 0, framesEncoded: s.framesEncoded ?? 0 };
      }
    });
    return out;
  });
}

/** The publisher's simulcast layers once at least two are sent: rid → { frameHeight, framesEncoded }. */
export function waitForLayers(page) {
  return waitFor(
    async () => {
      const l = await outboundLayers(page);
      const sending = Object.entries(l).filter(([, v]) => v.framesEncoded > 0 && v.frameHeight > 0);
      return sending.length >= 2 ? Object.fromEntries(sending) : null;
    },
    { what: 'the practitioner sends at least two simulcast layers', timeoutMs: 20_000 },
  );
}

export async function remoteVideo(page) {
  const stats = await inboundStats(page);
  return stats.find((s) => s.kind === 'video' && s.framesDecoded > 0) || null;
}

/**
 * Make the patient's video of the practitioner `height` CSS pixels high, taken out of the
 * layout (fixed) so the call layout's own sizing rules do not interfere.
 */
export function sizeTile(page, height) {
  return page.evaluate((h) => {
    const video = document.querySelector('#tiles video');
    const set = {
      position: 'fixed',
      top: '0px',
      left: '0px',
      'min-height': '0px',
      'min-width': '0px',
      'max-height': 'none',
      'max-width': 'none',
      height: `${h}px`,
      width: `${Math.round((h * 16) / 9)}px`,
      'z-index': '10',
    };
    for (const [k, v] of Object.entries(set)) video.style.setProperty(k, v, 'important');
    return video.getBoundingClientRect().height;
  }, height);
}

/** Remote tiles on a page (one `li` per remote participant). */
export function tiles(p) {
  return p.page.locator('#tiles > li');
}

/** The heading of the page's current screen. */
export function visibleHeading(p) {
  return p.page.locator('section.screen:not([hidden]) h1');
}

/**
 * Run `fn` with a browser and a server; on failure, save screenshots, page consoles and the
 * server log under web-client/test-results/<name>/ before rethrowing. Always cleans up.
 */
export async function withCall(name, fn) {
  const server = await startServer();
  const browser = await launchBrowser();
  const participants = [];
  const ctx = {
    server,
    browser,
    participants,
    async open(opts) {
      const p = await openParticipant(browser, server, opts);
      participants.push(p);
      return p;
    },
    async openLink(url, opts) {
      const p = await openLink(browser, url, opts);
      participants.push(p);
      return p;
    },
  };
  try {
    await fn(ctx);
    for (const p of participants) {
      if (p.token && p.consoleText().includes(p.token)) {
        throw new Error(`${p.label}: the join token appeared in the browser console`);
      }
    }
  } catch (err) {
    await saveDiagnostics(name, ctx).catch(() => {});
    throw err;
  } finally {
    await browser.close().catch(() => {});
    await server.stop().catch(() => {});
  }
}

async function saveDiagnostics(name, { server, participants }) {
  const dir = path.join(RESULTS_DIR, name.replace(/[^A-Za-z0-9_-]+/g, '_'));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'server.log'), redact(server.logText(), participants));
  let i = 0;
  for (const p of participants) {
    i += 1;
    const base = path.join(dir, `${i}-${p.label.replace(/[^A-Za-z0-9_-]+/g, '_')}`);
    writeFileSync(`${base}.console.txt`, redact(p.consoleText(), participants));
    await p.page.screenshot({ path: `${base}.png`, fullPage: true }).catch(() => {});
    const stats = await inboundStats(p.page).catch(() => []);
    writeFileSync(`${base}.stats.json`, JSON.stringify(stats, null, 2));
  }
  process.stderr.write(`diagnostics saved in ${dir}\n`);
}

function redact(text, participants) {
  let out = text;
  for (const p of participants) if (p.token) out = out.split(p.token).join('<token>');
  return out;
}

/**
 * A token signed with the development secret, with claims of our choosing (for error paths):
 * an invitation link when `claims.v` is 2 (kid `k1`, the development key id).
 */
export function craftToken(claims, secret = DEV_SIGNING_SECRET) {
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

// Printed by `serve --dev` (accounts/src/service.rs: DEMO_EMAIL, DEMO_PASSWORD).
export const DEMO_EMAIL = 'practitioner@demo.teleconsult.test';
export const DEMO_PASSWORD = 'demo-practitioner-password';

/**
 * The demo practitioner in a browser context of their own, signed in at /login and on the
 * loaded workspace. Returns a participant-like object (pushed to `participants` so failures
 * save its screenshot and console). Dialogs (confirmations) are accepted.
 */
export async function signInPractitioner(
  { server, browser, participants },
  { viewport = { width: 1280, height: 800 }, locale, bypassCSP = false } = {},
) {
  const context = await browser.newContext({ viewport, bypassCSP, ...(locale ? { locale } : {}) });
  await context.grantPermissions(['camera', 'microphone'], { origin: server.base });
  const page = await context.newPage();
  const doctor = { context, page, label: 'practitioner', token: '', console: [] };
  doctor.consoleText = () => doctor.console.join('\n');
  page.on('console', (m) => doctor.console.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => doctor.console.push(`[pageerror] ${e.message}`));
  page.on('dialog', (d) => d.accept());
  participants.push(doctor);
  await page.goto(`${server.base}/login`);
  await page.locator('#email').fill(DEMO_EMAIL);
  await page.locator('#password').fill(DEMO_PASSWORD);
  await page.locator('form button[type="submit"]').click();
  await page.waitForURL(/\/workspace$/);
  await page.waitForFunction(() => document.body.dataset.loaded === 'true');
  return doctor;
}

/**
 * Create a consultation from the workspace (patient label, optional guests) and return the
 * join links, by label.
 */
export async function createConsultation(doctor, server, { patient, guests = [] }) {
  const page = doctor.page;
  await page.locator('#patient-label').fill(patient);
  for (const [i, g] of guests.entries()) {
    await page.locator('#add-guest').click();
    await page.locator('#guests input').nth(i).fill(g);
  }
  await page.locator('#create-submit').click();
  const links = {};
  for (const [role, label] of [['patient', patient], ...guests.map((g) => ['guest', g])]) {
    const field = page.locator(`li.ws-item input.ws-link[data-role="${role}"][data-label="${label}"]`).first();
    await field.waitFor();
    links[label] = await field.inputValue();
  }
  const id = await page.locator('li.ws-item').filter({ hasText: patient }).first().getAttribute('data-consultation');
  return { id, links, token: (label) => links[label].split('#token=')[1] };
}

/** axe-core's audit of the page as it is now: the violations of impact `serious` or `critical`. */
export async function seriousA11yViolations(page) {
  await page.addScriptTag({ path: path.join(REPO_ROOT, 'web-client', 'node_modules', 'axe-core', 'axe.min.js') });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    // The audit ran (rules passed too), or an empty list would prove nothing.
    if (r.testEngine.name !== 'axe-core' || r.passes.length < 5) throw new Error(`axe did not run: ${r.passes.length} rules passed`);
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
    }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}
