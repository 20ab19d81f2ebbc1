// The chart's reading of the server's buckets: non-finite values are flagged, never dropped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePoint } from '../../crates/studio/assets/chart.js';

test('a plain bucket keeps its numbers', () => {
  assert.deepEqual(normalizePoint([10, 1.5, 2.5, 2, 4]), { x: 10, min: 1.5, max: 2.5, last: 2, count: 4, nonfinite: 0 });
});

test('a bucket with a non-finite count stays a point and is flagged', () => {
  const b = normalizePoint([20, 1, 3, 2, 5, 1]);
  assert.equal(b.nonfinite, 1);
  assert.equal(b.last, 2);
});

test('a bucket of only NaN (nulls) is kept with a flag', () => {
  const b = normalizePoint([30, null, null, null, 1, 1]);
  assert.equal(b.x, 30);
  assert.equal(b.nonfinite, 1);
  assert.equal(b.last, null);
  assert.equal(b.min, null);
});

test('a null last value with finite min/max is flagged even without a count', () => {
  const b = normalizePoint([40, 1, 2, null, 3]);
  assert.equal(b.nonfinite, 1);
  assert.equal(b.min, 1);
  assert.equal(b.max, 2);
});

test('object-shaped points are read too', () => {
  const b = normalizePoint({ x: 5, min: 1, max: 1, last: 1, count: 1 });
  assert.equal(b.nonfinite, 0);
  assert.equal(b.x, 5);
});
