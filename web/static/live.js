// The Live page: the change feed (GET /v1/stream, Server-Sent Events, the
// session cookie) shown as it arrives. A relationship's row is updated in
// place, so scores on screen move without a reload. It resumes by itself
// (EventSource sends Last-Event-ID when it reconnects; after a cut-off the
// page reconnects from the position the server gave), and starts over from
// now after a reset (the changes it missed are older than the server keeps).
// Builds markup only through h (text, never HTML).

import { Unauthorized, get, seg } from './api.js';
import { delta, h, score, time } from './format.js';

/** Rows kept on screen, latest first. */
const ROWS = 100;

function causeOf(ctx, c) {
  if (c.cause.event !== undefined) {
    return h('a', { href: ctx.link(`/event/${seg(c.cause.event)}`) }, c.cause.event);
  }
  const p = c.cause.positions;
  return `events at log positions ${p.first}–${p.last}`;
}

export async function live(ctx) {
  const rows = new Map();
  const tbody = h('tbody', {});
  const status = h('p', { class: 'muted', id: 'live-status', role: 'status' }, 'Taking the first reading…');
  const none = h('p', { class: 'empty' },
    'No score has moved since the page opened. Scores move when events arrive: post some with ',
    h('code', {}, 'POST /v1/events'), ' or ', h('code', {}, 'fusion ingest FILE'), '.');
  const movedTable = h('table', { id: 'moved' },
    h('caption', {}, 'Relationships whose score moved, latest first'),
    h('thead', {}, h('tr', {}, ['Event time', 'Relationship', 'Kind', 'Now', 'Change', 'Cause'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody);
  movedTable.hidden = true;
  let source = null;
  let received = 0;
  let stopped = false;
  ctx.onStop(() => { stopped = true; if (source) source.close(); });

  function show(c) {
    const key = `${c.person}\u0000${c.brand}`;
    let row = rows.get(key);
    if (!row) {
      row = h('tr', { 'data-person': c.person, 'data-brand': c.brand });
      rows.set(key, row);
    }
    row.replaceChildren(
      h('td', {}, time(c.at)),
      h('td', {}, h('a', { href: ctx.link(`/rel/${seg(c.person)}/${seg(c.brand)}`) }, `${c.person} – ${c.brand}`)),
      h('td', {}, c.kind),
      h('td', { class: 'num', 'data-field': 'score' }, score(c.score)),
      h('td', { class: `num ${c.delta < 0 ? 'down' : 'up'}`, 'data-field': 'delta' }, delta(c.delta)),
      h('td', { 'data-field': 'cause' }, causeOf(ctx, c)));
    tbody.prepend(row);
    while (tbody.children.length > ROWS) {
      const gone = tbody.lastElementChild;
      rows.delete(`${gone.dataset.person}\u0000${gone.dataset.brand}`);
      gone.remove();
    }
    movedTable.hidden = false;
    none.hidden = true;
  }

  function watching(note) {
    status.textContent = `Watching the change feed · ${received} changes since the page opened${note ? ` · ${note}` : ''}`;
  }

  // `after`: the log position to resume after (a cut-off), or none.
  function connect(after) {
    if (stopped) return;
    const url = after === undefined ? '/v1/stream' : `/v1/stream?last_event_id=${encodeURIComponent(after)}`;
    source = new EventSource(url, { withCredentials: true });
    source.addEventListener('open', () => watching());
    source.addEventListener('change', (ev) => {
      received += 1;
      show(JSON.parse(ev.data));
      watching();
    });
    source.addEventListener('cutoff', (ev) => {
      // This page fell behind: resume from where the server says.
      source.close();
      const notice = JSON.parse(ev.data);
      watching('caught up after falling behind');
      connect(notice.position ?? undefined);
    });
    source.addEventListener('reset', () => {
      // The changes missed are older than the server keeps: start from now.
      source.close();
      rows.clear();
      tbody.replaceChildren();
      watching('some changes were too old to resume; showing changes from now on');
      connect();
    });
    source.addEventListener('error', async () => {
      if (stopped) return;
      if (source.readyState === EventSource.CONNECTING) {
        status.textContent = 'The change feed was interrupted; reconnecting…';
        return;
      }
      // Closed for good: the session may have ended.
      try {
        await get('/v1/brands?limit=1');
        status.textContent = 'The change feed closed; reconnecting…';
        setTimeout(() => connect(), 2000);
      } catch (e) {
        if (e instanceof Unauthorized) ctx.onSignedOut();
        else status.textContent = `The change feed is unavailable (${e.message}); reload to try again.`;
      }
    });
  }

  connect();
  return h('section', { class: 'live' },
    h('h1', {}, 'Live'),
    h('p', { class: 'note' }, 'Changes of at least half a point, as events arrive (the change feed, GET /v1/stream). Live shows scores now, whatever the date above.'),
    status, none, movedTable);
}
