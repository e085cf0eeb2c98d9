// The reconnect ladder of web-client/public/reconnect.js (LiveKit's): 0, 0.3, 1.2, 2.7, 4.8 s,
// then every 7 s. A pure function: imported as is, no browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { retryDelay, RETRY_LADDER_MS, RETRY_EVERY_MS } from '../public/reconnect.js';

test('the reconnect ladder retries at 0, 0.3, 1.2, 2.7, 4.8 s, then every 7 s', () => {
  assert.deepEqual(RETRY_LADDER_MS, [0, 300, 1200, 2700, 4800]);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 50].map(retryDelay), [0, 300, 1200, 2700, 4800, 7000, 7000, 7000]);
  assert.equal(RETRY_EVERY_MS, 7000);
});

test('the signalling URL names the consultation; only a redirect to its own path is followed', async () => {
  const { signalingUrl, redirectTarget, REDIRECT_CLOSE } = await import('../public/reconnect.js');
  assert.equal(REDIRECT_CLOSE, 4302);
  assert.equal(signalingUrl({ protocol: 'https:', host: 'consult.example.org' }, 'c 1'), 'wss://consult.example.org/ws/c%201');
  assert.equal(signalingUrl({ protocol: 'http:', host: '127.0.0.1:8080' }, 'c1'), 'ws://127.0.0.1:8080/ws/c1');
  assert.equal(redirectTarget('wss://n2.example.org/ws/c1', 'c1'), 'wss://n2.example.org/ws/c1');
  assert.equal(redirectTarget('ws://127.0.0.1:8082/ws/c1', 'c1', 'http:'), 'ws://127.0.0.1:8082/ws/c1');
  assert.equal(redirectTarget('ws://n2.example.org/ws/c1', 'c1', 'https:'), null, 'no downgrade from https');
  assert.equal(redirectTarget('wss://n2.example.org/ws/c2', 'c1'), null, 'another consultation');
  assert.equal(redirectTarget('wss://n2.example.org/ws/c1?token=x', 'c1'), null, 'no query');
  assert.equal(redirectTarget('wss://u:p@n2.example.org/ws/c1', 'c1'), null, 'no credentials');
  assert.equal(redirectTarget('https://n2.example.org/ws/c1', 'c1'), null, 'not a WebSocket');
  assert.equal(redirectTarget('not a url', 'c1'), null);
});
