// The dashboard's shell: hash routing (`#/brand/bistro?at=2026-11-13`), the
// "as of" date in the URL, sign-in when the service asks for a key, and
// handing each route to its page (pages.js). A rendered page marks <main>
// with `data-route` (the hash it shows), so a reader (a test, a screen
// reader's script) can tell a finished page from the one before it.

import { Unauthorized, get, signIn } from './api.js';
import { h, zone } from './format.js';
import * as pages from './pages.js';
import { whatif } from './whatif.js';

const main = document.getElementById('main');
const atInput = document.getElementById('at');
let stopPage = null;
let rendering = 0;

/** The route: path segments and query parameters of the hash. */
export function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, q = ''] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(q) };
}

/** A link to `path` that keeps the page's `at` (and adds `extra`). */
export function link(path, extra = {}) {
  const q = new URLSearchParams();
  const at = route().params.get('at');
  if (at) q.set('at', at);
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

/** Sets (or, with null, removes) a parameter of the current route. */
export function setParam(name, value) {
  const { parts, params } = route();
  if (value) params.set(name, value);
  else params.delete(name);
  const s = params.toString();
  location.hash = `#/${parts.map(encodeURIComponent).join('/')}${s ? `?${s}` : ''}`;
}

/** `at` of the URL as the API takes it: a day is its start, in UTC. */
function apiAt(at) {
  if (!at) return undefined;
  return /^\d{4}-\d{2}-\d{2}$/.test(at) ? `${at}T00:00:00Z` : at;
}

const PAGES = {
  '': pages.brands,
  brand: pages.brand,
  rel: pages.relationship,
  person: pages.person,
  event: pages.event,
  live: pages.live,
  whatif,
};

/** Pages that show "now" refresh when the state has changed. */
const REFRESH_MS = 5000;
const FIXED = new Set(['live', 'event', 'whatif']);

/**
 * Renders the route's page. `quiet`: a refresh of the page on screen,
 * which stays as it is until the new one is ready (and if that fails).
 */
async function render(quiet = false) {
  if (stopPage) stopPage();
  stopPage = null;
  const mine = ++rendering;
  const { parts, params } = route();
  const at = params.get('at');
  atInput.value = at && /^\d{4}-\d{2}-\d{2}/.test(at) ? at.slice(0, 10) : '';
  const name = parts[0] || '';
  for (const a of document.querySelectorAll('[data-nav]')) {
    const current = a.dataset.nav === (['live', 'whatif'].includes(name) ? name : 'brands');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const page = PAGES[name] || pages.notFound;
  const ctx = {
    args: parts.slice(1),
    params,
    at,
    apiAt: apiAt(at),
    link,
    setParam,
    onStop(f) {
      if (mine === rendering) stopPage = f;
      else f();
    },
    onSignedOut: showSignIn,
  };
  if (!quiet) {
    main.setAttribute('aria-busy', 'true');
    delete main.dataset.route;
  }
  try {
    const view = await page(ctx);
    if (mine !== rendering) return;
    main.replaceChildren(view);
    main.dataset.route = location.hash || '#/';
    // Time to first render, as benches/dashboard.sh reads it.
    if (!quiet) performance.mark(`rendered ${main.dataset.route}`);
  } catch (e) {
    if (mine !== rendering) return;
    if (e instanceof Unauthorized) showSignIn();
    else if (!quiet) {
      main.replaceChildren(pages.failure(e));
      main.dataset.route = location.hash || '#/';
    }
  } finally {
    if (mine === rendering) main.removeAttribute('aria-busy');
  }
  if (mine === rendering && !at && !FIXED.has(name) && main.dataset.route) stopPage = keepFresh(mine);
}

/**
 * Polls the state's version (the ETag of a one-brand list: it changes with
 * every fold, and each minute) and renders the page again when it moved,
 * unless the reader is in the page (focus inside it: a refresh would
 * take their place away). Answers the function that stops it.
 */
function keepFresh(mine) {
  let timer = null;
  const probe = '/v1/brands?limit=1';
  const tick = async () => {
    if (mine !== rendering) return;
    try {
      const { changed } = await get(probe);
      if (changed && mine === rendering && !main.contains(document.activeElement)) {
        render(true);
        return;
      }
    } catch {
      // The next tick tries again; a signed-out session shows on navigation.
    }
    if (mine === rendering) timer = setTimeout(tick, REFRESH_MS);
  };
  // The first answer is the reference the ticks compare with.
  get(probe).then(() => { timer = setTimeout(tick, REFRESH_MS); }, () => {});
  return () => clearTimeout(timer);
}

function showSignIn() {
  if (stopPage) stopPage();
  stopPage = null;
  const view = document.getElementById('login').content.cloneNode(true);
  main.replaceChildren(view);
  main.dataset.route = 'sign-in';
  const form = document.getElementById('login-form');
  const error = document.getElementById('login-error');
  document.getElementById('key').focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      await signIn(form.elements.key.value);
      form.reset();
      render();
    } catch (e) {
      error.textContent = `Refused: ${e.message}`;
    }
  });
}

atInput.addEventListener('change', () => setParam('at', atInput.value || null));
document.getElementById('now').addEventListener('click', () => setParam('at', null));
document.getElementById('as-of').addEventListener('submit', (ev) => ev.preventDefault());
document.getElementById('zone').replaceChildren(h('span', {}, `times in ${zone()}`));
window.addEventListener('hashchange', render);
render();
