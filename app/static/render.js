// How a message body reads in the demo chat: pure, no DOM, so node can test it
// (tests/browser/render.test.mjs) and the page shows exactly what it tests.
//
// A body is any JSON value. The examples in the README and both SDKs send
// {"text": "..."}; plain clients send a string. Both read as chat text. Any
// other value gets a readable line (`key: value, ...`) instead of raw JSON;
// the page keeps the exact JSON in the line's tooltip (bodyJSON).

const MAX_DEPTH = 3;   // deeper than this, a value is shown as compact JSON

export function bodyText(body) {
  if (typeof body === 'string') return body;
  if (isPlainObject(body) && typeof body.text === 'string') return body.text;
  return readable(body, 0);
}

// The exact body, for a tooltip; null when the text already is the body.
export function bodyJSON(body) {
  return typeof body === 'string' ? null : JSON.stringify(body);
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function readable(v, depth) {
  if (v === null) return depth ? 'null' : '(empty)';
  if (typeof v === 'string') return v;
  if (typeof v !== 'object') return String(v);
  if (depth >= MAX_DEPTH) return JSON.stringify(v);
  if (Array.isArray(v)) {
    const items = v.map((x) => readable(x, depth + 1)).join(', ');
    return depth ? `[${items}]` : (items || '(empty list)');
  }
  const entries = Object.entries(v).map(([k, x]) => `${k}: ${readable(x, depth + 1)}`).join(', ');
  return depth ? `{${entries}}` : (entries || '(empty object)');
}
