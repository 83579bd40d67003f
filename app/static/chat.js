// Demo chat page for streamgate (server run with AUTH_MODE=none).
// Rooms, direct messages, and resuming every room from the last message id seen.

const USER_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const MAX_LINES = 500;      // lines kept per room in memory
const CACHED_LINES = 100;   // lines kept per room in localStorage, shown again after a reload
const MAX_FRAME = 60000;    // stay below the server's default MAX_FRAME_BYTES (65536)
const PING_MS = 25000;
const POLL_MS = 5000;

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem('streamgate:' + key);
      return v == null ? fallback : JSON.parse(v);
    } catch { return fallback; }
  },
  set(key, value) {
    try { localStorage.setItem('streamgate:' + key, JSON.stringify(value)); } catch { /* full or disabled */ }
  },
  del(key) {
    try { localStorage.removeItem('streamgate:' + key); } catch { /* disabled */ }
  },
};

// Stream ids are "<ms>-<seq>": compare numerically, part by part.
function parseId(id) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(id));
  return m ? [BigInt(m[1]), BigInt(m[2] || 0)] : [0n, 0n];
}
function cmpId(a, b) {
  const [am, as] = parseId(a);
  const [bm, bs] = parseId(b);
  if (am !== bm) return am < bm ? -1 : 1;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();   // secure contexts only
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- state ----------------------------------------------------------------

const user = store.get('user', null);
const inbox = '@' + user;
const rooms = new Map();     // name -> room state
const pending = new Map();   // client_id -> { frame, tries }: sent, not yet confirmed
let current = null;
let ws = null;
let welcomed = false;
let fatal = false;
let attempt = 0;
let retryTimer = 0;
let upSince = 0;
let lastRx = 0;
let serverOffset = null;     // server clock minus ours, from HTTP Date headers

// localStorage keys: '/' cannot occur in user or room names, so keys never collide.
const key = (kind, room) => `${kind}/${user}/${room}`;

function addRoom(name) {
  if (!rooms.has(name)) {
    rooms.set(name, {
      name,
      last: store.get(key('last', name), null),   // last id seen: the resume point
      shown: null,                                // last id displayed in this page (for ack)
      acked: null,
      joined: false,
      fresh: false,
      lines: store.get(key('log', name), []),
      unread: 0,
      dirty: false,
    });
  }
  return rooms.get(name);
}

function saveRoomList() {
  store.set(`rooms/${user}`, [...rooms.keys()].filter((n) => !n.startsWith('@')));
}

function label(name) {
  if (name === inbox) return `${name} (inbox)`;
  return name.startsWith('@') ? name : '#' + name;
}

// ---- rendering --------------------------------------------------------------

function setConn(state, text) {
  const c = $('conn');
  c.className = 'conn ' + state;
  c.textContent = text;
}

function status(text, level = 'info') {
  const box = $('status');
  const line = el('div', level, text);
  box.append(line);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => line.remove(), level === 'error' ? 15000 : 8000);
}

function fmtTime(ts) {
  const d = new Date(Number(ts));
  if (Number.isNaN(d.getTime())) return '';
  const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  if (d.toDateString() !== new Date().toDateString()) Object.assign(opts, { month: 'short', day: 'numeric' });
  return d.toLocaleString([], opts);
}

function lineEl(l) {
  if (l.kind === 'note') return el('li', 'note ' + (l.level || ''), l.text);
  const li = el('li', l.kind === 'out' || l.from === user ? 'msg mine' : 'msg');
  const time = el('time', null, fmtTime(l.ts));
  if (l.id) time.title = 'id ' + l.id;
  const from = el('span', 'from', l.kind === 'out' ? '→ ' + l.to : l.from);
  const body = el('span', 'body', typeof l.body === 'string' ? l.body : JSON.stringify(l.body));
  li.append(time, from, body);
  return li;
}

function appendLine(l) {
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(lineEl(l));
  while (list.children.length > MAX_LINES) list.firstChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMessages() {
  const list = $('messages');
  const r = rooms.get(current);
  list.replaceChildren(...(r ? r.lines.map(lineEl) : []));
  list.scrollTop = list.scrollHeight;
}

function renderRooms() {
  const ul = $('rooms');
  ul.replaceChildren();
  for (const r of rooms.values()) {
    const li = el('li', r.name === current ? 'active' : '');
    const b = el('button', r.joined ? 'room' : 'room joining', label(r.name));
    b.type = 'button';
    b.title = r.joined ? 'joined' : 'joining…';
    b.onclick = () => switchTo(r.name);
    if (r.unread) b.append(el('span', 'badge', r.unread));
    li.append(b);
    if (!r.name.startsWith('@')) {
      const x = el('button', 'x', '×');
      x.type = 'button';
      x.title = 'leave ' + r.name;
      x.onclick = () => leaveRoom(r.name);
      li.append(x);
    }
    ul.append(li);
  }
}

function renderPeople(ul, list) {
  const names = [...new Set((Array.isArray(list) ? list : [])
    .map((p) => (typeof p === 'string' ? p : p && (p.user ?? p.id)))
    .filter((p) => typeof p === 'string'))].sort();
  ul.replaceChildren(...names.map((name) => {
    const li = el('li');
    const b = el('button', 'person', name === user ? `${name} (you)` : name);
    b.type = 'button';
    b.title = 'send a direct message to ' + name;
    b.onclick = () => { $('text').value = `/dm ${name} `; $('text').focus(); };
    li.append(b);
    return li;
  }));
  if (!names.length) ul.append(el('li', 'muted', 'nobody'));
}

function pushLine(r, line) {
  r.lines.push(line);
  if (r.lines.length > MAX_LINES) r.lines.splice(0, r.lines.length - MAX_LINES);
  r.dirty = true;
  if (r.name === current) appendLine(line);
  else if (line.kind !== 'note') { r.unread++; renderRooms(); }
}

const note = (r, text, level = '') => pushLine(r, { kind: 'note', text, level, ts: Date.now() });

function switchTo(name) {
  const r = rooms.get(name);
  if (!r) return;
  current = name;
  r.unread = 0;
  store.set(`current/${user}`, name);
  $('room-title').textContent = label(name);
  $('leave').hidden = name.startsWith('@');
  document.title = `${label(name)} · streamgate`;
  $('members').replaceChildren();
  renderRooms();
  renderMessages();
  pollMembers();
  $('text').focus();
}

// ---- rooms ----------------------------------------------------------------

function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function sendJoin(r) {
  r.joined = false;
  send(r.last ? { type: 'join', room: r.name, since: r.last } : { type: 'join', room: r.name });
}

function joinRoom(name) {
  if (!ROOM_RE.test(name)) { status(`invalid room name "${name}"`, 'error'); return; }
  if (!rooms.has(name)) {
    const r = addRoom(name);
    r.fresh = true;
    saveRoomList();
    if (welcomed) sendJoin(r);
  }
  switchTo(name);
}

function leaveRoom(name, tell = true) {
  if (name.startsWith('@')) { status(`${label(name)} is always joined`, 'info'); return; }
  if (!rooms.has(name)) return;
  if (tell && welcomed) send({ type: 'leave', room: name });
  rooms.delete(name);
  saveRoomList();
  store.del(key('last', name));
  store.del(key('log', name));
  if (current === name) switchTo(inbox); else renderRooms();
}

// ---- frames from the server ---------------------------------------------------

function onMessage(f) {
  const r = rooms.get(f.room);
  if (!r || typeof f.id !== 'string') return;
  if (r.last && cmpId(f.id, r.last) <= 0) return;   // already seen
  r.last = f.id;
  r.shown = f.id;
  store.set(key('last', r.name), f.id);
  pushLine(r, { kind: 'msg', id: f.id, from: String(f.from), body: f.body, ts: f.ts });
}

function onJoined(f) {
  const r = rooms.get(f.room);
  if (!r) return;
  r.joined = true;
  if (!r.last && serverOffset !== null) {
    // Nothing received yet: remember the join point (server time, with a margin)
    // so a later reconnect still resumes from here instead of from "now".
    r.last = `${Math.max(0, Date.now() + serverOffset - 2000)}-0`;
    store.set(key('last', r.name), r.last);
  }
  if (r.fresh) { note(r, `joined ${label(r.name)}`); r.fresh = false; }
  if (f.replayed > 0) note(r, `resumed ${f.replayed} missed message${f.replayed === 1 ? '' : 's'}`);
  if (f.recovered === false) {
    note(r, 'some messages were removed from history before they could be delivered', 'warn');
    status(`${label(r.name)}: some missed messages are lost for good`, 'warn');
  }
  renderRooms();
}

function onPublished(f) {
  const p = pending.get(f.client_id);
  if (!p) return;
  pending.delete(f.client_id);
  const fr = p.frame;
  if (fr.type === 'direct' && fr.to !== user) {
    pushLine(rooms.get(inbox), { kind: 'out', id: f.id, to: fr.to, body: fr.body, ts: Date.now() + (serverOffset || 0) });
  }
}

function onError(f) {
  const text = `${f.code || 'error'}: ${f.reason || ''}`;
  const p = f.ref != null ? pending.get(f.ref) : null;
  if (p) {
    if ((f.code === 'unavailable' || f.code === 'rate_limited') && ++p.tries <= 5) {
      status(`${text} (retrying)`, 'warn');
      setTimeout(() => { if (pending.has(f.ref) && welcomed) send(p.frame); }, 1000 * p.tries);
      return;
    }
    pending.delete(f.ref);
    status(`message not sent: ${text}`, 'error');
    return;
  }
  const r = typeof f.ref === 'string' ? rooms.get(f.ref) : null;
  if (r && !r.joined) {
    if (f.code === 'unavailable') setTimeout(() => { if (welcomed && rooms.get(r.name) === r) sendJoin(r); }, 2000);
    else if (f.code === 'invalid_room' || f.code === 'forbidden') leaveRoom(r.name, false);
  }
  status(text, 'error');
}

function onFrame(data) {
  let f;
  try { f = JSON.parse(data); } catch { return; }
  if (!f || typeof f !== 'object') return;
  switch (f.type) {
    case 'welcome':
      welcomed = true;
      upSince = Date.now();
      setConn('online', `online as ${f.user}`);
      $('conn').title = `instance ${f.instance}`;
      for (const r of rooms.values()) sendJoin(r);
      for (const p of pending.values()) send(p.frame);   // safe: same client_id
      renderRooms();
      pollUsers();
      break;
    case 'message': onMessage(f); break;
    case 'joined': onJoined(f); break;
    case 'published': onPublished(f); break;
    case 'error': onError(f); break;
    default: break;   // pong, left: nothing to do
  }
}

// ---- connection -------------------------------------------------------------

function connect() {
  retryTimer = 0;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const sock = new WebSocket(`${proto}//${location.host}/ws?user=${encodeURIComponent(user)}`);
  ws = sock;
  welcomed = false;
  lastRx = Date.now();
  setConn('connecting', attempt ? 'reconnecting…' : 'connecting…');
  sock.onmessage = (ev) => { if (sock === ws) { lastRx = Date.now(); onFrame(ev.data); } };
  sock.onclose = (ev) => { if (sock === ws) closed(ev.code, ev.reason); };
}

function closed(code, reason) {
  ws = null;
  welcomed = false;
  for (const r of rooms.values()) r.joined = false;
  renderRooms();
  if (code === 4401 || code === 4403) {
    fatal = true;
    const why = code === 4401 ? 'unauthorized' : 'origin not allowed';
    setConn('error', 'refused: ' + why);
    status(`connection refused (${code} ${why})`, 'error');
    return;
  }
  const wasUp = upSince > 0;
  if (wasUp && Date.now() - upSince > 10000) attempt = 0;
  upSince = 0;
  const cap = Math.min(30000, 500 * 2 ** attempt);
  attempt = Math.min(attempt + 1, 10);
  const delay = Math.round(cap / 2 + Math.random() * cap / 2);   // backoff with jitter
  setConn('reconnecting', `reconnecting in ${Math.ceil(delay / 1000)} s…`);
  if (wasUp) status(`connection lost (${code || 'no answer'}${reason ? ' ' + reason : ''})`, 'warn');
  retryTimer = setTimeout(connect, delay);
}

function retryNow() {
  if (!ws && retryTimer && !fatal) { clearTimeout(retryTimer); connect(); }
}

function tick() {
  const now = Date.now();
  // A socket that stays silent (no welcome, or no pong for two pings) is dead.
  if (ws && now - lastRx > (welcomed ? 2.5 * PING_MS : 15000)) {
    const sock = ws;
    closed(0, '');
    try { sock.close(); } catch { /* already closing */ }
  }
  for (const r of rooms.values()) {
    if (welcomed && r.joined && r.shown && r.shown !== r.acked && send({ type: 'ack', room: r.name, id: r.shown })) {
      r.acked = r.shown;
    }
  }
  saveLogs();
}

function saveLogs() {
  for (const r of rooms.values()) {
    if (r.dirty) { r.dirty = false; store.set(key('log', r.name), r.lines.slice(-CACHED_LINES)); }
  }
}

// ---- HTTP: presence and members --------------------------------------------

async function getJSON(path) {
  const res = await fetch(path, { cache: 'no-store' });
  const date = Date.parse(res.headers.get('date') || '');
  if (!Number.isNaN(date)) serverOffset = date + 500 - Date.now();   // Date has 1 s resolution
  if (!res.ok) throw new Error('HTTP ' + res.status);
  return res.json();
}

async function pollUsers() {
  try {
    const d = await getJSON(`/presence?user=${encodeURIComponent(user)}`);
    renderPeople($('users'), d.users);
  } catch { /* keep the last list; the connection state shows trouble */ }
}

async function pollMembers() {
  const room = current;
  try {
    const d = await getJSON(`/rooms/${encodeURIComponent(room)}/members?user=${encodeURIComponent(user)}`);
    if (room === current) renderPeople($('members'), d.members);
  } catch {
    if (room === current) $('members').replaceChildren(el('li', 'muted', 'unavailable'));
  }
}

// ---- input ------------------------------------------------------------------

function publish(frame) {
  if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME) {
    status('message too long', 'error');
    return false;
  }
  pending.set(frame.client_id, { frame, tries: 0 });
  if (!(welcomed && send(frame))) status('offline: the message will be sent after reconnecting', 'warn');
  return true;
}

const HELP = '/dm <user> <text>: direct message · /join <room> · /leave: leave this room · click a user to message them';

// Returns true when the input line was used up and can be cleared.
function submit(text) {
  if (!text.startsWith('/')) return publish({ type: 'publish', room: current, body: text, client_id: newClientId() });
  const m = /^\/(\w+)(?:\s+(\S+))?(?:\s+([\s\S]+))?$/.exec(text);
  const [cmd, arg, rest] = m ? [m[1], m[2], m[3]] : [];
  if (cmd === 'dm' || cmd === 'msg') {
    if (!arg || !USER_RE.test(arg) || arg === 'all') { status('usage: /dm <user> <text>', 'error'); return false; }
    if (!rest) { status('nothing to send', 'error'); return false; }
    return publish({ type: 'direct', to: arg, body: rest, client_id: newClientId() });
  }
  if (cmd === 'join' && arg) { joinRoom(arg.replace(/^#/, '')); return true; }
  if (cmd === 'leave') { leaveRoom(current); return true; }
  if (cmd === 'help') { note(rooms.get(current), HELP); return true; }
  status('unknown command; ' + HELP, 'error');
  return false;
}

function start() {
  $('name').oninput = () => $('name').setCustomValidity('');
  $('name-form').onsubmit = (e) => {
    e.preventDefault();
    const name = $('name').value.trim();
    if (!USER_RE.test(name) || name === 'all') {
      $('name').setCustomValidity('1–64 letters, digits or _ . : - (and not "all")');
      $('name').reportValidity();
      return;
    }
    if (name !== user) { store.set('user', name); location.reload(); }
  };
  if (typeof user !== 'string' || !USER_RE.test(user) || user === 'all') {
    document.body.classList.add('no-user');
    setConn('offline', 'pick a name');
    $('name').focus();
    return;
  }
  $('name').value = user;
  $('join-form').onsubmit = (e) => {
    e.preventDefault();
    const name = $('join-room').value.trim().replace(/^#/, '');
    if (ROOM_RE.test(name)) $('join-room').value = '';
    joinRoom(name);
  };
  $('leave').onclick = () => leaveRoom(current);
  $('composer').onsubmit = (e) => {
    e.preventDefault();
    const text = $('text').value.trim();
    if (text && submit(text)) $('text').value = '';
  };
  $('conn').onclick = retryNow;
  window.addEventListener('online', retryNow);
  window.addEventListener('pagehide', saveLogs);

  addRoom(inbox);
  addRoom('@all');
  for (const name of store.get(`rooms/${user}`, [])) if (ROOM_RE.test(name)) addRoom(name);
  const saved = store.get(`current/${user}`, inbox);
  switchTo(rooms.has(saved) ? saved : inbox);

  // Learn the server clock first (bounded wait), then connect.
  Promise.race([pollUsers(), new Promise((ok) => setTimeout(ok, 2000))]).then(connect);
  setInterval(() => { if (welcomed) send({ type: 'ping' }); }, PING_MS);
  setInterval(tick, 1000);
  setInterval(() => { if (!document.hidden) { pollUsers(); pollMembers(); } }, POLL_MS);
}

start();
