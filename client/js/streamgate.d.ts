// Types for streamgate.js, the browser client of the streamgate wire protocol (v1).

/** A Redis stream id: "<ms>-<seq>" (a bare "<ms>" means "<ms>-0"). */
export type MessageId = string;

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The subset of the Web Storage API the client uses (localStorage by default). */
export interface ResumeStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** WebSocket URL, absolute or relative to the page; default `ws(s)://<page host>/ws`. */
  url?: string;
  /** Path used to build the default URL. Default "/ws". */
  path?: string;
  /** Identity in AUTH_MODE=none (`?user=`). */
  user?: string;
  /** A JWT, sent as `tokenTransport` says. Wins over `user`. */
  token?: string;
  /**
   * Returns a (fresh) JWT. Called before the first connection when there is
   * no `token`, after a 4401 close, after a connection that failed before
   * its welcome (a refused handshake looks like any failed connection), and
   * `refreshMargin` before the current token's `exp`, to refresh it in band.
   */
  tokenProvider?: () => string | Promise<string>;
  /**
   * "subprotocol" (default): the token goes in `Sec-WebSocket-Protocol` as
   * `bearer.<token>` next to `streamgate.v1`, out of URLs and proxy logs;
   * "query": in `?token=`.
   */
  tokenTransport?: 'subprotocol' | 'query';
  /**
   * With a tokenProvider: refresh the token in band (a `refresh` frame, the
   * connection and its rooms stay) this many ms before it expires, at most
   * half-way through its remaining life. 0 turns it off. Default 30000.
   */
  refreshMargin?: number;
  /** Timeout of presence, members and history requests in ms. Default 10000. */
  httpTimeout?: number;
  /** fetch implementation for those requests. Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Start connecting right after construction (on a microtask). Default true. */
  autoConnect?: boolean;
  /** Ack every delivered message automatically, coalesced per `autoAckDelay`. Default false. */
  autoAck?: boolean;
  /** Milliseconds between automatic acks. Default 1000. */
  autoAckDelay?: number;
  /** Where resume points are kept; default localStorage, `null` keeps them in memory only. */
  storage?: ResumeStorage | null;
  /** Storage key prefix; the key is prefix + user + "/" + room. Default "streamgate:last/". */
  storagePrefix?: string;
  /** First reconnect delay cap in ms (the delay is jittered between cap/2 and cap). Default 500. */
  backoffInitial?: number;
  /** Largest reconnect delay cap in ms. Default 30000. */
  backoffMax?: number;
  /** A connection up this long (ms) resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Give up on a socket without a welcome after this many ms. Default 10000. */
  connectTimeout?: number;
  /** Send a ping after this many ms without traffic. Default 20000. */
  pingInterval?: number;
  /** Drop a socket silent for pingInterval + pongTimeout ms. Default 10000. */
  pongTimeout?: number;
  /** Refuse publishes whose frame exceeds this (the server's MAX_FRAME_BYTES). Default 65536. */
  maxFrameBytes?: number;
  /** Resends of one publish answered `unavailable` or `rate_limited` before rejecting. Default 8. */
  publishRetries?: number;
  /** Consecutive 4401 closes (with a tokenProvider) before giving up. Default 3. */
  maxAuthFailures?: number;
  /** WebSocket constructor for non-browser use. Default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

export interface JoinOptions {
  /** "$": only new messages; "0": everything retained; an id: everything after it. */
  since?: '$' | '0' | MessageId;
  /** The epoch `joined` gave with that id (see `epoch(room)`), if kept by the application. */
  epoch?: string;
}

export interface LeaveOptions {
  /** Also delete the stored resume point of the room. Default false. */
  forget?: boolean;
}

export interface PublishOptions {
  /** Idempotency key; by default a random UUID. Reuse it to retry a rejected publish safely. */
  clientId?: string;
}

export interface MessageDetail {
  room: string;
  id: MessageId;
  from: string;
  body: Json;
  /** Server time of the append, ms since the epoch. */
  ts: number;
  /** True when delivered as part of a join's replay (missed while away). */
  replayed: boolean;
}

export interface JoinedDetail {
  room: string;
  /** Messages the server replayed for this join. */
  replayed: number;
  /** Of those, how many were new to this client and delivered. */
  delivered: number;
  /** False when messages after the resume point were lost for good: trimmed
   *  away, erased by a failover, or the room's stream lost and recreated. */
  recovered: boolean;
  /** The room position after the join (the resume point). */
  lastId: MessageId | null;
  /** The incarnation of the room's stream `lastId` belongs to; null while the room has no stream. */
  epoch: string | null;
  /** True when this is a re-join after a reconnect. */
  rejoin: boolean;
}

export interface ResumedDetail {
  /** Messages replayed across all rooms after this (re)connect. */
  replayed: number;
  rooms: Record<string, number>;
  /** False for the first connection of this client (a page load). */
  reconnect: boolean;
}

export interface GapDetail {
  room: string;
  recovered: false;
  lastId: MessageId | null;
}

export interface StateDetail {
  state: ConnectionState;
  previous: ConnectionState;
  /** Close code that caused a reconnect or the end (4000: dropped as silent). */
  code?: number | null;
  reason?: string;
  /** For `reconnecting`: ms until the next attempt, and the attempt number. */
  delay?: number;
  attempt?: number;
  /** For `open`. */
  user?: string;
  instance?: string | null;
  reconnect?: boolean;
}

export interface ErrorDetail {
  /** A protocol error code (unavailable, forbidden, ...) or a local one (unauthorized, origin, token, bad_url). */
  code: string;
  reason: string;
  ref: string | null;
  /** The client stopped for good (4403, or 4401 that a new token could not fix). */
  fatal: boolean;
  /** The client retries by itself (publish or join answered unavailable/rate_limited). */
  retrying: boolean;
  closeCode?: number | null;
}

export interface RefreshedDetail {
  /** The new token's expiry in seconds since the epoch, null without one. */
  exp: number | null;
}

export interface HistoryMessage {
  id: MessageId;
  from: string;
  body: Json;
  ts: number;
}

export interface HistoryPage {
  /** Oldest first. */
  messages: HistoryMessage[];
  /** The `after` of the following page; null at the newest message (and on `before` pages). */
  next: MessageId | null;
  /** On `before` pages: the `before` of the older page; null once nothing older is retained. */
  prev: MessageId | null;
}

export interface HistoryOptions {
  /** Page forward after this id (exclusive). */
  after?: MessageId;
  /** "$": the latest `limit` messages; an id: the ones just before it. */
  before?: '$' | MessageId;
  /** 1-1000. Default 100. */
  limit?: number;
}

export interface StreamgateEventMap {
  refreshed: CustomEvent<RefreshedDetail>;
  message: CustomEvent<MessageDetail>;
  joined: CustomEvent<JoinedDetail>;
  resumed: CustomEvent<ResumedDetail>;
  gap: CustomEvent<GapDetail>;
  left: CustomEvent<{ room: string }>;
  state: CustomEvent<StateDetail>;
  error: CustomEvent<ErrorDetail>;
}

export class StreamgateError extends Error {
  readonly code: string;
  readonly reason: string;
  readonly ref: string | null;
  constructor(code: string, reason: string, ref?: string | null);
}

/** True for "ms-seq" or bare "ms" strings. */
export function isId(id: unknown): id is MessageId;

/** Numeric comparison of two ids as (ms, seq) pairs: -1, 0 or 1. */
export function compareIds(a: MessageId, b: MessageId): -1 | 0 | 1;

/** The `exp` claim of a JWT in ms since the epoch (read, not verified), or null. */
export function tokenExpiry(token: string | null | undefined): number | null;

/** Ms until a token expiring at `expiresAt` is refreshed: `margin` before, at most half-way. */
export function refreshDelay(expiresAt: number, now: number, margin: number): number;

export class StreamgateClient extends EventTarget {
  constructor(options?: ClientOptions);

  readonly state: ConnectionState;
  /** The user the server confirmed (or the configured one before the first welcome). */
  readonly user: string | null;
  /** Instance serving the current connection, null while not open. */
  readonly instance: string | null;
  /** Rooms joined or being joined. */
  readonly rooms: string[];
  /** Publishes sent and not yet confirmed. */
  readonly pendingCount: number;

  /** Last delivered id of `room` (or its join position), null if none. */
  lastId(room: string): MessageId | null;
  /** The epoch of the room's stream that `lastId(room)` belongs to, null if none. */
  epoch(room: string): string | null;

  connect(): this;
  retryNow(): void;
  close(): void;

  join(room: string, options?: JoinOptions): Promise<JoinedDetail>;
  leave(room: string, options?: LeaveOptions): Promise<void>;

  publish(room: string, body: Json, options?: PublishOptions): Promise<MessageId>;
  direct(user: string, body: Json, options?: PublishOptions): Promise<MessageId>;
  broadcast(body: Json, options?: PublishOptions): Promise<MessageId>;

  ack(room: string, id: MessageId): void;

  /** Users with a live connection on any live instance (`GET /presence`). */
  presence(): Promise<string[]>;
  /** Users who joined `room` on a live connection (`GET /rooms/{room}/members`). */
  members(room: string): Promise<string[]>;
  /** A page of `room`'s history (`GET /rooms/{room}/messages`); rejects with StreamgateError when refused. */
  history(room: string, options?: HistoryOptions): Promise<HistoryPage>;

  /** Calls `fn(detail, event)` for each `type` event; returns an unsubscribe function. */
  on<K extends keyof StreamgateEventMap>(
    type: K,
    fn: (detail: StreamgateEventMap[K]['detail'], event: StreamgateEventMap[K]) => void,
  ): () => void;

  addEventListener<K extends keyof StreamgateEventMap>(
    type: K,
    listener: (this: StreamgateClient, ev: StreamgateEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof StreamgateEventMap>(
    type: K,
    listener: (this: StreamgateClient, ev: StreamgateEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

export default StreamgateClient;
