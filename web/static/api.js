// The API client of the dashboard: same-origin requests with the session
// cookie, conditional GETs (If-None-Match → 304 keeps the last body), the
// CSRF token on requests that change state. Nothing here builds markup.

/** A 401: the page must ask for a key. */
export class Unauthorized extends Error {}

/** Any other refusal, with the problem's detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// url -> { etag, body }: the last answer of each polled URL.
const lastAnswers = new Map();

/**
 * GET a JSON route. Answers { body, changed }: `changed` is false when the
 * server said 304 (the body is the one it had sent before).
 */
export async function get(url) {
  const headers = { Accept: 'application/json' };
  const last = lastAnswers.get(url);
  if (last) headers['If-None-Match'] = last.etag;
  // no-store: the browser's cache would answer the 304 itself and hide it.
  const r = await fetch(url, { headers, credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 304 && last) return { body: last.body, changed: false };
  if (r.status === 401) throw new Unauthorized(await detail(r));
  if (!r.ok) throw new ApiError(r.status, await detail(r));
  const body = await r.json();
  const etag = r.headers.get('ETag');
  if (etag) lastAnswers.set(url, { etag, body });
  return { body, changed: true };
}

async function detail(r) {
  try {
    const p = await r.json();
    return p.detail || p.title || r.statusText;
  } catch {
    return r.statusText;
  }
}

/** Exchanges a key for the session cookie (docs/security.md). */
export async function signIn(key) {
  const r = await fetch('/v1/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { Authorization: `Bearer ${key.trim()}` },
  });
  if (!r.ok) throw new ApiError(r.status, await detail(r));
  return r.json();
}

/** The CSRF token the session set in its readable cookie, if any. */
export function csrfToken() {
  const c = document.cookie.split('; ').find((x) => x.startsWith('fusion_csrf='));
  return c ? decodeURIComponent(c.slice('fusion_csrf='.length)) : null;
}

/** A request that changes state: carries the session's CSRF token. */
export async function send(method, url, body) {
  const headers = { 'Content-Type': 'application/json' };
  const token = csrfToken();
  if (token) headers['X-CSRF-Token'] = token;
  const r = await fetch(url, {
    method,
    credentials: 'same-origin',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) throw new Unauthorized(await detail(r));
  if (!r.ok) throw new ApiError(r.status, await detail(r));
  return r.status === 204 ? null : r.json();
}

/** Path segment, escaped. */
export const seg = encodeURIComponent;

/** A query string from the defined values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}
