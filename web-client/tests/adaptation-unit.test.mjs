// Unit tests (Node, no browser) of the web client's adaptation pieces: the network-quality
// classification, the simulcast layer settings, and when a tile size is worth telling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify, isReduced, Settle, WEAK, BAD } from '../public/network-quality.js';
import { simulcastParameters, SIMULCAST_LAYERS } from '../public/media-session.js';
import { worthTelling } from '../public/video-size.js';

test('network quality: loss and RTT thresholds, a reduced video or a held-back upload is weak', () => {
  assert.equal(classify({}), 'good');
  assert.equal(classify({ loss: 0.01, rttMs: 80 }), 'good');
  assert.equal(classify({ loss: WEAK.loss }), 'weak');
  assert.equal(classify({ rttMs: WEAK.rttMs + 1 }), 'weak');
  assert.equal(classify({ reduced: true }), 'weak');
  assert.equal(classify({ uploadLimited: true }), 'weak');
  assert.equal(classify({ loss: BAD.loss }), 'bad');
  assert.equal(classify({ rttMs: BAD.rttMs, reduced: true }), 'bad');
  assert.equal(classify({ rttMs: null, loss: 0 }), 'good', 'no RTT measured yet');
});

test('a video is reduced when it is below both what was seen and what its tile asked for', () => {
  assert.equal(isReduced(90, 180, 560), true, 'the lowest layer in a large tile');
  assert.equal(isReduced(180, 180, 560), false);
  assert.equal(isReduced(90, 180, 60), false, 'a thumbnail asked for the small layer');
  assert.equal(isReduced(90, 180, undefined), true, 'no size told: against what was seen');
  assert.equal(isReduced(0, 180, 560), false, 'nothing decoded yet');
});

test('simulcast: each offered rid gets its scale and bitrate cap, once', () => {
  const params = { encodings: [{ rid: 'q' }, { rid: 'h' }, { rid: 'f', active: true }] };
  const set = simulcastParameters(params);
  assert.deepEqual(
    set.encodings.map((e) => [e.rid, e.scaleResolutionDownBy, e.maxBitrate]),
    ['q', 'h', 'f'].map((r) => [r, SIMULCAST_LAYERS[r].scaleResolutionDownBy, SIMULCAST_LAYERS[r].maxBitrate]),
  );
  assert.equal(set.encodings[2].active, true, 'other fields kept');
  assert.equal(simulcastParameters(set), null, 'already set: nothing to change');
  assert.equal(simulcastParameters({ encodings: [{}] }), null, 'no simulcast');
  assert.equal(simulcastParameters(null), null);
});

test('tile sizes: the first, a hide, and changes of 15 % or more are told', () => {
  assert.equal(worthTelling(undefined, 300), true);
  assert.equal(worthTelling(300, 320), false);
  assert.equal(worthTelling(300, 360), true);
  assert.equal(worthTelling(300, 0), true);
  assert.equal(worthTelling(0, 0), false);
  assert.equal(worthTelling(0, 200), true);
});

test('a change settles once two samples agree', () => {
  const s = new Settle();
  assert.equal(s.push('weak'), null);
  assert.equal(s.push('weak'), 'weak');
  assert.equal(s.push('bad'), null);
  assert.equal(s.push('weak'), null);
  assert.equal(s.push(true), null);
  assert.equal(s.push(true), true);
});
