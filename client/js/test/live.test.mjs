// The client against a real streamgate instance (node --test).
//
//   STREAMGATE_URL=ws://127.0.0.1:8000/ws node --test test/
//
// The instance must run with AUTH_MODE=none. Skipped without STREAMGATE_URL,
// and without a global WebSocket (Node >= 22; Node 20 with
// --experimental-websocket). The server repository's tests start a
// redis-server and an instance and run this file against them
// (tests/browser/test_client_unit.py).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { StreamgateClient, compareIds } from 'streamgate-client';

const URL_ = process.env.STREAMGATE_URL;
const skip = !URL_ ? 'STREAMGATE_URL is not set (a running instance with AUTH_MODE=none)'
  : typeof globalThis.WebSocket !== 'function' ? 'no global WebSocket (Node >= 22, or --experimental-websocket)'
    : false;
const DEADLINE_MS = Number(process.env.STREAMGATE_TEST_DEADLINE_MS || 15000);

const unique = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/** A Web Storage stand-in: resume points survive a client, as across page loads. */
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => { items.set(k, String(v)); },
    removeItem: (k) => { items.delete(k); },
  };
}

/** Resolves once `predicate()` is true, checked on every event of `client`; rejects after the deadline. */
function until(client, predicate, what) {
  return new Promise((resolve, reject) => {
    const types = ['message', 'joined', 'state', 'error'];
    const check = () => {
      if (!predicate()) return;
      done();
      resolve();
    };
    const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${what}`)); }, DEADLINE_MS);
    const offs = types.map((t) => client.on(t, check));
    function done() { clearTimeout(timer); offs.forEach((off) => off()); }
    check();
  });
}

function open(options) {
  return new StreamgateClient({ url: URL_, storage: null, backoffInitial: 100, ...options });
}

test('messages published by one client reach another once, in order, with the ids publish resolved', { skip }, async () => {
  const room = unique('js-live');
  const alice = open({ user: unique('alice') });
  const bob = open({ user: unique('bob') });
  const got = [];
  alice.on('message', (m) => got.push(m));
  try {
    const joined = await alice.join(room, { since: '$' });
    assert.equal(joined.room, room);
    assert.equal(joined.recovered, true);

    const sent = [];
    for (let n = 0; n < 20; n++) sent.push(await bob.publish(room, { n, text: `hello ${n}` }));
    await until(alice, () => got.length >= sent.length, `${sent.length} messages`);

    assert.deepEqual(got.map((m) => m.id), sent);
    assert.deepEqual(got.map((m) => m.body.n), [...sent.keys()]);
    assert.ok(got.every((m) => m.room === room && m.from === bob.user && m.replayed === false));
    for (let i = 1; i < sent.length; i++) assert.equal(compareIds(sent[i - 1], sent[i]), -1);
    assert.equal(alice.lastId(room), sent.at(-1));
  } finally {
    alice.close();
    bob.close();
  }
});

test('a new client with the same storage gets exactly the messages it missed', { skip }, async () => {
  const room = unique('js-resume');
  const user = unique('carol');
  const storage = memoryStorage();
  const writer = open({ user: unique('dave') });
  const first = open({ user, storage });
  let second = null;
  try {
    const seen = [];
    first.on('message', (m) => seen.push(m.id));
    await first.join(room, { since: '$' });
    const before = [await writer.publish(room, 'one'), await writer.publish(room, 'two')];
    await until(first, () => seen.length >= 2, 'the first two messages');
    assert.deepEqual(seen, before);
    first.close();

    const missed = [];
    for (let n = 0; n < 5; n++) missed.push(await writer.publish(room, `missed ${n}`));

    second = open({ user, storage });
    const got = [];
    second.on('message', (m) => got.push(m));
    const joined = await second.join(room); // from the stored resume point
    assert.equal(joined.recovered, true);
    await until(second, () => got.length >= missed.length, `${missed.length} missed messages`);
    const live = await writer.publish(room, 'live');
    await until(second, () => got.length >= missed.length + 1, 'the live message');

    assert.deepEqual(got.map((m) => m.id), [...missed, live]); // nothing twice, nothing before the resume point
    assert.ok(got.slice(0, missed.length).every((m) => m.replayed === true));
    assert.equal(got.at(-1).replayed, false);
  } finally {
    first.close();
    second?.close();
    writer.close();
  }
});

test('a refused join rejects with the server error and the client stays usable', { skip }, async () => {
  const room = unique('js-refused');
  const client = open({ user: unique('erin') });
  try {
    // Another user's inbox: the server answers forbidden.
    await assert.rejects(client.join(`@${unique('frank')}`), (err) => err.code === 'forbidden');
    await client.join(room, { since: '$' });
    const id = await client.publish(room, 'still fine');
    assert.match(id, /^\d+-\d+$/);
    assert.equal(client.state, 'open');
  } finally {
    client.close();
  }
});
