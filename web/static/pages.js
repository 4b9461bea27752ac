// The pages. Each takes the route's context and answers an element built
// from what the API answered (get), through h (text only, never HTML).

import { ApiError, Unauthorized, get, query, seg } from './api.js';
import { count, cut, delta, h, one, path, percent, score, time } from './format.js';

/** "as of …" for a page's heading. */
function asOf(ctx, iso) {
  return h('p', { class: 'muted as-of-line' }, ctx.at ? `as of ${time(iso)} (the start of that day, UTC)` : `now: ${time(iso)}`);
}

function tile(label, value, field) {
  return h('div', { class: 'tile' }, h('span', { class: 'label' }, label), h('span', { class: 'value', 'data-field': field }, value));
}

function table(headers, rows, caption) {
  return h(
    'table',
    {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows),
  );
}

function empty(text, ...more) {
  return h('p', { class: 'empty' }, text, ...more);
}

// A function: a node is in one place at a time, and two empty states may share a page.
const postSome = () => ['post some with ', h('code', {}, 'fusion ingest FILE'), ' or ', h('code', {}, 'POST /v1/events'), ', or start with ', h('code', {}, 'fusion serve --demo'), '.'];

/** An error answer as a page. */
export function failure(e) {
  const status = e instanceof ApiError ? ` (${e.status})` : '';
  return h('section', { class: 'card' }, h('h1', {}, `Could not load this page${status}`), h('p', { class: 'error' }, e.message));
}

export async function notFound(ctx) {
  return h('section', { class: 'card' }, h('h1', {}, 'No such page'), h('p', {}, h('a', { href: ctx.link('/') }, 'Back to the brands')));
}

// ---- Brands ---------------------------------------------------------------

export async function brands(ctx) {
  const q = ctx.params.get('q') || '';
  const { body } = await get(`/v1/brands${query({ q, at: ctx.apiAt, limit: 1000 })}`);
  const input = h('input', { type: 'search', id: 'brand-search', name: 'q', value: q, placeholder: 'id or name', autocomplete: 'off' });
  const form = h(
    'form',
    { class: 'search', role: 'search', onsubmit: (ev) => { ev.preventDefault(); ctx.setParam('q', input.value.trim() || null); } },
    h('label', { for: 'brand-search' }, 'Search brands'),
    input,
    h('button', { type: 'submit' }, 'Search'),
  );
  let list;
  if (body.items.length === 0) {
    list = q
      ? empty(`No brand matches “${q}”: search part of an id or a name, or `, h('a', { href: ctx.link('/') }, 'show every brand'), '.')
      : empty('No brands yet: ', ...postSome());
  } else {
    list = table(
      ['Brand', 'Relationships', 'Mean score'],
      body.items.map((b) => h('tr', { 'data-brand': b.id },
        h('td', {}, h('a', { href: ctx.link(`/brand/${seg(b.id)}`) }, b.name ? `${b.name} (${b.id})` : b.id)),
        h('td', { class: 'num' }, count(b.relationships)),
        h('td', { class: 'num', 'data-field': 'mean' }, score(b.mean_score)))),
      body.total > body.items.length ? `${body.items.length} of ${body.total} brands` : `${body.total} brands`,
    );
  }
  if (q) queueMicrotask(() => input.focus());
  return h('section', {}, h('h1', {}, 'Brands'), asOf(ctx, body.as_of), form, list);
}

// ---- Brand overview -------------------------------------------------------

/** Reason chips of one relationship: its largest contributions, with text. */
async function chips(ctx, person, brand) {
  let rel;
  try {
    rel = (await get(`/v1/relationships/${seg(person)}/${seg(brand)}${query({ at: ctx.apiAt })}`)).body;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return h('span', { class: 'muted' }, 'no reasons');
    throw e;
  }
  const top = [...rel.contributions].sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta)).slice(0, 3);
  const events = await Promise.all(top.map((c) => get(`/v1/events/${seg(c.event)}`).then((r) => r.body, () => null)));
  return h('span', { class: 'chips' }, top.map((c, i) => {
    const text = events[i] && events[i].text ? `: “${cut(events[i].text)}”` : '';
    return h('a', {
      class: `chip ${c.delta < 0 ? 'down' : 'up'}`,
      href: ctx.link(`/event/${seg(c.event)}`),
      title: `${c.event}, ${time(c.time)}, via ${path(c.path)}`,
      'data-event': c.event,
    }, `${delta(c.delta)} ${c.type}${text}`);
  }));
}

async function ranked(ctx, brand, items, caption) {
  if (items.length === 0) return empty(`No ${caption.toLowerCase()} yet: `, ...postSome());
  const reasons = await Promise.all(items.map((r) => chips(ctx, r.person, brand)));
  return table(['Person', 'Score', '7 days', 'Top reasons'], items.map((r, i) => h('tr', { 'data-person': r.person },
    h('td', {}, h('a', { href: ctx.link(`/rel/${seg(r.person)}/${seg(brand)}`) }, r.person)),
    h('td', { class: 'num', 'data-field': 'score' }, score(r.score)),
    h('td', { class: 'num' }, delta(r.trend.d7)),
    h('td', {}, reasons[i]))), caption);
}

function histogram(bins) {
  const most = Math.max(1, ...bins.map((b) => b.count));
  return h('div', { class: 'histogram', role: 'img', 'aria-label': bins.map((b) => `${b.from}–${b.to}: ${b.count}`).join(', ') },
    bins.map((b) => {
      const bar = h('span', { class: 'bar' });
      bar.style.height = `${(8 * b.count) / most}rem`;
      return h('div', { class: 'bin', title: `${b.from}–${b.to}: ${b.count}` }, h('span', { class: 'n' }, String(b.count)), bar, h('span', { class: 'x' }, String(b.from)));
    }));
}

function mean(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

function seconds(s) {
  if (s === null || s === undefined) return '–';
  return s >= 90 ? `${(s / 60).toFixed(1)} min` : `${Math.round(s)} s`;
}

export async function brand(ctx) {
  const id = ctx.args[0];
  const b = seg(id);
  const at = ctx.apiAt;
  const [summary, all, advocates, atRisk] = await Promise.all([
    get(`/v1/brands/${b}${query({ at })}`),
    get(`/v1/brands/${b}/relationships${query({ limit: 1000, at })}`),
    get(`/v1/brands/${b}/relationships${query({ sort: '-score', limit: 5, at })}`),
    get(`/v1/brands/${b}/relationships${query({ sort: 'trend7d', limit: 5, at })}`),
  ]).then((rs) => rs.map((r) => r.body));
  const s = summary.scores;
  const items = all.items;
  const title = summary.name ? `${summary.name} (${summary.brand})` : summary.brand;
  const head = [h('h1', {}, title), asOf(ctx, summary.as_of)];
  if (summary.relationships === 0) {
    return h('section', {}, head, empty(`No relationships with ${summary.brand} yet: `, ...postSome()));
  }
  const sv = summary.service;
  return h('section', { class: 'brand' }, head,
    h('div', { class: 'tiles' },
      tile('Relationships', count(summary.relationships), 'relationships'),
      tile('Mean score', score(s.mean), 'mean'),
      tile('Median', score(s.p50), 'p50'),
      tile('Advocates (60+)', count(s.advocates), 'advocates'),
      tile('At risk (under 40)', count(s.at_risk), 'at_risk')),
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, h('h2', {}, 'Score distribution'), histogram(s.histogram),
        h('p', { class: 'muted' }, `10th percentile ${score(s.p10)} · median ${score(s.p50)} · 90th percentile ${score(s.p90)}`)),
      h('section', { class: 'card' }, h('h2', {}, 'Trend'), h('p', { class: 'muted' }, 'Mean change of the relationships’ scores'),
        h('div', { class: 'tiles' },
          tile('1 day', delta(mean(items.map((r) => r.trend.d1))), 'trend_d1'),
          tile('7 days', delta(mean(items.map((r) => r.trend.d7))), 'trend_d7'),
          tile('30 days', delta(mean(items.map((r) => r.trend.d30))), 'trend_d30'))),
      h('section', { class: 'card' }, h('h2', {}, 'Service'),
        sv.contacts === 0 ? empty('No service contacts yet: post ', h('code', {}, 'service'), ' events (csat, effort, resolved, wait_seconds, transfers) with ', h('code', {}, 'POST /v1/events'), '.') : h('dl', { class: 'kpis' },
          h('dt', {}, 'Contacts'), h('dd', { 'data-field': 'contacts' }, count(sv.contacts)),
          h('dt', {}, 'CSAT (1–5)'), h('dd', { 'data-field': 'csat' }, one(sv.csat)),
          h('dt', {}, 'Customer effort (1–7, lower is better)'), h('dd', { 'data-field': 'effort' }, one(sv.customer_effort)),
          h('dt', {}, 'Resolved'), h('dd', { 'data-field': 'resolution' }, percent(sv.resolution_rate)),
          h('dt', {}, 'First-contact resolution'), h('dd', { 'data-field': 'fcr' }, percent(sv.first_contact_resolution)),
          h('dt', {}, 'Wait, mean / longest'), h('dd', { 'data-field': 'wait' }, `${seconds(sv.wait_seconds_mean)} / ${seconds(sv.wait_seconds_max)}`),
          h('dt', {}, 'Transfers per contact'), h('dd', { 'data-field': 'transfers' }, one(sv.transfers_per_contact)))),
      h('section', { class: 'card' }, h('h2', {}, 'Sales and reviews'),
        h('dl', { class: 'kpis' },
          h('dt', {}, 'Purchases'), h('dd', { 'data-field': 'purchases' }, count(summary.sales.purchases)),
          h('dt', {}, 'Purchase amount'), h('dd', { 'data-field': 'amount' }, count(summary.sales.purchase_amount)),
          h('dt', {}, 'Reported sales'), h('dd', { 'data-field': 'reported' }, count(summary.sales.reported_sales)),
          h('dt', {}, 'Reviews'), h('dd', { 'data-field': 'reviews' }, count(summary.reviews.count)),
          h('dt', {}, 'Mean rating (1–5)'), h('dd', { 'data-field': 'rating' }, one(summary.reviews.mean_rating))))),
    h('p', { class: 'muted' }, 'Service, sales and review figures count every event the brand has, whatever the date.'),
    occasions(ctx, id),
    h('section', { class: 'card', id: 'advocates' }, h('h2', {}, 'Top advocates'), await ranked(ctx, id, advocates.items, 'Advocates')),
    h('section', { class: 'card', id: 'at-risk' }, h('h2', {}, 'At risk (falling fastest over 7 days)'), await ranked(ctx, id, atRisk.items, 'At-risk relationships')));
}

/** Occasions shown: the brand's latest, each one impact estimate. */
const OCCASIONS = 3;

/**
 * The brand's latest occasions (in its newest 1000 events, up to `at`)
 * and their measured effect (GET /v1/brands/{brand}/impact). Filled in
 * after the page is on screen: an estimate is a bootstrap.
 */
function occasions(ctx, brand) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Measuring…'));
  const card = h('section', { class: 'card', id: 'occasions' }, h('h2', {}, 'Occasions and their effect'), body);
  const until = ctx.apiAt ? Date.parse(ctx.apiAt) : Date.now();
  (async () => {
    const events = (await get(`/v1/entities/${seg(brand)}/events${query({ limit: 1000 })}`)).body.items;
    const held = events.filter((e) => e.type === 'occasion' && Date.parse(e.time) < until).slice(0, OCCASIONS);
    if (held.length === 0) {
      body.replaceChildren(empty('No occasion in the brand’s latest 1,000 events: post an ', h('code', {}, 'occasion'),
        ' event and its ', h('code', {}, 'attendance'), ' events with ', h('code', {}, 'POST /v1/events'), '.'));
      return;
    }
    const measured = await Promise.all(held.map((e) => get(`/v1/brands/${seg(brand)}/impact${query({ occasion: e.occasion, at: ctx.apiAt })}`)
      .then((r) => r.body, (err) => ({ failed: err.message }))));
    body.replaceChildren(table(['Occasion', 'When', 'Reached', 'Effect on the score'], held.map((e, i) => {
      const m = measured[i];
      const name = e.attributes && e.attributes.name ? `${e.attributes.name} (${e.occasion})` : e.occasion;
      let effect;
      if (m.failed) effect = h('span', { class: 'error' }, m.failed);
      else if (m.estimate) effect = `${delta(m.estimate.points.effect)} points (95%: ${delta(m.estimate.points.ci95[0])} to ${delta(m.estimate.points.ci95[1])})`;
      else effect = `no estimate (too few people to compare); the brand’s mean score went ${score(m.brand_level.mean_score_before)} → ${score(m.brand_level.mean_score_after)}`;
      return h('tr', { 'data-occasion': e.occasion },
        h('td', {}, h('a', { href: ctx.link(`/event/${seg(e.id)}`) }, name)),
        h('td', {}, time(e.time)),
        h('td', { class: 'num', 'data-field': 'reached' }, m.groups ? count(m.groups.reached) : '–'),
        h('td', { 'data-field': 'effect' }, effect));
    })));
  })().catch((err) => body.replaceChildren(h('p', { class: 'error' }, `Could not measure: ${err.message}`)));
  return card;
}

// ---- Relationship ---------------------------------------------------------

const DAY = 86400;
const WINDOW_DAYS = 60;

function chart(series, marks) {
  const box = h('div', { class: 'chart', role: 'img', 'data-marks': marks.length, 'aria-label': `Score history, ${series.length} days; dashed lines mark the ${marks.length} events behind it` });
  if (typeof uPlot === 'undefined' || series.length < 2) return box;
  const xs = series.map((p) => Date.parse(p.time) / 1000);
  const ys = series.map((p) => p.score);
  const markers = {
    hooks: {
      draw: [(u) => {
        const c = u.ctx;
        c.save();
        c.strokeStyle = '#b45309';
        c.setLineDash([4, 3]);
        c.lineWidth = 1.5;
        for (const t of marks) {
          const x = Math.round(u.valToPos(t, 'x', true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          c.beginPath();
          c.moveTo(x, u.bbox.top);
          c.lineTo(x, u.bbox.top + u.bbox.height);
          c.stroke();
        }
        c.restore();
      }],
    },
  };
  const draw = () => {
    const width = Math.max(280, box.clientWidth || 600);
    new uPlot({
      width,
      height: 240,
      plugins: [markers],
      scales: { y: { range: (u, lo, hi) => [Math.min(40, Math.floor(lo) - 1), Math.max(60, Math.ceil(hi) + 1)] } },
      series: [{}, { label: 'Score', stroke: '#1d4ed8', width: 2, value: (u, v) => (v === null ? '–' : v.toFixed(1)) }],
      axes: [{}, { label: 'score' }],
    }, [xs, ys], box);
  };
  // Drawn once the box is in the page (its width is known then).
  requestAnimationFrame(draw);
  return box;
}

export async function relationship(ctx) {
  const [person, brandId] = ctx.args;
  const p = seg(person);
  const b = seg(brandId);
  let rel;
  try {
    rel = (await get(`/v1/relationships/${p}/${b}${query({ at: ctx.apiAt })}`)).body;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      return h('section', {}, h('h1', {}, `${person} – ${brandId}`),
        empty(`No relationship between ${person} and ${brandId}${ctx.at ? ` as of ${ctx.at}` : ''}: `, ...postSome()));
    }
    throw e;
  }
  const to = new Date(rel.as_of);
  const from = new Date(to.getTime() - WINDOW_DAYS * DAY * 1000);
  const span = query({ from: from.toISOString(), to: to.toISOString(), step: '1d' });
  const [series, behind] = await Promise.all([
    get(`/v1/relationships/${p}/${b}/history${span}`),
    get(`/v1/relationships/${p}/${b}/history/events${span}`),
  ]).then((rs) => rs.map((r) => r.body));
  // Every event behind a point of the series, not only today's reasons:
  // one that has since decayed out of them still moved the line.
  const marks = behind.events.map((e) => Date.parse(e.time) / 1000).filter((t) => t >= from / 1000);
  const slider = h('input', { type: 'range', id: 'slider', min: 0, max: WINDOW_DAYS, step: 1, value: WINDOW_DAYS, 'aria-describedby': 'slider-value' });
  const sliderValue = h('output', { id: 'slider-value', for: 'slider' }, `${to.toISOString().slice(0, 10)}`);
  const dayOf = () => new Date(to.getTime() - (WINDOW_DAYS - Number(slider.value)) * DAY * 1000).toISOString().slice(0, 10);
  slider.addEventListener('input', () => { sliderValue.textContent = dayOf(); });
  slider.addEventListener('change', () => ctx.setParam('at', dayOf()));
  const comp = Object.entries(rel.components);
  const contributions = [...rel.contributions].sort((a, b2) => Math.abs(b2.delta) - Math.abs(a.delta));
  return h('section', { class: 'relationship' },
    h('h1', {}, h('a', { href: ctx.link(`/person/${p}`) }, person), ' – ', h('a', { href: ctx.link(`/brand/${b}`) }, brandId)),
    asOf(ctx, rel.as_of),
    h('div', { class: 'tiles' },
      tile('Fusion Score', score(rel.score), 'score'),
      tile('1 day', delta(rel.trend.d1), 'd1'),
      tile('7 days', delta(rel.trend.d7), 'd7'),
      tile('30 days', delta(rel.trend.d30), 'd30'),
      tile('Events', count(rel.event_count), 'events')),
    h('section', { class: 'card' }, h('h2', {}, `Score over ${WINDOW_DAYS} days`), chart(series, marks),
      h('div', { class: 'slider' }, h('label', { for: 'slider' }, 'As of'), slider, sliderValue)),
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, h('h2', {}, 'Components'),
        table(['Component', 'Value'], comp.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'num', 'data-component': k }, delta(v, 3)))))),
      h('section', { class: 'card wide' }, h('h2', {}, 'Why: the events behind the score'),
        contributions.length === 0 ? empty('No event counts as of this date: pick a later one above, or ', ...postSome()) : table(['Points', 'Event', 'When', 'Path'], contributions.map((c) => h('tr', { 'data-event': c.event },
          h('td', { class: `num ${c.delta < 0 ? 'down' : 'up'}`, 'data-field': 'delta' }, delta(c.delta)),
          h('td', {}, h('a', { href: ctx.link(`/event/${seg(c.event)}`) }, `${c.type} ${c.event}`)),
          h('td', {}, time(c.time)),
          h('td', { class: 'path' }, path(c.path))))))));
}

// ---- Person 360° ----------------------------------------------------------

function describe(e) {
  const bits = [];
  if (e.brand) bits.push(`at ${e.brand}`);
  if (e.target) bits.push(`→ ${e.target}`);
  if (e.amount !== undefined) bits.push(`${count(e.amount)}${e.currency ? ` ${e.currency}` : ''}`);
  if (e.rating !== undefined) bits.push(`rating ${e.rating}`);
  if (e.csat !== undefined) bits.push(`CSAT ${e.csat}`);
  if (e.followers !== undefined) bits.push(`${count(e.followers)} followers`);
  if (e.text) bits.push(`“${cut(e.text, 80)}”`);
  return bits.join(' · ');
}

/** A list of people as links, with how many there are in all. */
function people(ctx, label, list, total, field) {
  const link = (f) => h('a', { href: ctx.link(`/person/${seg(f.id)}`), 'data-person': f.id }, f.id);
  const items = list.map((f, i) => [i ? ', ' : '', link(f)]);
  const more = total > list.length ? ` and ${count(total - list.length)} more` : '';
  return h('p', {}, `${label} `, h('strong', { 'data-field': field }, count(total)), total ? ': ' : ' nobody', items, more);
}

export async function person(ctx) {
  const id = ctx.args[0];
  const p = seg(id);
  const view = (await get(`/v1/entities/${p}${query({ at: ctx.apiAt })}`)).body;
  if (view.kind === 'brand') {
    location.replace(ctx.link(`/brand/${p}`));
    return h('p', {}, 'A brand: opening its page…');
  }
  const [timeline, follows] = await Promise.all([
    get(`/v1/entities/${p}/events${query({ limit: 1000 })}`).then((r) => r.body.items),
    get(`/v1/entities/${p}/followers${query({ at: ctx.apiAt, limit: 1000 })}`).then((r) => r.body),
  ]);
  const cutoff = ctx.apiAt ? Date.parse(ctx.apiAt) : Infinity;
  const events = timeline.filter((e) => Date.parse(e.time) <= cutoff);
  const rels = [...view.relationships].sort((a, b) => b.score - a.score);
  return h('section', { class: 'person' },
    h('h1', {}, view.name ? `${view.name} (${view.id})` : view.id),
    asOf(ctx, view.as_of),
    h('div', { class: 'tiles' },
      tile('Kind', view.kind, 'kind'),
      tile('Followers', count(view.followers), 'followers'),
      tile('Brands', count(rels.length), 'brands'),
      tile('Events', count(view.event_count), 'event_count')),
    view.interests.length ? h('p', {}, 'Interests: ', view.interests.join(', ')) : null,
    h('div', { class: 'grid' },
      h('section', { class: 'card', id: 'followers' }, h('h2', {}, 'Influence'),
        people(ctx, 'Followed in Fusion by', follows.followers, follows.followers_total, 'followers_total'),
        people(ctx, 'Follows', follows.follows, follows.follows_total, 'follows_total')),
      h('section', { class: 'card' }, h('h2', {}, 'Brands'),
        rels.length === 0 ? empty('No relationships yet: one starts with their first purchase, post, review or service event; ', ...postSome()) : table(['Brand', 'Score'], rels.map((r) => h('tr', { 'data-brand': r.brand },
          h('td', {}, h('a', { href: ctx.link(`/rel/${p}/${seg(r.brand)}`) }, r.brand)),
          h('td', { class: 'num', 'data-field': 'score' }, score(r.score)))))),
      h('section', { class: 'card wide' }, h('h2', {}, 'Timeline, across channels'),
        events.length === 0 ? empty('No events yet: ', ...postSome()) : table(['When', 'Event', 'Channel', 'What'], events.map((e) => h('tr', { 'data-event': e.id },
          h('td', {}, time(e.time)),
          h('td', {}, h('a', { href: ctx.link(`/event/${seg(e.id)}`) }, `${e.type} ${e.id}`)),
          h('td', {}, e.channel || '–'),
          h('td', {}, describe(e))))))));
}

// ---- One event --------------------------------------------------------------

export async function event(ctx) {
  const id = ctx.args[0];
  const e = (await get(`/v1/events/${seg(id)}`)).body;
  const rows = Object.entries(e).map(([k, v]) => {
    let value = typeof v === 'object' ? JSON.stringify(v) : String(v);
    if (k === 'time') value = `${time(v)} (${v})`;
    let cell = value;
    if ((k === 'person' || k === 'target') && typeof v === 'string') cell = h('a', { href: ctx.link(`/person/${seg(v)}`) }, v);
    if (k === 'brand' && typeof v === 'string') cell = h('a', { href: ctx.link(`/brand/${seg(v)}`) }, v);
    return [h('dt', {}, k), h('dd', { 'data-key': k }, cell)];
  });
  return h('section', { class: 'event' }, h('h1', {}, `${e.type} ${e.id}`), h('section', { class: 'card' }, h('dl', { class: 'kpis' }, rows)));
}

// ---- Live -----------------------------------------------------------------

// On the change feed: live.js.
export { live } from './live.js';
