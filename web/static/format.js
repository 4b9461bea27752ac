// Numbers and times for people, and the one way markup is built (h), which
// sets text, never HTML: whatever came from a pipeline is escaped by
// construction.

const MINUS = '\u2212';

/** A score: 67.7. */
export function score(x) {
  return x === null || x === undefined ? '–' : x.toFixed(1);
}

/** A signed change in points: +3.0, −7.9. */
export function delta(x, digits = 1) {
  if (x === null || x === undefined) return '–';
  const s = Math.abs(x).toFixed(digits);
  if (Number(s) === 0) return s;
  return (x < 0 ? MINUS : '+') + s;
}

/** A plain number with grouping: 100,000. */
export function count(x) {
  return x === null || x === undefined ? '–' : Number(x).toLocaleString('en-US', { maximumFractionDigits: 2 });
}

/** A share as a percentage: 75%. */
export function percent(x) {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(0)}%`;
}

/** A number with one decimal, or a dash. */
export function one(x) {
  return x === null || x === undefined ? '–' : Number(x).toFixed(1);
}

// dateStyle/timeStyle cannot be combined with timeZoneName: fields instead.
const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  timeZoneName: 'short',
});

/** A time in the viewer's zone, with the zone shown. */
export function time(iso) {
  return iso ? timeFormat.format(new Date(iso)) : '–';
}

/** The viewer's time zone, as the browser names it. */
export function zone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** `person:fan1 > brand:bistro` parts as "fan1 → bistro". */
export function path(parts) {
  return parts.map((p) => p.replace(/^(person|brand):/, '')).join(' \u2192 ');
}

/** Text cut to `n` characters with an ellipsis. */
export function cut(text, n = 40) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/**
 * An element: h('a', { href: '#/' , class: 'x'}, 'text', child...). Strings
 * become text nodes; attributes are set with setAttribute (never innerHTML);
 * `on*` functions become listeners.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
