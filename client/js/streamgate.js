// streamgate.js: a dependency-free browser client for the streamgate wire protocol (v1).
//
//   import { StreamgateClient } from '/static/streamgate.js';
//   const c = new StreamgateClient({ user: 'alice' });          // or { token } / { tokenProvider }
//
// A token goes in Sec-WebSocket-Protocol ("bearer.<token>", next to
// "streamgate.v1"), never in the URL, unless tokenTransport: 'query'. With a
// tokenProvider, a token is refreshed in band before it expires (a
// `refresh` frame): the connection and its rooms stay.
//   c.addEventListener('message', (e) => show(e.detail));
//   await c.join('lobby');
//   const id = await c.publish('lobby', 'hello');
//
// What it guarantees to the application, per joined room:
// - every message is delivered once, in stream-id order: ids are compared
//   numerically as (ms, seq) pairs and anything not newer than the last
//   delivered id is dropped;
// - across reconnects (to any instance) and page reloads, it resumes from the
//   last delivered id, kept in localStorage under the user and the room; for a
//   room where nothing arrived yet, from the position the server reported in
//   `joined.last_id`; with the id it keeps the room stream's epoch from
//   `joined.epoch` and sends it back, so that a room whose stream was lost and
//   recreated (ids alone cannot show it) is reported as a gap;
// - a publish resolves with the message id exactly once; it is resent with the
//   same client_id after a reconnect or an `unavailable` answer, so the server
//   stores it at most once.
// When the server says messages were lost before they could be replayed
// (`recovered: false`: trimmed, erased by a failover, or the stream lost and
// recreated), a `gap` event tells the application.

const ROOM_RE = /^(?:[A-Za-z0-9_.:-]{1,128}|@all|@[A-Za-z0-9_.:-]{1,64})$/;
const USER_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const ID_RE = /^(\d{1,20})(?:-(\d{1,20}))?$/;
const EPOCH_RE = /^[\x21-\x7e]{1,64}$/;

const DEFAULTS = Object.freeze({
  path: '/ws',
  storagePrefix: 'streamgate:last/',
  autoAck: false,
  autoAckDelay: 1000,
  backoffInitial: 500,
  backoffMax: 30000,
  stableAfter: 5000,
  connectTimeout: 10000,
  pingInterval: 20000,
  pongTimeout: 10000,
  maxFrameBytes: 65536,
  publishRetries: 8,
  maxAuthFailures: 3,
  tokenTransport: 'subprotocol',
  refreshMargin: 30000,
  httpTimeout: 10000,
});

const SUBPROTOCOL = 'streamgate.v1';
const TOKEN_PREFIX = 'bearer.';
// Never refresh more often than this, whatever the token says.
const MIN_REFRESH_DELAY = 1000;

// Close codes that end the client for good (no reconnect).
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_ORIGIN = 4403;
// Local pseudo close code: the socket went silent and was dropped by us.
const CLOSE_SILENT = 4000;

// ---- stream ids ---------------------------------------------------------------

/** True when `id` is a stream id: "ms-seq" or a bare "ms" (meaning "ms-0"). */
export function isId(id) {
  return typeof id === 'string' && ID_RE.test(id);
}

function cmpDigits(a, b) {
  a = a.replace(/^0+(?=\d)/, '');
  b = b.replace(/^0+(?=\d)/, '');
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a === b ? 0 : a < b ? -1 : 1;
}

/**
 * Compare two stream ids numerically, as (ms, seq) pairs: -1, 0 or 1.
 * Never as text: "9-0" < "10-0". Digit strings are compared by length, then
 * lexically, so 20-digit (64-bit) parts are exact without BigInt.
 */
export function compareIds(a, b) {
  const ma = ID_RE.exec(a);
  const mb = ID_RE.exec(b);
  if (!ma || !mb) throw new TypeError(`not a stream id: ${ma ? b : a}`);
  return cmpDigits(ma[1], mb[1]) || cmpDigits(ma[2] || '0', mb[2] || '0');
}

// ---- helpers ------------------------------------------------------------------

/** An error answered by the server (`code`, `reason`, `ref`) or raised locally. */
export class StreamgateError extends Error {
  constructor(code, reason, ref = null) {
    super(`${code}: ${reason}`);
    this.name = 'StreamgateError';
    this.code = code;
    this.reason = reason;
    this.ref = ref;
  }
}

function newClientId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();   // secure contexts only
  if (c && typeof c.getRandomValues === 'function') {
    return Array.from(c.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

/** The `exp` claim of a JWT in ms since the epoch (read, not verified), or null. */
export function tokenExpiry(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return claims && typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Ms until a token expiring at `expiresAt` (ms) is refreshed: `margin` before, at most half-way. */
export function refreshDelay(expiresAt, now, margin) {
  const left = expiresAt - now;
  if (left <= 0) return 0;
  return Math.max(Math.min(left, MIN_REFRESH_DELAY), left - Math.min(margin, left / 2));
}

function makeEvent(type, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(type, { detail });
  const ev = new Event(type);
  Object.defineProperty(ev, 'detail', { value: detail });
  return ev;
}

function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    if (!s) return null;
    const probe = 'streamgate:probe';
    s.setItem(probe, '1');
    s.removeItem(probe);
    return s;
  } catch {
    return null;   // disabled (privacy mode, sandboxed frame)
  }
}

function defaultUrl(path) {
  const loc = globalThis.location;
  if (!loc || !/^https?:$/.test(loc.protocol)) throw new TypeError('options.url is required outside a web page');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}${path}`;
}

function absoluteUrl(url) {
  const loc = globalThis.location;
  const u = new URL(url, loc && /^https?:$/.test(loc.protocol) ? loc.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u;
}

// ---- the client -----------------------------------------------------------------

/**
 * One logical connection to streamgate, kept up across drops.
 *
 * Events (all `CustomEvent`s; the payload is `event.detail`):
 *   state    {state, previous, code?, reason?, delay?, attempt?}: connecting, open, reconnecting, closed
 *   message  {room, id, from, body, ts, replayed}: `replayed` is true during a join's replay
 *   joined   {room, replayed, delivered, recovered, lastId, rejoin}
 *   resumed  {replayed, rooms, reconnect}: after every (re)connect, once each room is joined again
 *   gap      {room, recovered: false, lastId}: some messages were trimmed before delivery
 *   left     {room}
 *   error    {code, reason, ref, fatal, retrying}
 *   refreshed {exp}: the token was renewed in band (exp in seconds, or null)
 */
export class StreamgateClient extends EventTarget {
  #o;
  #storage;
  #WebSocket;
  #token;
  #needToken = false;
  #authFailures = 0;

  #ws = null;
  #welcomed = false;
  #state = 'closed';
  #stopped = true;          // close() was called (or never connected)
  #closedOnce = false;      // close() was called, or a fatal refusal ended the client
  #connecting = false;      // between connect() and the socket's creation (token fetch)
  #attempt = 0;
  #everOpen = false;
  #retryTimer = null;
  #watchdog = null;
  #sockStarted = 0;
  #welcomedAt = 0;
  #lastRx = 0;
  #lastPing = 0;
  #onlineHandler = null;

  #user = null;
  #instance = null;
  #rooms = new Map();       // room -> RoomState
  #pending = new Map();     // client_id -> PendingPublish (insertion order = send order)
  #acks = new Map();        // room -> {want, sent}
  #ackTimer = null;
  #leaving = new Map();     // room -> [resolve]
  #resume = null;           // {waiting: Set, replayed, rooms, reconnect}
  #refreshTimer = null;
  #refreshing = null;       // the token sent in the refresh awaiting its answer
  #refreshFailures = 0;

  /**
   * @param {object} options see streamgate.d.ts (ClientOptions)
   */
  constructor(options = {}) {
    super();
    const o = { ...DEFAULTS, ...options };
    if (o.user != null && (!USER_RE.test(o.user) || o.user === 'all')) throw new TypeError(`invalid user id: ${o.user}`);
    if (o.token != null && typeof o.token !== 'string') throw new TypeError('options.token must be a string');
    if (o.tokenProvider != null && typeof o.tokenProvider !== 'function') throw new TypeError('options.tokenProvider must be a function');
    if (o.tokenTransport !== 'subprotocol' && o.tokenTransport !== 'query') throw new TypeError("options.tokenTransport must be 'subprotocol' or 'query'");
    this.#o = o;
    this.#token = o.token ?? null;
    this.#storage = 'storage' in options ? options.storage : defaultStorage();
    this.#WebSocket = o.WebSocket || globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') throw new TypeError('no WebSocket implementation available');
    this.#user = o.user ?? null;
    if (o.autoConnect !== false) queueMicrotask(() => { if (this.#stopped && this.#state === 'closed' && !this.#closedOnce) this.connect(); });
  }

  /** connecting | open | reconnecting | closed */
  get state() { return this.#state; }
  /** The user id the server confirmed (welcome), else the configured one. */
  get user() { return this.#user; }
  /** The instance serving the current connection (null while not open). */
  get instance() { return this.#welcomed ? this.#instance : null; }
  /** Rooms joined or being joined. */
  get rooms() { return [...this.#rooms.keys()]; }
  /** Publishes sent but not yet confirmed. */
  get pendingCount() { return this.#pending.size; }
  /** The id of the last message delivered in `room` (or the join position), or null. */
  lastId(room) {
    const r = this.#rooms.get(room);
    if (r) return r.last;
    return this.#user ? this.#loadPoint(this.#user, room).last : null;
  }

  /** The epoch of the room's stream that `lastId(room)` belongs to, or null. */
  epoch(room) {
    const r = this.#rooms.get(room);
    if (r) return r.epoch;
    return this.#user ? this.#loadPoint(this.#user, room).epoch : null;
  }

  /** Register `fn(detail)` for `type`; returns a function that unregisters it. */
  on(type, fn) {
    const h = (ev) => fn(ev.detail, ev);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  // ---- life cycle -----------------------------------------------------------------

  /** Start connecting (done automatically after construction unless autoConnect: false). */
  connect() {
    if (!this.#stopped) return this;
    this.#stopped = false;
    this.#attempt = 0;
    this.#authFailures = 0;
    if (typeof globalThis.addEventListener === 'function' && !this.#onlineHandler) {
      this.#onlineHandler = () => this.retryNow();
      globalThis.addEventListener('online', this.#onlineHandler);
    }
    this.#watchdog = setInterval(() => this.#tick(), 1000);
    this.#open();
    return this;
  }

  /** While waiting to reconnect: try now instead of at the end of the backoff. */
  retryNow() {
    if (this.#stopped || this.#ws || this.#connecting || !this.#retryTimer) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#open();
  }

  /** Close for good: no reconnect; pending publishes and joins are rejected. */
  close() {
    this.#closedOnce = true;
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#watchdog);
    clearTimeout(this.#ackTimer);
    this.#retryTimer = this.#watchdog = this.#ackTimer = null;
    if (this.#onlineHandler) {
      globalThis.removeEventListener('online', this.#onlineHandler);
      this.#onlineHandler = null;
    }
    this.#flushAcks();
    const ws = this.#ws;
    this.#detach();
    if (ws) {
      try { ws.close(1000, 'client closed'); } catch { /* already closing */ }
    }
    this.#failAll(new StreamgateError('closed', 'the client was closed'));
    this.#setState('closed', { code: 1000, reason: 'client closed' });
  }

  // ---- rooms ----------------------------------------------------------------------

  /**
   * Join `room`. Without `since` it resumes after the last delivered id (kept
   * across reloads), or, for a room never seen, from the server's ack cursor,
   * else from now. `since` ("$", "0" or an id) starts over from there instead;
   * `epoch` is the one `joined` gave with that id, if the application kept it.
   * Resolves with the `joined` details; rejects when the server refuses.
   */
  join(room, { since, epoch } = {}) {
    if (typeof room !== 'string' || !ROOM_RE.test(room) || (room.startsWith('@') && room.slice(1) === '')) {
      return Promise.reject(new StreamgateError('invalid_room', 'invalid room name', room));
    }
    if (this.#stopped && this.#closedOnce) return Promise.reject(new StreamgateError('closed', 'the client was closed', room));
    if (since != null && since !== '$' && !isId(since)) {
      return Promise.reject(new StreamgateError('bad_frame', 'since must be "$", "0" or a message id', room));
    }
    if (epoch != null && (typeof epoch !== 'string' || !EPOCH_RE.test(epoch))) {
      return Promise.reject(new StreamgateError('bad_frame', 'epoch must be the one a joined event gave', room));
    }
    let r = this.#rooms.get(room);
    if (r && since == null) {
      if (r.joined) return Promise.resolve(r.info);
      return new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    }
    if (!r) {
      r = {
        name: room, last: null, epoch: null, since: undefined, loadedFor: null, joined: false, sent: false,
        delivered: 0, everJoined: false, info: null, waiters: [], retryTimer: null, retries: 0, restart: false,
      };
      this.#rooms.set(room, r);
    }
    if (since != null) {
      // Starting over: forget the dedupe position, the replay sets it again.
      r.since = since;
      r.last = since === '$' || since === '0' ? null : since;
      r.epoch = epoch ?? null;
      r.loadedFor = this.#user;
      r.restart = true;
    }
    const p = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    if (this.#welcomed) this.#sendJoin(r);
    return p;
  }

  /**
   * Leave `room`: no more messages from it. The stored resume point is kept
   * (a later join resumes from it) unless `forget` is true.
   */
  leave(room, { forget = false } = {}) {
    const r = this.#rooms.get(room);
    if (r) {
      this.#rooms.delete(room);
      clearTimeout(r.retryTimer);
      for (const w of r.waiters.splice(0)) w.reject(new StreamgateError('left', 'left the room before it was joined', room));
      if (this.#resume) this.#resumeDone(room, 0);
    }
    if (forget && this.#user) this.#storeRemove(this.#user, room);
    if (!this.#welcomed || !r) return Promise.resolve();
    this.#flushAcks();
    this.#acks.delete(room);
    this.#send({ type: 'leave', room });
    return new Promise((resolve) => {
      const list = this.#leaving.get(room) || [];
      list.push(resolve);
      this.#leaving.set(room, list);
    });
  }

  // ---- publishing ---------------------------------------------------------------

  /** Append `body` (any JSON value) to `room`; resolves with the message id. */
  publish(room, body, { clientId } = {}) {
    if (typeof room !== 'string' || !ROOM_RE.test(room)) {
      return Promise.reject(new StreamgateError('invalid_room', 'invalid room name', room));
    }
    return this.#submit({ type: 'publish', room, body }, clientId);
  }

  /** A direct message to `user` (their `@user` inbox); resolves with the message id. */
  direct(user, body, { clientId } = {}) {
    if (typeof user !== 'string' || !USER_RE.test(user) || user === 'all') {
      return Promise.reject(new StreamgateError('invalid_room', 'invalid user id', user));
    }
    return this.#submit({ type: 'direct', to: user, body }, clientId);
  }

  /** Publish to `@all` (needs the broadcast right); resolves with the message id. */
  broadcast(body, { clientId } = {}) {
    return this.#submit({ type: 'broadcast', body }, clientId);
  }

  #submit(frame, clientId) {
    if (this.#stopped && this.#closedOnce) return Promise.reject(new StreamgateError('closed', 'the client was closed'));
    const cid = clientId ?? newClientId();
    if (typeof cid !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(cid)) {
      return Promise.reject(new StreamgateError('bad_frame', 'clientId must be 1-128 printable ASCII characters'));
    }
    const existing = this.#pending.get(cid);
    if (existing) return existing.promise;
    if (frame.body === undefined || typeof frame.body === 'function' || typeof frame.body === 'symbol') {
      return Promise.reject(new StreamgateError('bad_frame', 'body must be a JSON value', cid));
    }
    let text;
    try {
      text = JSON.stringify({ ...frame, client_id: cid });
    } catch (err) {
      return Promise.reject(new StreamgateError('bad_frame', `body is not JSON: ${err.message}`, cid));
    }
    // The server answers an oversized frame without a ref, so it could never
    // be matched to this publish: refuse it here.
    if (new TextEncoder().encode(text).length > this.#o.maxFrameBytes) {
      return Promise.reject(new StreamgateError('too_large', `frames are limited to ${this.#o.maxFrameBytes} bytes`, cid));
    }
    const p = { text, tries: 0, timer: null, resolve: null, reject: null, promise: null };
    p.promise = new Promise((resolve, reject) => { p.resolve = resolve; p.reject = reject; });
    this.#pending.set(cid, p);
    if (this.#welcomed) this.#sendText(text);
    return p.promise;
  }

  // ---- acks -------------------------------------------------------------------------

  /** Tell the server the user processed `room` up to `id` (sent now, or after reconnecting). */
  ack(room, id) {
    if (!isId(id)) throw new TypeError(`not a stream id: ${id}`);
    const a = this.#acks.get(room);
    if (a && a.want && compareIds(id, a.want) <= 0) return;
    this.#acks.set(room, { want: id, sent: a ? a.sent : null });
    this.#flushAcks();
  }

  #flushAcks() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    if (!this.#welcomed) return;
    for (const [room, a] of this.#acks) {
      if (a.want && a.want !== a.sent && this.#send({ type: 'ack', room, id: a.want })) a.sent = a.want;
    }
  }

  #autoAck(room, id) {
    const a = this.#acks.get(room);
    this.#acks.set(room, { want: id, sent: a ? a.sent : null });
    if (!this.#ackTimer) this.#ackTimer = setTimeout(() => this.#flushAcks(), this.#o.autoAckDelay);
  }

  // ---- connection -----------------------------------------------------------------

  async #open() {
    if (this.#stopped || this.#ws || this.#connecting) return;
    this.#connecting = true;
    this.#setState(this.#everOpen || this.#attempt > 0 ? 'reconnecting' : 'connecting');
    try {
      if (this.#o.tokenProvider && (this.#needToken || this.#token == null)) {
        try {
          this.#token = await this.#o.tokenProvider();
          this.#needToken = false;
        } catch (err) {
          this.#emit('error', { code: 'token', reason: `tokenProvider failed: ${err && err.message}`, ref: null, fatal: false, retrying: true });
          this.#scheduleReconnect(0, 'no token');
          return;
        }
        if (this.#stopped) return;
      }
      let url;
      let protocols;
      try {
        url = absoluteUrl(this.#o.url || defaultUrl(this.#o.path));
        if (this.#token != null && this.#o.tokenTransport === 'subprotocol') protocols = [SUBPROTOCOL, TOKEN_PREFIX + this.#token];
        else if (this.#token != null) url.searchParams.set('token', this.#token);
        else if (this.#user != null) url.searchParams.set('user', this.#user);
      } catch (err) {
        this.#fatal('bad_url', String(err && err.message));
        return;
      }
      let ws;
      try {
        ws = protocols ? new this.#WebSocket(url.href, protocols) : new this.#WebSocket(url.href);
      } catch (err) {
        this.#fatal('bad_url', String(err && err.message));
        return;
      }
      this.#ws = ws;
      this.#welcomed = false;
      this.#sockStarted = this.#lastRx = Date.now();
      ws.onmessage = (ev) => {
        if (ws !== this.#ws) return;
        this.#lastRx = Date.now();
        this.#onFrame(ev.data);
      };
      ws.onclose = (ev) => { if (ws === this.#ws) this.#closed(ev.code, ev.reason); };
      ws.onerror = () => { /* followed by close */ };
    } finally {
      this.#connecting = false;
    }
  }

  #detach() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#refreshing = null;
    const ws = this.#ws;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    this.#ws = null;
    this.#welcomed = false;
    this.#welcomedAt = 0;
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.sent = false;
      clearTimeout(r.retryTimer);
      r.retryTimer = null;
    }
    for (const list of this.#leaving.values()) for (const done of list) done();
    this.#leaving.clear();
    for (const p of this.#pending.values()) { clearTimeout(p.timer); p.timer = null; }
    this.#resume = null;
    return ws;
  }

  #closed(code, reason) {
    const wasOpen = this.#welcomed;
    const stable = this.#welcomedAt && Date.now() - this.#welcomedAt >= this.#o.stableAfter;
    this.#detach();
    if (this.#stopped) return;
    if (stable) this.#attempt = 0;
    if (code === CLOSE_ORIGIN) {
      this.#fatal('origin', reason || 'origin not allowed', code);
      return;
    }
    if (code === CLOSE_UNAUTHORIZED) {
      if (!this.#o.tokenProvider || ++this.#authFailures >= this.#o.maxAuthFailures) {
        this.#fatal('unauthorized', reason || 'unauthorized', code);
        return;
      }
      this.#needToken = true;
    } else if (!wasOpen && this.#o.tokenProvider) {
      // A refused handshake (HTTP 401) looks like any failed connection to a
      // page: fetch a fresh token before the next attempt.
      this.#needToken = true;
    }
    this.#scheduleReconnect(code, reason);
  }

  #scheduleReconnect(code, reason) {
    const cap = Math.min(this.#o.backoffMax, this.#o.backoffInitial * 2 ** this.#attempt);
    const delay = Math.round(cap / 2 + Math.random() * cap / 2);   // backoff with jitter
    this.#attempt = Math.min(this.#attempt + 1, 30);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => { this.#retryTimer = null; this.#open(); }, delay);
    this.#setState('reconnecting', { code, reason, delay, attempt: this.#attempt }, true);
  }

  #fatal(code, reason, closeCode) {
    this.#emit('error', { code, reason, ref: null, fatal: true, retrying: false, closeCode: closeCode ?? null });
    this.#stopped = true;
    this.#closedOnce = true;
    clearInterval(this.#watchdog);
    clearTimeout(this.#retryTimer);
    this.#watchdog = this.#retryTimer = null;
    this.#failAll(new StreamgateError(code, reason));
    this.#setState('closed', { code: closeCode ?? null, reason });
  }

  #failAll(err) {
    for (const p of this.#pending.values()) { clearTimeout(p.timer); p.reject(err); }
    this.#pending.clear();
    for (const r of this.#rooms.values()) for (const w of r.waiters.splice(0)) w.reject(err);
  }

  #tick() {
    const ws = this.#ws;
    if (!ws) return;
    const now = Date.now();
    const silentFor = now - this.#lastRx;
    const limit = this.#welcomed ? this.#o.pingInterval + this.#o.pongTimeout : this.#o.connectTimeout;
    if (silentFor > limit) {
      this.#closed(CLOSE_SILENT, this.#welcomed ? 'no answer to ping' : 'no welcome');   // detaches ws
      try { ws.close(); } catch { /* already closing */ }
      return;
    }
    if (this.#welcomed && now - Math.max(this.#lastPing, this.#lastRx) >= this.#o.pingInterval) {
      this.#lastPing = now;
      this.#send({ type: 'ping' });
    }
  }

  #send(frame) {
    return this.#sendText(JSON.stringify(frame));
  }

  #sendText(text) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return false;   // 1 = OPEN
    ws.send(text);
    return true;
  }

  #setState(state, extra = {}, always = false) {
    const previous = this.#state;
    if (previous === state && !always) return;
    this.#state = state;
    this.#emit('state', { state, previous, ...extra });
  }

  #emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  // ---- frames from the server ---------------------------------------------------

  #onFrame(data) {
    if (typeof data !== 'string') return;
    let f;
    try { f = JSON.parse(data); } catch { return; }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'welcome': this.#onWelcome(f); break;
      case 'message': this.#onMessage(f); break;
      case 'joined': this.#onJoined(f); break;
      case 'published': this.#onPublished(f); break;
      case 'left': this.#onLeft(f); break;
      case 'error': this.#onError(f); break;
      case 'refreshed': this.#onRefreshed(f); break;
      default: break;   // pong, and frame types added later
    }
  }

  #onWelcome(f) {
    const reconnect = this.#everOpen;
    if (typeof f.user === 'string' && f.user !== this.#user) {
      // Another identity (a token for someone else): resume points belong to users.
      if (this.#user != null) for (const r of this.#rooms.values()) if (r.since === undefined) { r.last = null; r.epoch = null; r.loadedFor = null; }
      this.#user = f.user;
    }
    this.#instance = typeof f.instance === 'string' ? f.instance : null;
    this.#welcomed = true;
    this.#everOpen = true;
    this.#welcomedAt = Date.now();
    this.#authFailures = 0;
    this.#resume = { waiting: new Set(this.#rooms.keys()), replayed: 0, rooms: {}, reconnect };
    for (const r of this.#rooms.values()) this.#sendJoin(r);
    for (const p of this.#pending.values()) { p.tries = 0; this.#sendText(p.text); }   // same client_id: stored once
    this.#flushAcks();
    this.#setState('open', { user: this.#user, instance: this.#instance, reconnect });
    this.#refreshFailures = 0;
    this.#scheduleRefresh();
    if (this.#resume && this.#resume.waiting.size === 0) this.#resumeDone(null, 0);
  }

  #sendJoin(r) {
    if (r.loadedFor !== this.#user && r.since === undefined) {
      r.loadedFor = this.#user;
      const stored = this.#loadPoint(this.#user, r.name);
      if (stored.last && (r.last == null || compareIds(stored.last, r.last) > 0)) {
        r.last = stored.last;
        r.epoch = stored.epoch;
      }
    }
    r.joined = false;
    r.sent = true;
    r.delivered = 0;
    // After part of a replay, resume from what arrived rather than from the start again.
    const since = r.last ?? r.since;
    const frame = { type: 'join', room: r.name };
    if (since != null) {
      frame.since = since;
      if (since !== '$' && r.epoch) frame.epoch = r.epoch;
    }
    this.#send(frame);
  }

  #onMessage(f) {
    const r = this.#rooms.get(f.room);
    if (!r || !r.sent || !isId(f.id)) return;
    if (r.last != null && compareIds(f.id, r.last) <= 0) return;   // seen already: never twice, never backwards
    r.last = f.id;
    const replayed = !r.joined;
    if (replayed) r.delivered++;
    this.#emit('message', { room: f.room, id: f.id, from: f.from, body: f.body, ts: f.ts, replayed });
    if (this.#rooms.get(f.room) === r) this.#storeLast(r, false);
    if (this.#o.autoAck) this.#autoAck(f.room, f.id);
  }

  #onJoined(f) {
    const r = this.#rooms.get(f.room);
    if (!r || !r.sent) return;
    const recovered = f.recovered !== false;
    if (isId(f.last_id) && (r.last == null || !recovered || compareIds(f.last_id, r.last) > 0)) {
      // The server's position: for a quiet room the resume point; after a
      // gap the stream's truth (an id beyond it was erased by a failover).
      r.last = f.last_id;
    }
    // The incarnation of the room's stream this position belongs to (null:
    // the room has no stream yet, or the server predates epochs).
    r.epoch = typeof f.epoch === 'string' && EPOCH_RE.test(f.epoch) ? f.epoch : null;
    r.since = undefined;
    r.joined = true;
    r.retries = 0;
    this.#storeLast(r, !recovered || r.restart);
    r.restart = false;
    const replayed = Number.isInteger(f.replayed) ? f.replayed : r.delivered;
    r.info = { room: r.name, replayed, delivered: r.delivered, recovered, lastId: r.last, epoch: r.epoch, rejoin: r.everJoined };
    r.everJoined = true;
    for (const w of r.waiters.splice(0)) w.resolve(r.info);
    this.#emit('joined', r.info);
    if (!recovered) this.#emit('gap', { room: r.name, recovered: false, lastId: r.last });
    if (this.#resume) this.#resumeDone(r.name, replayed);
  }

  #resumeDone(room, replayed) {
    const s = this.#resume;
    if (room != null) {
      if (!s.waiting.delete(room)) return;
      s.replayed += replayed;
      s.rooms[room] = replayed;
    }
    if (s.waiting.size === 0) {
      this.#resume = null;
      this.#emit('resumed', { replayed: s.replayed, rooms: s.rooms, reconnect: s.reconnect });
    }
  }

  #onPublished(f) {
    const p = this.#pending.get(f.client_id);
    if (!p) return;
    this.#pending.delete(f.client_id);
    clearTimeout(p.timer);
    p.resolve(f.id);
  }

  // ---- in-band token refresh ---------------------------------------------------

  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (!this.#o.tokenProvider || !(this.#o.refreshMargin > 0) || !this.#welcomed) return;
    const exp = tokenExpiry(this.#token);
    if (exp == null) return;
    const now = Date.now();
    const delay = this.#refreshFailures
      ? Math.min(1000 * 2 ** this.#refreshFailures, 30000, Math.max(MIN_REFRESH_DELAY, (exp - now) / 2))
      : refreshDelay(exp, now, this.#o.refreshMargin);
    this.#refreshTimer = setTimeout(() => { this.#refreshTimer = null; this.#refresh(); }, delay);
  }

  async #refresh() {
    const ws = this.#ws;
    let token;
    try {
      token = await this.#o.tokenProvider();
    } catch (err) {
      this.#emit('error', { code: 'token', reason: `tokenProvider failed: ${err && err.message}`, ref: null, fatal: false, retrying: true });
      if (ws === this.#ws) { this.#refreshFailures++; this.#scheduleRefresh(); }
      return;
    }
    if (ws !== this.#ws || !this.#welcomed || typeof token !== 'string') return;
    this.#refreshing = token;
    if (!this.#send({ type: 'refresh', token })) this.#refreshing = null;
  }

  #onRefreshed(f) {
    if (this.#refreshing == null) return;
    this.#token = this.#refreshing;
    this.#refreshing = null;
    this.#refreshFailures = 0;
    this.#emit('refreshed', { exp: Number.isInteger(f.exp) ? f.exp : null });
    this.#scheduleRefresh();
  }

  // ---- presence and history (HTTP) ---------------------------------------------

  /** Users with a live connection on any live instance (GET /presence). */
  async presence() {
    return (await this.#get('/presence')).users;
  }

  /** Users who joined `room` on a live connection; needs the join right. */
  async members(room) {
    return (await this.#get(`/rooms/${encodeURIComponent(room)}/members`)).members;
  }

  /**
   * A page of `room`'s history, oldest first: `{messages, next, prev}`.
   * `after`: page forward (`next` is the following page's `after`);
   * `before: '$'`: the latest `limit` messages, `before: id`: those just
   * before it (`prev` is the older page's `before`).
   */
  async history(room, { after, before, limit = 100 } = {}) {
    if (after != null && before != null) throw new TypeError('give after or before, not both');
    if (after != null && !isId(after)) throw new TypeError(`after must be a message id: ${after}`);
    if (before != null && before !== '$' && !isId(before)) throw new TypeError(`before must be a message id or '$': ${before}`);
    const query = { limit: String(limit) };
    if (after != null) query.after = after;
    if (before != null) query.before = before;
    const page = await this.#get(`/rooms/${encodeURIComponent(room)}/messages`, query);
    return { messages: page.messages, next: page.next ?? null, prev: page.prev ?? null };
  }

  async #get(path, query = {}) {
    if (this.#token == null && this.#o.tokenProvider) this.#token = await this.#o.tokenProvider();
    const base = absoluteUrl(this.#o.url || defaultUrl(this.#o.path));
    base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
    base.pathname = base.pathname.replace(/\/ws$/, '') + path;
    base.search = '';
    const headers = { Accept: 'application/json' };
    if (this.#token != null) headers.Authorization = `Bearer ${this.#token}`;
    else if (this.#user != null) query = { ...query, user: this.#user };
    for (const [k, v] of Object.entries(query)) base.searchParams.set(k, v);
    const fetchFn = this.#o.fetch || globalThis.fetch;
    const res = await fetchFn(base.href, { headers, signal: AbortSignal.timeout(this.#o.httpTimeout) });
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) {
      throw new StreamgateError(body && typeof body.error === 'string' ? body.error : `http_${res.status}`,
        body && typeof body.reason === 'string' ? body.reason : String(res.status), null);
    }
    return body;
  }

  #onLeft(f) {
    const list = this.#leaving.get(f.room);
    if (list) {
      this.#leaving.delete(f.room);
      for (const done of list) done();
    }
    this.#emit('left', { room: f.room });
  }

  #onError(f) {
    const code = typeof f.code === 'string' ? f.code : 'error';
    const reason = typeof f.reason === 'string' ? f.reason : '';
    const ref = f.ref ?? null;
    if (this.#refreshing != null && (ref == null || (code === 'forbidden' && !this.#joiningRoom(ref)))) {
      // The answer to the refresh in flight: the old token stays in force; try again later.
      this.#refreshing = null;
      this.#refreshFailures++;
      this.#emit('error', { code, reason, ref, fatal: false, retrying: true });
      this.#scheduleRefresh();
      return;
    }
    const p = ref != null ? this.#pending.get(ref) : undefined;
    if (p) {
      const retry = (code === 'unavailable' || code === 'rate_limited') && ++p.tries <= this.#o.publishRetries;
      this.#emit('error', { code, reason, ref, fatal: false, retrying: retry });
      if (!retry) {
        this.#pending.delete(ref);
        p.reject(new StreamgateError(code, reason, ref));
        return;
      }
      const delay = Math.min(this.#o.backoffMax, this.#o.backoffInitial * 2 ** (p.tries - 1));
      clearTimeout(p.timer);
      p.timer = setTimeout(() => { p.timer = null; if (this.#pending.get(ref) === p) this.#sendText(p.text); }, delay);
      return;
    }
    const r = ref != null ? this.#rooms.get(ref) : undefined;
    if (r && r.sent && !r.joined) {
      const retry = code === 'unavailable';
      this.#emit('error', { code, reason, ref, fatal: false, retrying: retry });
      if (retry) {
        const delay = Math.min(this.#o.backoffMax, this.#o.backoffInitial * 2 ** Math.min(r.retries++, 10));
        clearTimeout(r.retryTimer);
        r.retryTimer = setTimeout(() => {
          r.retryTimer = null;
          if (this.#welcomed && this.#rooms.get(r.name) === r && !r.joined) this.#sendJoin(r);
        }, delay);
      } else {
        this.#rooms.delete(r.name);
        for (const w of r.waiters.splice(0)) w.reject(new StreamgateError(code, reason, ref));
        if (this.#resume) this.#resumeDone(r.name, 0);
      }
      return;
    }
    this.#emit('error', { code, reason, ref, fatal: false, retrying: false });
  }

  #joiningRoom(name) {
    const r = this.#rooms.get(name);
    return !!(r && r.sent && !r.joined);
  }

  // ---- resume points in storage ------------------------------------------------
  // Key: prefix + user + "/" + room. "/" occurs in neither, so keys never collide.
  // Value: the id, or {"last": id, "epoch": e} once the server named an epoch
  // (one value, so a position is never paired with another page's epoch).

  #key(user, room) {
    return `${this.#o.storagePrefix}${user}/${room}`;
  }

  #loadPoint(user, room) {
    const none = { last: null, epoch: null };
    if (!this.#storage || !user) return none;
    try {
      let v = this.#storage.getItem(this.#key(user, room));
      if (v && (v.startsWith('"') || v.startsWith('{'))) v = JSON.parse(v);
      if (isId(v)) return { last: v, epoch: null };
      if (v && typeof v === 'object' && isId(v.last)) {
        return { last: v.last, epoch: typeof v.epoch === 'string' && EPOCH_RE.test(v.epoch) ? v.epoch : null };
      }
      return none;
    } catch {
      return none;
    }
  }

  // Only forward, so that two pages of the same user never move it back;
  // `force` after a gap, where the server's position is the truth.
  #storeLast(r, force) {
    if (!this.#storage || !this.#user || r.last == null) return;
    try {
      if (!force) {
        const stored = this.#loadPoint(this.#user, r.name);
        // Never back; the same id again only to record the epoch it belongs to.
        const order = stored.last ? compareIds(stored.last, r.last) : -1;
        if (order > 0 || (order === 0 && stored.epoch === r.epoch)) return;
      }
      const value = r.epoch ? JSON.stringify({ last: r.last, epoch: r.epoch }) : r.last;
      this.#storage.setItem(this.#key(this.#user, r.name), value);
    } catch { /* storage full or disabled: resume from memory only */ }
  }

  #storeRemove(user, room) {
    try { if (this.#storage) this.#storage.removeItem(this.#key(user, room)); } catch { /* disabled */ }
  }
}

export default StreamgateClient;
