// The browser SDK's in-band token refresh against a real instance in
// AUTH_MODE=jwt behind nginx, under node:
//
//   STREAMGATE_LIVE_URL=ws://127.0.0.1:8080/ws STREAMGATE_LIVE_SECRET=... \
//     node --experimental-websocket --test tests/browser/sdk_refresh_live.mjs
//
// Skipped without those variables (or without a WebSocket in this node).
// tests/browser/test_client_js_live.py starts the instance and nginx, runs
// this, and then checks that no token reached nginx's access log or the
// instance's log (the tokens used are written to STREAMGATE_LIVE_TOKENS_OUT).
// It lives here, not in client/js/test/, because it needs a jwt instance and
// its secret, which the package's own live tests (AUTH_MODE=none) do not.
//
// A token that expires 3 s after connecting is refreshed in band: the
// connection outlives it with no reconnect and no second `joined`, and the
// messages keep coming with continuous ids.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';

import { StreamgateClient } from '../../client/js/streamgate.js';

const URL_ = process.env.STREAMGATE_LIVE_URL;
const SECRET = process.env.STREAMGATE_LIVE_SECRET;
const skip = !URL_ || !SECRET ? 'STREAMGATE_LIVE_URL and STREAMGATE_LIVE_SECRET not set'
  : typeof globalThis.WebSocket !== 'function' ? 'no WebSocket in this node (use --experimental-websocket)' : false;
const LEEWAY_S = 5;   // the server's clock leeway for the expiry close
const used = [];

function sign(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const token = `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
  used.push(token);
  return token;
}

async function until(predicate, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 10));
  }
}

test('the token is refreshed in band and the room keeps flowing', { skip, timeout: 60000 }, async () => {
  const tag = randomUUID().slice(0, 8);
  const user = `js-${tag}`;
  const room = `js-room-${tag}`;
  const firstExp = Math.floor(Date.now() / 1000) + 3;
  let asked = 0;
  const sub = new StreamgateClient({
    url: URL_, storage: null,
    tokenProvider: () => sign({ sub: user, exp: asked++ === 0 ? firstExp : firstExp + 3600 }),
  });
  const pub = new StreamgateClient({ url: URL_, storage: null, token: sign({ sub: `pub-${tag}`, exp: firstExp + 3600 }) });
  const seen = { message: [], joined: [], state: [], refreshed: [] };
  for (const type of Object.keys(seen)) sub.on(type, (d) => seen[type].push(d));
  try {
    await sub.join(room, { since: '$' });
    const sent = [await pub.publish(room, 'before')];
    await until(() => seen.message.length === 1, 'the first message');
    await until(() => seen.refreshed.length >= 1, 'the refresh', 6000);
    assert.ok(seen.refreshed[0].exp >= firstExp + 3000);
    // Past the first token's expiry and the server's leeway: still the same connection.
    while (Date.now() / 1000 < firstExp + LEEWAY_S + 1) {
      sent.push(await pub.publish(room, `n${sent.length}`));
      await until(() => seen.message.length === sent.length, `message ${sent.length}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
    assert.deepEqual(seen.message.map((m) => m.id), sent);
    assert.equal(seen.joined.length, 1, 'joined once: no rejoin, no replay');
    assert.deepEqual(seen.state.map((s) => s.state), ['connecting', 'open']);

    const latest = await sub.history(room, { before: '$', limit: 2 });
    assert.deepEqual(latest.messages.map((m) => m.id), sent.slice(-2));
    assert.ok((await sub.presence()).includes(user));
    assert.ok((await sub.members(room)).includes(user));
  } finally {
    sub.close();
    pub.close();
    if (process.env.STREAMGATE_LIVE_TOKENS_OUT) writeFileSync(process.env.STREAMGATE_LIVE_TOKENS_OUT, used.join('\n'));
  }
});
