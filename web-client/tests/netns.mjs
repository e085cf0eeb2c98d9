// Network namespaces for the reachability tests: a namespace of our own joined to the host by a
// veth pair on a private /30 (nothing else: no default route, so nothing can leave the machine),
// nft rules inside it to block what a hospital firewall would, and Chromium launched inside it
// (`ip netns exec`, through a wrapper script given to playwright as its executable). Needs root
// (the tests run as root here and in CI). Everything is removed again by `destroy()`, which the
// tests call in `finally`; a namespace left over by a killed run is removed by the next run
// (same name prefix, older pid).

import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, chmodSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, waitFor } from './harness.mjs';

const execFileP = promisify(execFile);
const PREFIX = 'tcnet';
const NETDELAY = path.join(REPO_ROOT, 'target', 'debug', 'teleconsult-netdelay');

async function run(cmd, args, input) {
  if (input === undefined) return execFileP(cmd, args, { timeout: 15_000 });
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 15_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve({ stdout, stderr }),
    );
    child.stdin.end(input);
  });
}

/** Remove namespaces (and their veth) left by runs that no longer exist. */
async function sweepStale() {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0];
    const m = new RegExp(`^${PREFIX}(\\d+)x\\d+$`).exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive) await run('ip', ['netns', 'del', name]).catch(() => {});
  }
}

let counter = 0;

/**
 * A namespace joined to the host by a veth pair: the host side gets `hostIp`, the namespace side
 * `nsIp` (a /30 in 10.213.0.0/16 not already on the host).
 */
export async function makeNetns() {
  if (process.getuid && process.getuid() !== 0) {
    throw new Error('the reachability tests need root (ip netns, nft)');
  }
  await sweepStale();
  counter += 1;
  const name = `${PREFIX}${process.pid}x${counter}`;
  const tag = `${process.pid % 10000}${counter}`;
  const hostIf = `tch${tag}`.slice(0, 15);
  const nsIf = `tcn${tag}`.slice(0, 15);
  const { stdout: addrs } = await run('ip', ['-4', '-o', 'addr', 'show']);
  let subnet = null;
  for (let i = 0; i < 64 && !subnet; i += 1) {
    const a = (process.pid + counter * 7 + i * 13) % 250;
    const b = ((process.pid >> 3) + i * 4) % 63;
    const base = `10.213.${a}.${b * 4}`;
    if (!addrs.includes(`10.213.${a}.${b * 4 + 1}/`)) subnet = [a, b * 4];
  }
  if (!subnet) throw new Error('no free /30 in 10.213.0.0/16');
  const hostIp = `10.213.${subnet[0]}.${subnet[1] + 1}`;
  const nsIp = `10.213.${subnet[0]}.${subnet[1] + 2}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'teleconsult-netns-'));
  const ns = {
    name,
    /** The host's end of the veth pair (where traffic towards the namespace leaves the host). */
    hostIf,
    hostIp,
    nsIp,
    dir,
    async exec(cmd, args, input) {
      return run('ip', ['netns', 'exec', name, cmd, ...args], input);
    },
    /** Load an nft ruleset inside the namespace. */
    async nft(ruleset) {
      return run('ip', ['netns', 'exec', name, 'nft', '-f', '-'], ruleset);
    },
    /** Launch Chromium inside the namespace (extra flags appended). */
    async launchBrowser(extraArgs = []) {
      const wrapper = path.join(dir, 'chromium-in-netns.sh');
      writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${name} ${CHROMIUM} "$@"\n`);
      chmodSync(wrapper, 0o755);
      return chromium.launch({ executablePath: wrapper, args: [...CHROMIUM_ARGS, ...extraArgs], headless: true });
    },
    /**
     * Delay every UDP packet from source port `sport` arriving in the namespace by `ms`: an
     * iptables NFQUEUE rule (this kernel has no netem, nor nft's own `queue`) and the workspace's
     * `teleconsult-netdelay` holding each packet, inside the namespace. Returns `stop()`.
     */
    async delay({ sport, ms, queue = 7 }) {
      if (!existsSync(NETDELAY)) throw new Error(`${NETDELAY} not built: cargo build -p teleconsult-loadtest`);
      const child = spawn('ip', ['netns', 'exec', name, NETDELAY, '--queue', String(queue), '--delay-ms', String(ms)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let exited = null;
      child.stdout.on('data', (d) => {
        out += d.toString();
        if (out.length > 4000) out = out.slice(-2000);
      });
      child.stderr.on('data', (d) => {
        out += d.toString();
      });
      child.on('exit', (code) => {
        exited = code;
      });
      await waitFor(
        () => {
          if (exited !== null) throw new Error(`teleconsult-netdelay exited with ${exited}: ${out}`);
          return out.includes('ready');
        },
        { what: 'the delay step bound to its queue', timeoutMs: 10_000 },
      );
      const rule = ['-p', 'udp', '--sport', String(sport), '-j', 'NFQUEUE', '--queue-num', String(queue)];
      await ns.exec('iptables', ['-I', 'INPUT', ...rule]);
      return {
        /** The delayer's last report line (`delayed N held M`). */
        report: () => out.trim().split('\n').pop(),
        async stop() {
          await ns.exec('iptables', ['-D', 'INPUT', ...rule]).catch(() => {});
          if (exited === null) {
            const done = new Promise((r) => child.once('exit', r));
            child.kill('SIGKILL');
            await done;
          }
        },
      };
    },
    /** Another /30 on the same veth pair (both ends), e.g. to move a client to a new address. */
    async addAddress({ hostIp: h, nsIp: n }) {
      await run('ip', ['addr', 'add', `${h}/30`, 'dev', hostIf]);
      await ns.exec('ip', ['addr', 'add', `${n}/30`, 'dev', nsIf]);
    },
    async destroy() {
      // Deleting the namespace deletes its veth end, and with it the host's.
      await run('ip', ['netns', 'del', name]).catch(() => {});
      await run('ip', ['link', 'del', hostIf]).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await run('ip', ['netns', 'add', name]);
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    await run('ip', ['link', 'set', nsIf, 'netns', name]);
    await run('ip', ['addr', 'add', `${hostIp}/30`, 'dev', hostIf]);
    await run('ip', ['link', 'set', hostIf, 'up']);
    await ns.exec('ip', ['addr', 'add', `${nsIp}/30`, 'dev', nsIf]);
    await ns.exec('ip', ['link', 'set', nsIf, 'up']);
    await ns.exec('ip', ['link', 'set', 'lo', 'up']);
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  return ns;
}

/** A TCP port free on `host` right now (for programs that cannot bind port 0 themselves). */
export function freePort(host) {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * The selected candidate pair of the page's peer connection, with both candidates: from the
 * transport's `selectedCandidatePairId` (or the nominated, succeeded pair).
 */
export function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = window.teleconsult && window.teleconsult.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    const all = new Map();
    stats.forEach((s) => all.set(s.id, s));
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = all.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair) return null;
    const pick = (c) =>
      c && {
        candidateType: c.candidateType,
        protocol: c.protocol,
        address: c.address ?? c.ip,
        port: c.port,
        relayProtocol: c.relayProtocol ?? null,
        tcpType: c.tcpType ?? null,
      };
    return { state: pair.state, local: pick(all.get(pair.localCandidateId)), remote: pick(all.get(pair.remoteCandidateId)) };
  });
}

/** coturn with the shipped config/coturn.conf, adapted to the namespace's addresses. */
export async function startCoturn(ns, { secret }) {
  const tlsPort = await freePort(ns.hostIp);
  const plainPort = await freePort(ns.hostIp);
  const cert = path.join(ns.dir, 'turn-cert.pem');
  const key = path.join(ns.dir, 'turn-key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=turn.test',
    '-keyout', key, '-out', cert,
  ]);
  const log = path.join(ns.dir, 'turn.log');
  const shipped = readFileSync(path.join(REPO_ROOT, 'config', 'coturn.conf'), 'utf8');
  const conf = shipped
    .split('\n')
    .map((line) => {
      if (line.startsWith('listening-ip=') || line.startsWith('relay-ip=')) return line.replace(/=.*/, `=${ns.hostIp}`);
      if (line.startsWith('listening-port=')) return `listening-port=${plainPort}`;
      if (line.startsWith('tls-listening-port=')) return `tls-listening-port=${tlsPort}`;
      if (line.startsWith('cert=')) return `cert=${cert}`;
      if (line.startsWith('pkey=')) return `pkey=${key}`;
      if (line.startsWith('static-auth-secret=')) return `static-auth-secret=${secret}`;
      if (line.startsWith('realm=')) return 'realm=turn.test';
      if (line === 'syslog') return `log-file=${log}`;
      return line;
    })
    .concat([
      // Test only: the media server is on the namespace's private /30, which the shipped
      // configuration rightly denies; allow exactly its address.
      `allowed-peer-ip=${ns.hostIp}`,
      `pidfile=${path.join(ns.dir, 'turn.pid')}`,
    ])
    .join('\n');
  const confPath = path.join(ns.dir, 'coturn.conf');
  writeFileSync(confPath, conf);
  const child = spawn('turnserver', ['-c', confPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = null;
  child.on('exit', (code) => {
    exited = code;
  });
  // Ready when its TLS port accepts connections.
  await waitFor(
    async () => {
      if (exited !== null) throw new Error(`turnserver exited with ${exited}: ${readFileSync(log, 'utf8').slice(-2000)}`);
      return new Promise((resolve) => {
        const s = net.connect(tlsPort, ns.hostIp, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
    },
    { what: 'coturn listening', timeoutMs: 15_000 },
  );
  return {
    tlsPort,
    log,
    async stop() {
      if (child.exitCode === null) {
        const done = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await done;
        clearTimeout(t);
      }
    },
  };
}

