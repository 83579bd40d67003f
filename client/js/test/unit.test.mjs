// Unit tests of streamgate.js under node (node --test), against a
// scripted in-memory WebSocket: the protocol logic the browser test cannot
// force (duplicates, out-of-order ids, refusals, retries) without a browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { StreamgateClient, compareIds, isId, refreshDelay, tokenExpiry } from '../streamgate.js';

// ---- a scripted WebSocket ------------------------------------------------------------

const sockets = [];

class FakeSocket {
  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols ?? null;
    this.readyState = 0;
    this.sent = [];
    this.onmessage = this.onclose = this.onerror = null;
    sockets.push(this);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // server side
  accept(user = this.url.searchParams.get('user') || 'u', instance = 'A') {
    this.readyState = 1;
    this.push({ type: 'welcome', user, instance, protocol: 1 });
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

async function until(predicate, what, timeout = 2000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 2));
  }
}

const last = () => sockets[sockets.length - 1];

function make(options = {}) {
  sockets.length = 0;
  const c = new StreamgateClient({
    url: 'ws://127.0.0.1:1/ws', user: 'alice', WebSocket: FakeSocket, storage: new MemoryStorage(),
    backoffInitial: 10, backoffMax: 40, ...options,
  });
  const seen = { message: [], joined: [], state: [], gap: [], error: [], resumed: [] };
  for (const type of Object.keys(seen)) c.on(type, (d) => seen[type].push(d));
  return { c, seen };
}

async function connected(c, n = 1) {
  await until(() => sockets.length >= n && last().readyState === 0, `socket #${n}`);
  last().accept();
  return last();
}

// ---- ids ---------------------------------------------------------------------------------

test('ids compare numerically as (ms, seq) pairs', () => {
  const table = [
    ['9-0', '10-0', -1], ['10-0', '9-0', 1], ['5-10', '5-9', 1], ['5-0', '5', 0],
    ['0', '0-0', 0], ['18446744073709551615-1', '18446744073709551615-0', 1],
    ['18446744073709551614-9', '18446744073709551615-0', -1], ['007-1', '7-1', 0],
  ];
  for (const [a, b, want] of table) assert.equal(compareIds(a, b), want, `${a} vs ${b}`);
  assert.ok(isId('1-2') && isId('3') && !isId('1-') && !isId('-1') && !isId('a-1') && !isId(5));
  assert.throws(() => compareIds('x', '1-0'), TypeError);
});

// ---- delivery ------------------------------------------------------------------------

test('delivers each message once and in order, resumes after a drop', async () => {
  const { c, seen } = make();
  let ws = await connected(c);
  const joined = c.join('r1');
  await until(() => ws.frames('join').length === 1, 'join frame');
  assert.deepEqual(ws.frames('join')[0], { type: 'join', room: 'r1' });
  ws.push({ type: 'joined', room: 'r1', replayed: 0, recovered: true, last_id: '5-0' });
  assert.equal((await joined).lastId, '5-0');
  for (const id of ['6-0', '6-0', '5-3', '9-0', '10-0', '9-5', '10-0']) {
    ws.push({ type: 'message', room: 'r1', id, from: 'bob', body: id, ts: 1 });
  }
  assert.deepEqual(seen.message.map((m) => m.id), ['6-0', '9-0', '10-0']);
  assert.equal(c.lastId('r1'), '10-0');

  ws.drop(1012, 'restarting');
  assert.equal(c.state, 'reconnecting');
  ws = await connected(c, 2);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'r1', since: '10-0' }]);
  // the replay may repeat what was already delivered: dropped
  for (const id of ['10-0', '11-0', '12-0']) ws.push({ type: 'message', room: 'r1', id, from: 'bob', body: id, ts: 1 });
  ws.push({ type: 'joined', room: 'r1', replayed: 2, recovered: true, last_id: '12-0' });
  ws.push({ type: 'message', room: 'r1', id: '13-0', from: 'bob', body: 'live', ts: 1 });
  assert.deepEqual(seen.message.map((m) => m.id), ['6-0', '9-0', '10-0', '11-0', '12-0', '13-0']);
  assert.deepEqual(seen.message.map((m) => m.replayed), [false, false, false, true, true, false]);
  assert.equal(seen.joined.at(-1).replayed, 2);
  assert.equal(seen.joined.at(-1).rejoin, true);
  assert.deepEqual(seen.resumed.at(-1), { replayed: 2, rooms: { r1: 2 }, reconnect: true });
  assert.deepEqual(seen.state.map((s) => s.state), ['connecting', 'open', 'reconnecting', 'open']);
  c.close();
  assert.equal(c.state, 'closed');
});

test('a quiet room resumes from joined.last_id, also after a reload', async () => {
  const storage = new MemoryStorage();
  let { c } = make({ storage });
  let ws = await connected(c);
  c.join('quiet');
  await until(() => ws.frames('join').length, 'join');
  ws.push({ type: 'joined', room: 'quiet', replayed: 0, recovered: true, last_id: '42-7' });
  assert.equal(storage.getItem('streamgate:last/alice/quiet'), '42-7');
  ws.drop(1006);
  ws = await connected(c, 2);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'quiet', since: '42-7' }]);
  c.close();

  // a new page with the same storage and user
  ({ c } = make({ storage }));
  c.join('quiet').catch(() => {});   // never answered here
  ws = await connected(c);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'quiet', since: '42-7' }]);
  ws.push({ type: 'message', room: 'quiet', id: '50-0', from: 'bob', body: 1, ts: 1 });
  assert.equal(storage.getItem('streamgate:last/alice/quiet'), '50-0');
  // another user's resume points are separate
  c.close();
  ({ c } = make({ storage, user: 'bob' }));
  const unanswered = c.join('quiet');
  ws = await connected(c);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'quiet' }]);
  c.close();
  await assert.rejects(unanswered, (e) => e.code === 'closed');
});

test('explicit since starts over; a gap is reported and the server position adopted', async () => {
  const { c, seen } = make();
  let ws = await connected(c);
  c.join('g');
  await until(() => ws.frames('join').length, 'join');
  ws.push({ type: 'joined', room: 'g', replayed: 0, recovered: true, last_id: '100-0' });
  c.join('g', { since: '0' });
  assert.deepEqual(ws.frames('join').at(-1), { type: 'join', room: 'g', since: '0' });
  ws.push({ type: 'message', room: 'g', id: '1-0', from: 'x', body: 1, ts: 1 });
  // cut off in the middle of the replay: the next join resumes after what arrived
  ws.drop(1006);
  ws = await connected(c, 2);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'g', since: '1-0' }]);
  ws.push({ type: 'message', room: 'g', id: '1-0', from: 'x', body: 1, ts: 1 });
  ws.push({ type: 'message', room: 'g', id: '2-0', from: 'x', body: 2, ts: 1 });
  ws.push({ type: 'joined', room: 'g', replayed: 1, recovered: false, last_id: '2-0' });
  assert.deepEqual(seen.message.map((m) => m.id), ['1-0', '2-0']);
  assert.deepEqual(seen.gap, [{ room: 'g', recovered: false, lastId: '2-0' }]);
  // the server's position wins after a gap, even below ours (a failover erased ids)
  ws.drop(1006);
  ws = await connected(c, 3);
  ws.push({ type: 'joined', room: 'g', replayed: 0, recovered: false, last_id: '1-5' });
  assert.equal(c.lastId('g'), '1-5');
  ws.push({ type: 'message', room: 'g', id: '1-6', from: 'x', body: 3, ts: 1 });
  assert.deepEqual(seen.message.map((m) => m.id), ['1-0', '2-0', '1-6']);
  c.close();
});

test('the epoch from joined is kept with the resume point and sent back with since', async () => {
  const storage = new MemoryStorage();
  let { c, seen } = make({ storage });
  let ws = await connected(c);
  c.join('e');
  await until(() => ws.frames('join').length, 'join');
  ws.push({ type: 'joined', room: 'e', replayed: 0, recovered: true, last_id: '10-0', epoch: 'E1' });
  assert.equal(c.epoch('e'), 'E1');
  assert.equal(seen.joined.at(-1).epoch, 'E1');
  assert.deepEqual(JSON.parse(storage.getItem('streamgate:last/alice/e')), { last: '10-0', epoch: 'E1' });
  ws.push({ type: 'message', room: 'e', id: '11-0', from: 'x', body: 1, ts: 1 });
  ws.drop(1006);
  ws = await connected(c, 2);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'e', since: '11-0', epoch: 'E1' }]);
  // the stream was lost and recreated: the whole new incarnation, a gap, the new epoch
  ws.push({ type: 'message', room: 'e', id: '50-0', from: 'x', body: 2, ts: 1 });
  ws.push({ type: 'joined', room: 'e', replayed: 1, recovered: false, last_id: '50-0', epoch: 'E2' });
  assert.deepEqual(seen.message.map((m) => m.id), ['11-0', '50-0']);
  assert.deepEqual(seen.gap, [{ room: 'e', recovered: false, lastId: '50-0' }]);
  assert.deepEqual(JSON.parse(storage.getItem('streamgate:last/alice/e')), { last: '50-0', epoch: 'E2' });
  c.close();

  // a reload resumes with both
  ({ c } = make({ storage }));
  assert.equal(c.epoch('e'), 'E2');
  c.join('e').catch(() => {});
  ws = await connected(c);
  assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'e', since: '50-0', epoch: 'E2' }]);
  // a room without a stream has no epoch: none is sent afterwards
  ws.push({ type: 'joined', room: 'e', replayed: 0, recovered: false, last_id: '0-0', epoch: null });
  assert.equal(c.epoch('e'), null);
  assert.equal(storage.getItem('streamgate:last/alice/e'), '0-0');
  c.close();
});

test('an explicit since takes the epoch the application kept; "$" sends none', async () => {
  const { c } = make();
  const ws = await connected(c);
  const pending = [c.join('a', { since: '7-0', epoch: 'E9' }), c.join('b', { since: '$', epoch: 'E9' })];
  await until(() => ws.frames('join').length === 2, 'joins');
  assert.deepEqual(ws.frames('join'), [
    { type: 'join', room: 'a', since: '7-0', epoch: 'E9' },
    { type: 'join', room: 'b', since: '$' },
  ]);
  for (const epoch of ['', 'a b', 'x'.repeat(65), 5]) {
    await assert.rejects(c.join('c', { since: '1-0', epoch }), (e) => e.code === 'bad_frame');
  }
  c.close();
  for (const p of pending) await assert.rejects(p, (e) => e.code === 'closed');
});

// ---- publishing ------------------------------------------------------------------------

test('publish is resent with the same client_id after a drop and on unavailable', async () => {
  const { c, seen } = make();
  const p = c.publish('r', { text: 'hi' });   // queued: not connected yet
  let ws = await connected(c);
  const [first] = ws.frames('publish');
  assert.equal(first.room, 'r');
  assert.deepEqual(first.body, { text: 'hi' });
  assert.ok(first.client_id);
  ws.drop(1006);
  ws = await connected(c, 2);
  assert.deepEqual(ws.frames('publish'), [first]);
  ws.push({ type: 'error', code: 'unavailable', reason: 'x', ref: first.client_id });
  await until(() => ws.frames('publish').length === 2, 'resend after unavailable');
  assert.deepEqual(ws.frames('publish')[1], first);
  ws.push({ type: 'published', room: 'r', id: '7-0', client_id: first.client_id, duplicate: false });
  ws.push({ type: 'published', room: 'r', id: '7-0', client_id: first.client_id, duplicate: true });
  assert.equal(await p, '7-0');
  assert.equal(c.pendingCount, 0);
  assert.equal(seen.error[0].retrying, true);

  const d = c.direct('bob', 'psst');
  const b = c.broadcast('all');
  const [df, bf] = ws.sent.slice(-2);
  assert.equal(df.type, 'direct');
  assert.equal(df.to, 'bob');
  assert.equal(bf.type, 'broadcast');
  ws.push({ type: 'error', code: 'forbidden', reason: 'no', ref: bf.client_id });
  ws.push({ type: 'published', room: '@bob', id: '8-0', client_id: df.client_id, duplicate: false });
  assert.equal(await d, '8-0');
  await assert.rejects(b, (e) => e.code === 'forbidden');
  await assert.rejects(c.publish('r', 'x'.repeat(70000)), (e) => e.code === 'too_large');
  await assert.rejects(c.publish('bad room', 'x'), (e) => e.code === 'invalid_room');
  await assert.rejects(c.publish('r', undefined), (e) => e.code === 'bad_frame');
  const pending = c.publish('r', 'left hanging');
  c.close();
  await assert.rejects(pending, (e) => e.code === 'closed');
});

test('acks: explicit ones are sent after reconnecting, auto ones coalesced', async () => {
  const { c } = make({ autoAck: true, autoAckDelay: 20 });
  c.ack('r', '3-0');
  let ws = await connected(c);
  assert.deepEqual(ws.frames('ack'), [{ type: 'ack', room: 'r', id: '3-0' }]);
  c.join('r');
  ws.push({ type: 'joined', room: 'r', replayed: 0, recovered: true, last_id: '3-0' });
  for (const id of ['4-0', '5-0', '6-0']) ws.push({ type: 'message', room: 'r', id, from: 'b', body: 0, ts: 1 });
  await until(() => ws.frames('ack').length === 2, 'auto ack');
  assert.deepEqual(ws.frames('ack')[1], { type: 'ack', room: 'r', id: '6-0' });
  c.close();
});

// ---- refusals ----------------------------------------------------------------------------

test('4401 asks the tokenProvider again; 4403 is fatal', async () => {
  let n = 0;
  const { c, seen } = make({ user: undefined, tokenProvider: async () => `tok${++n}` });
  await until(() => sockets.length === 1, 'socket');
  assert.deepEqual(sockets[0].protocols, ['streamgate.v1', 'bearer.tok1']);
  assert.equal(sockets[0].url.search, '', 'no token in the URL');
  sockets[0].drop(4401, 'expired');
  await until(() => sockets.length === 2, 'second socket');
  assert.deepEqual(sockets[1].protocols, ['streamgate.v1', 'bearer.tok2']);
  sockets[1].accept('carol');
  assert.equal(c.user, 'carol');
  sockets[1].drop(4403, 'origin');
  assert.equal(c.state, 'closed');
  assert.equal(seen.error.at(-1).fatal, true);
  await new Promise((ok) => setTimeout(ok, 60));
  assert.equal(sockets.length, 2, 'no reconnect after 4403');
});

test('4401 without a tokenProvider is fatal; 1013 and 4408 reconnect', async () => {
  let { c, seen } = make();
  await connected(c);
  last().drop(4408, 'too slow');
  await connected(c, 2);
  last().drop(1013, 'full');
  await until(() => sockets.length === 3, 'reconnect after 1013');
  last().drop(4401, 'unauthorized');
  assert.equal(c.state, 'closed');
  assert.equal(seen.error.at(-1).code, 'unauthorized');
});

test('join refused by the server rejects; unavailable is retried', async () => {
  const { c } = make();
  const ws = await connected(c);
  const j = c.join('secret');
  ws.push({ type: 'error', code: 'forbidden', reason: 'no', ref: 'secret' });
  await assert.rejects(j, (e) => e.code === 'forbidden');
  assert.deepEqual(c.rooms, []);
  const k = c.join('busy');
  ws.push({ type: 'error', code: 'unavailable', reason: 'later', ref: 'busy' });
  await until(() => ws.frames('join').filter((f) => f.room === 'busy').length === 2, 'join retry');
  ws.push({ type: 'joined', room: 'busy', replayed: 0, recovered: true, last_id: '1-0' });
  assert.equal((await k).room, 'busy');
  c.close();
});

test('a silent socket is dropped and replaced', async () => {
  const { c } = make({ connectTimeout: 50 });
  await until(() => sockets.length === 1, 'socket');
  // never accepted: the watchdog (1 s tick) gives up and reconnects
  await until(() => sockets.length === 2, 'reconnect after silence', 3000);
  c.close();
});

// ---- token transport and in-band refresh ------------------------------------------------

function jwt(claims) {
  const b64 = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `eyJhbGciOiJIUzI1NiJ9.${b64}.c2ln`;
}

test('tokenTransport query puts the token in the URL instead', async () => {
  const { c } = make({ user: undefined, token: 'tok', tokenTransport: 'query' });
  await until(() => sockets.length === 1, 'socket');
  assert.equal(sockets[0].url.searchParams.get('token'), 'tok');
  assert.equal(sockets[0].protocols, null);
  c.close();
  assert.throws(() => new StreamgateClient({ url: 'ws://h/ws', token: 't', tokenTransport: 'header', WebSocket: FakeSocket }), TypeError);
});

test('token expiry is read from the JWT and the refresh comes before it', () => {
  assert.equal(tokenExpiry(jwt({ sub: 'a', exp: 1700000000 })), 1700000000000);
  for (const bad of [jwt({ sub: 'a' }), jwt({ exp: 'soon' }), 'not-a-jwt', 'a.!!.c', null]) assert.equal(tokenExpiry(bad), null);
  assert.equal(refreshDelay(1000 + 3600000, 1000, 30000), 3570000);
  assert.equal(refreshDelay(1000 + 40000, 1000, 30000), 20000);
  assert.equal(refreshDelay(1000 + 1500, 1000, 30000), 1000);
  assert.equal(refreshDelay(1000 + 500, 1000, 30000), 500);
  assert.equal(refreshDelay(900, 1000, 30000), 0);
});

test('a token about to expire is refreshed in band; a refused one is retried', async () => {
  const tokens = [jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 2 })];
  let asked = 0;
  const { c, seen } = make({
    user: undefined,
    refreshMargin: 30000,
    tokenProvider: async () => { asked++; return tokens[Math.min(asked - 1, tokens.length - 1)]; },
  });
  const refreshed = [];
  c.on('refreshed', (d) => refreshed.push(d));
  tokens.push(jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 }), tokens[0]);
  const ws = await connected(c);
  const join = c.join('r1');
  await until(() => ws.frames('join').length === 1, 'join frame');
  ws.push({ type: 'joined', room: 'r1', replayed: 0, recovered: true, last_id: '1-0' });
  await join;
  // Half-way through the 2 s token, the provider is asked and the new token sent in band.
  await until(() => ws.frames('refresh').length === 1, 'refresh frame', 3000);
  assert.equal(ws.frames('refresh')[0].token, tokens[1]);
  ws.push({ type: 'error', code: 'unauthorized', reason: 'invalid token', ref: null });
  assert.equal(seen.error.at(-1).retrying, true);
  assert.equal(refreshed.length, 0);
  // Retried (the provider's next token), then accepted: same socket, no rejoin.
  await until(() => ws.frames('refresh').length === 2, 'second refresh frame', 4000);
  ws.push({ type: 'refreshed', exp: 4102444800 });
  assert.deepEqual(refreshed, [{ exp: 4102444800 }]);
  assert.equal(sockets.length, 1);
  assert.equal(ws.frames('join').length, 1);
  assert.deepEqual(seen.state.map((s) => s.state), ['connecting', 'open']);
  c.close();
});

// ---- presence and history over HTTP -------------------------------------------------------

test('presence, members and history call the HTTP routes with the identity', async () => {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: new URL(url), headers: init.headers });
    const u = new URL(url);
    if (u.pathname.endsWith('/presence')) return Response.json({ users: ['alice', 'bob'] });
    if (u.pathname.endsWith('/members')) return Response.json({ members: ['alice'] });
    if (u.pathname.endsWith('/rooms/forbidden/messages')) return Response.json({ error: 'forbidden', reason: 'no' }, { status: 403 });
    return Response.json({ messages: [{ id: '2-0', from: 'bob', body: 'b', ts: 2 }], next: null, prev: '2-0' });
  };
  const { c } = make({ url: 'wss://chat.example.com/app/ws', autoConnect: false, fetch });
  assert.deepEqual(await c.presence(), ['alice', 'bob']);
  assert.equal(calls[0].url.href, 'https://chat.example.com/app/presence?user=alice');
  assert.deepEqual(await c.members('@all'), ['alice']);
  assert.equal(calls[1].url.pathname, '/app/rooms/%40all/members');
  const page = await c.history('lobby', { before: '$', limit: 1 });
  assert.deepEqual(page, { messages: [{ id: '2-0', from: 'bob', body: 'b', ts: 2 }], next: null, prev: '2-0' });
  assert.equal(calls[2].url.search, '?limit=1&before=%24&user=alice');
  await assert.rejects(c.history('forbidden'), (e) => e.code === 'forbidden');
  await assert.rejects(c.history('lobby', { after: '1-0', before: '$' }), TypeError);

  const t = make({ user: undefined, token: 'tok', url: 'ws://h:1/ws', autoConnect: false, fetch }).c;
  await t.presence();
  assert.equal(calls.at(-1).headers.Authorization, 'Bearer tok');
  assert.equal(calls.at(-1).url.search, '');
});
