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
