// Demo chat page for streamgate (server run with AUTH_MODE=none), built on
// streamgate.js: rooms, direct messages, who is online, and resuming every
// room after a reconnect or a reload with exactly the messages missed.
// All user content goes into the page through textContent, never as HTML.

import { StreamgateClient } from './streamgate.js';
import { bodyJSON, bodyText } from './render.js';

const USER_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const MAX_LINES = 500;       // lines kept per room in memory
const CACHED_LINES = 100;    // lines kept per room in localStorage, shown again after a reload
const POLL_MS = 5000;
const BANNER_MS = 15000;     // how long "resumed N missed messages" stays up

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

// ---- state ------------------------------------------------------------------

const user = store.get('user', null);
const inbox = '@' + user;
const rooms = new Map();     // name -> { name, lines, unread, joined, fresh }
let current = null;
let client = null;
let bannerTimer = 0;

// localStorage keys: '/' cannot occur in user or room names, so keys never collide.
const logKey = (room) => `log/${user}/${room}`;

function addRoom(name) {
  if (!rooms.has(name)) {
    const lines = store.get(logKey(name), []);
    rooms.set(name, { name, lines: Array.isArray(lines) ? lines : [], unread: 0, joined: false, fresh: false });
  }
  return rooms.get(name);
}

function saveRoomList() {
  store.set(`rooms/${user}`, [...rooms.keys()].filter((n) => !n.startsWith('@')));
}

function saveLog(r) {
  store.set(logKey(r.name), r.lines.slice(-CACHED_LINES));
}

function label(name) {
  if (name === inbox) return `${name} (inbox)`;
  return name.startsWith('@') ? name : '#' + name;
}

// ---- rendering ----------------------------------------------------------------

function setConn(state, text, title = '') {
  const c = $('conn');
  c.className = 'conn ' + state;
  c.textContent = text;
  c.title = title;
}

function banner(text, level) {
  const b = $('banner');
  clearTimeout(bannerTimer);
  if (!text) { b.hidden = true; b.textContent = ''; return; }
  b.className = 'banner ' + level;
  b.textContent = text;
  b.hidden = false;
  if (level === 'ok') bannerTimer = setTimeout(() => banner(null), BANNER_MS);
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
  if (l.replayed) {
    li.classList.add('replayed');
    li.title = 'missed while away, delivered on resume';
  }
  if (l.id && l.kind !== 'out') li.dataset.id = l.id;
  const time = el('time', null, fmtTime(l.ts));
  if (l.id) time.title = 'id ' + l.id;
  const from = el('span', 'from', l.kind === 'out' ? '→ ' + l.to : l.from);
  const body = el('span', 'body', bodyText(l.body));
  const exact = bodyJSON(l.body);
  if (exact !== null) body.title = exact;
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
    b.dataset.room = r.name;
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
  if (r.name === current) appendLine(line);
  else if (line.kind !== 'note') { r.unread++; renderRooms(); }
  // Saved now, before the client moves the room's resume point past it, so a
  // reload shows every message that will not be replayed.
  saveLog(r);
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

// ---- rooms ------------------------------------------------------------------

function joinRoom(name) {
  if (!ROOM_RE.test(name)) { status(`invalid room name "${name}"`, 'error'); return; }
  if (!rooms.has(name)) {
    const r = addRoom(name);
    r.fresh = true;
    saveRoomList();
    subscribe(r);
  }
  switchTo(name);
}

function subscribe(r) {
  client.join(r.name).catch((err) => {
    if (rooms.get(r.name) !== r || err.code === 'left' || err.code === 'closed') return;
    status(`cannot join ${label(r.name)}: ${err.reason || err.message}`, 'error');
    if (!r.name.startsWith('@')) forget(r.name);
  });
}

function forget(name) {
  rooms.delete(name);
  saveRoomList();
  store.del(logKey(name));
  if (current === name) switchTo(inbox); else renderRooms();
}

function leaveRoom(name) {
  if (name.startsWith('@')) { status(`${label(name)} is always joined`, 'info'); return; }
  if (!rooms.has(name)) return;
  client.leave(name, { forget: true });
  forget(name);
}

// ---- client events --------------------------------------------------------------

function onState({ state, previous, delay, code, reason, user: who, instance }) {
  const conn = $('conn');
  if (state === 'open') {
    setConn('online', `online as ${who}`, `instance ${instance}`);
    conn.dataset.instance = instance || '';
    pollUsers();
  } else if (state === 'connecting') {
    setConn('connecting', 'connecting…');
  } else if (state === 'reconnecting') {
    delete conn.dataset.instance;
    const wait = delay > 1500 ? ` in ${Math.ceil(delay / 1000)} s` : '';
    setConn('reconnecting', `reconnecting${wait}…`, 'click to retry now');
    if (previous === 'open') {
      banner('Connection lost · reconnecting…', 'warn');
      status(`connection lost (${code || 'no answer'}${reason ? ' ' + reason : ''})`, 'warn');
    }
  } else if (state === 'closed') {
    setConn('error', `closed${reason ? ': ' + reason : ''}`);
    banner(null);
  }
  if (state !== 'open') for (const r of rooms.values()) r.joined = false;
  renderRooms();
}

function onMessage({ room, id, from, body, ts, replayed }) {
  const r = rooms.get(room);
  if (!r) return;
  pushLine(r, { kind: 'msg', id, from: String(from), body, ts, replayed });
}

function onJoined({ room, replayed }) {
  const r = rooms.get(room);
  if (!r) return;
  r.joined = true;
  if (r.fresh) { note(r, `joined ${label(r.name)}`); r.fresh = false; }
  if (replayed > 0) note(r, `resumed ${replayed} missed message${replayed === 1 ? '' : 's'}`);
  renderRooms();
  if (room === current) pollMembers();
}

function onResumed({ replayed, reconnect }) {
  if (replayed > 0) banner(`Resumed ${replayed} missed message${replayed === 1 ? '' : 's'}`, 'ok');
  else if (reconnect) banner('Reconnected · no messages missed', 'ok');
}

function onGap({ room }) {
  const r = rooms.get(room);
  if (r) note(r, 'some messages were removed from history before they could be delivered', 'warn');
  status(`${label(room)}: some missed messages are lost for good`, 'warn');
}

function onError({ code, reason, ref, fatal, retrying }) {
  if (fatal) { status(`connection refused: ${reason || code}`, 'error'); return; }
  if (retrying) { status(`${code}: ${reason} (retrying)`, 'warn'); return; }
  if (ref == null || !rooms.has(ref)) status(`${code}: ${reason}`, 'error');
}

// ---- HTTP: presence and members ------------------------------------------------

async function getJSON(path) {
  const res = await fetch(path, { cache: 'no-store' });
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

// ---- input ------------------------------------------------------------------------

function sent(promise, onId) {
  if (client.state !== 'open') status('offline: the message will be sent after reconnecting', 'warn');
  promise.then(onId, (err) => {
    if (err.code !== 'closed') status(`message not sent: ${err.reason || err.message}`, 'error');
  });
  return true;
}

const HELP = '/dm <user> <text>: direct message · /join <room> · /leave: leave this room · click a user to message them';

// Returns true when the input line was used up and can be cleared.
function submit(text) {
  if (!text.startsWith('/')) return sent(client.publish(current, text), () => {});
  const m = /^\/(\w+)(?:\s+(\S+))?(?:\s+([\s\S]+))?$/.exec(text);
  const [cmd, arg, rest] = m ? [m[1], m[2], m[3]] : [];
  if (cmd === 'dm' || cmd === 'msg') {
    if (!arg || !USER_RE.test(arg) || arg === 'all') { status('usage: /dm <user> <text>', 'error'); return false; }
    if (!rest) { status('nothing to send', 'error'); return false; }
    return sent(client.direct(arg, rest), (id) => {
      if (arg !== user) pushLine(rooms.get(inbox), { kind: 'out', id, to: arg, body: rest, ts: Date.now() });
    });
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

  client = new StreamgateClient({ user, autoAck: true });
  client.on('state', onState);
  client.on('message', onMessage);
  client.on('joined', onJoined);
  client.on('resumed', onResumed);
  client.on('gap', onGap);
  client.on('error', onError);
  $('conn').onclick = () => client.retryNow();

  addRoom(inbox);
  addRoom('@all');
  for (const name of store.get(`rooms/${user}`, [])) if (ROOM_RE.test(name)) addRoom(name);
  for (const r of rooms.values()) subscribe(r);
  const saved = store.get(`current/${user}`, inbox);
  switchTo(rooms.has(saved) ? saved : inbox);

  setInterval(() => { if (!document.hidden) { pollUsers(); pollMembers(); } }, POLL_MS);
}

start();
