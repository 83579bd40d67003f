// Unit tests of app/static/render.js (node --test): how the demo chat shows a body.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { bodyJSON, bodyText } from '../../app/static/render.js';

test('a string body is the chat text', () => {
  assert.equal(bodyText('hi from curl'), 'hi from curl');
  assert.equal(bodyText(''), '');
  assert.equal(bodyJSON('hi'), null);
});

test('the examples\' {"text": ...} body reads as its text', () => {
  assert.equal(bodyText({ text: 'hello' }), 'hello');
  assert.equal(bodyText({ text: 'hi', client: 'py', n: 1 }), 'hi');
  assert.equal(bodyJSON({ text: 'hello' }), '{"text":"hello"}');
});

test('other objects read as key: value, nested values briefly', () => {
  assert.equal(bodyText({ n: 1, user: 'bob' }), 'n: 1, user: bob');
  assert.equal(bodyText({ text: 42 }), 'text: 42');
  assert.equal(bodyText({ tags: ['a', 'b'], pos: { x: 1, y: 2 } }), 'tags: [a, b], pos: {x: 1, y: 2}');
  assert.equal(bodyText({ deep: { a: { b: { c: 1 } } } }), 'deep: {a: {b: {"c":1}}}');
  assert.equal(bodyText({}), '(empty object)');
});

test('lists, numbers, booleans and null are readable too', () => {
  assert.equal(bodyText([1, 'two', [3], { four: 4 }]), '1, two, [3], {four: 4}');
  assert.equal(bodyText([]), '(empty list)');
  assert.equal(bodyText(0), '0');
  assert.equal(bodyText(-17.5), '-17.5');
  assert.equal(bodyText(true), 'true');
  assert.equal(bodyText(null), '(empty)');
  assert.equal(bodyText({ a: null }), 'a: null');
});

test('text is returned as text, never as markup', () => {
  // The page puts it into textContent; nothing here interprets it.
  assert.equal(bodyText({ text: '<b>x</b>' }), '<b>x</b>');
});
