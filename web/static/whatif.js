// The What-if page (issue 14): paste events (a JSON array, one object or
// NDJSON), or build one with the small form, run them through
// POST /v1/simulate and see the movers and the per-brand summary. Nothing is
// stored. Built with h (text only, never HTML), like every page.

import { ApiError, send } from './api.js';
import { count, delta, h, path, score, time } from './format.js';

const TYPES = ['post', 'mention', 'review', 'purchase'];

/** The events of the text box: a JSON array, one event, {events: [...]}, or NDJSON. */
export function parseEvents(text) {
  const t = text.trim();
  if (!t) return [];
  try {
    const v = JSON.parse(t);
    if (Array.isArray(v)) return v;
    if (v && Array.isArray(v.events)) return v.events;
    return [v];
  } catch {
    return t.split('\n').filter((l) => l.trim()).map((l, i) => {
      try {
        return JSON.parse(l);
      } catch {
        throw new Error(`line ${i + 1} is not JSON`);
      }
    });
  }
}

/** One event from the builder's fields (what the type uses of them). */
function built(f) {
  const type = f.type.value;
  const e = {
    id: `whatif-${Date.now().toString(36)}`,
    type,
    time: new Date().toISOString(),
    person: f.person.value.trim(),
    brand: f.brand.value.trim(),
  };
  if (type === 'purchase') {
    e.amount = Number(f.amount.value || 0);
    e.currency = 'USD';
  } else if (type === 'review') {
    e.rating = Number(f.rating.value || 3);
    if (f.text.value.trim()) e.text = f.text.value.trim();
  } else {
    e.text = f.text.value.trim();
  }
  return e;
}

function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

function reasons(mover) {
  const rel = mover.after_state;
  if (!rel) return h('span', { class: 'muted' }, 'no score after');
  const top = [...rel.contributions].sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta)).slice(0, 3);
  return h('span', { class: 'chips' }, top.map((c) => h('span', {
    class: `chip ${c.delta < 0 ? 'down' : 'up'}`,
    title: `${c.event}, ${time(c.time)}, via ${path(c.path)}`,
    'data-event': c.event,
  }, `${delta(c.delta)} ${c.type} ${c.event}`)));
}

function results(ctx, answer) {
  const movers = answer.movers;
  const moverTable = movers.length === 0
    ? h('p', { class: 'empty' }, `Nothing moves: ${count(answer.scored)} relationships scored, none changed.`)
    : h('table', {},
      h('caption', {}, `Top movers (${count(movers.length)} of ${count(answer.scored)} relationships scored)`),
      h('thead', {}, h('tr', {}, ['Person', 'Brand', 'Before', 'After', 'Delta', 'Reasons after'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, movers.map((m) => h('tr', { 'data-mover': `${m.person}/${m.brand}` },
        h('td', {}, h('a', { href: ctx.link(`/person/${encodeURIComponent(m.person)}`) }, m.person)),
        h('td', {}, h('a', { href: ctx.link(`/brand/${encodeURIComponent(m.brand)}`) }, m.brand)),
        h('td', { class: 'num' }, m.before === null ? '—' : score(m.before)),
        h('td', { class: 'num' }, m.after === null ? '—' : score(m.after)),
        h('td', { class: `num ${m.delta < 0 ? 'down' : 'up'}`, 'data-field': 'delta' }, delta(m.delta)),
        h('td', {}, reasons(m))))));
  const brandTable = answer.brands.length === 0 ? null : h('table', {},
    h('caption', {}, 'Per brand'),
    h('thead', {}, h('tr', {}, ['Brand', 'Moved', 'Mean delta', 'Up', 'Down'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, answer.brands.map((b) => h('tr', { 'data-brand': b.brand },
      h('td', {}, b.brand),
      h('td', { class: 'num' }, count(b.moved)),
      h('td', { class: 'num' }, delta(b.mean_delta, 2)),
      h('td', { class: 'num' }, count(b.up)),
      h('td', { class: 'num' }, count(b.down))))));
  return h('div', { class: 'results', 'data-field': 'whatif-results' },
    h('p', { class: 'muted' }, `Evaluated at ${time(answer.at)}; nothing was stored.`),
    moverTable, brandTable);
}

/** The What-if page. */
export async function whatif(ctx) {
  const box = h('textarea', {
    id: 'whatif-events', rows: 8, spellcheck: 'false',
    placeholder: '{"id":"w1","type":"post","time":"2026-11-14T10:00:00Z","person":"artist","brand":"bistro","text":"Great night!"}',
  });
  const out = h('div', { 'aria-live': 'polite' });
  const f = {
    type: h('select', { name: 'type' }, TYPES.map((t) => h('option', { value: t }, t))),
    person: h('input', { name: 'person', placeholder: 'artist', required: true }),
    brand: h('input', { name: 'brand', placeholder: 'bistro', required: true }),
    text: h('input', { name: 'text', placeholder: 'what they said' }),
    amount: h('input', { name: 'amount', type: 'number', min: 0, step: 'any', placeholder: 'purchase amount, USD' }),
    rating: h('input', { name: 'rating', type: 'number', min: 1, max: 5, placeholder: 'stars, 1 to 5' }),
  };
  const builder = h('form', {
    class: 'builder',
    onsubmit: (ev) => {
      ev.preventDefault();
      const lines = box.value.trim() ? `${box.value.trim()}\n` : '';
      box.value = `${lines}${JSON.stringify(built(f))}`;
    },
  }, h('fieldset', {}, h('legend', {}, 'Build an event'),
    field('Type', f.type), field('Person', f.person), field('Brand', f.brand),
    field('Text', f.text), field('Amount', f.amount), field('Rating', f.rating),
    h('button', { type: 'submit' }, 'Add event')));
  const run = async (ev) => {
    ev.preventDefault();
    let events;
    try {
      events = parseEvents(box.value);
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
      return;
    }
    if (events.length === 0) {
      out.replaceChildren(h('p', { class: 'empty' }, 'No events yet: paste some above, or build one.'));
      return;
    }
    out.replaceChildren(h('p', { class: 'muted' }, 'Simulating…'));
    try {
      const answer = await send('POST', '/v1/simulate', { events, at: ctx.apiAt });
      out.replaceChildren(results(ctx, answer));
    } catch (e) {
      const status = e instanceof ApiError ? ` (${e.status})` : '';
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Refused${status}: ${e.message}`));
    }
  };
  return h('section', { class: 'card whatif' },
    h('h1', {}, 'What if'),
    h('p', { class: 'muted' }, 'Events you paste or build here are scored against the live state and shown as the changes they would cause. Nothing is stored.'),
    h('form', { onsubmit: run },
      h('label', { for: 'whatif-events' }, 'Events: a JSON array, one event, or NDJSON (the format of POST /v1/events)'),
      box,
      h('button', { type: 'submit', id: 'whatif-run' }, 'Run')),
    builder,
    out);
}
