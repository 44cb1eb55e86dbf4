// FlowGuard Appliance dashboard: one plain ES module, no dependencies, no build step.
// Everything it loads comes from this appliance (CSP `default-src 'self'`): no CDN, no web
// fonts, no telemetry. The DOM is built with createElement/textContent only (never innerHTML
// with data), and every handler is attached here (no inline script or handlers).

'use strict';

// ---------------------------------------------------------------------------------------------
// State

const state = {
  me: null,
  csrf: sessionStorage.getItem('fg_csrf') || '',
  apps: null,
  appId: localStorage.getItem('fg_app') || '',
  license: undefined, // undefined = not asked yet, null = route absent or not allowed
  notifications: [],
};

// Mirror of the server's role → permission table (src/domain/role.rs). The UI only hides what a
// role may not do; the server still decides.
const PERMS = {
  appWrite: ['owner', 'admin'],
  memberRead: ['owner', 'admin'],
  memberWrite: ['owner', 'admin'],
  agentTokens: ['owner', 'admin'],
  scimTokens: ['owner'],
  audit: ['owner'],
  tenantRead: ['owner', 'admin', 'tester', 'viewer'],
  flowWrite: ['owner', 'admin', 'tester'],
  runTrigger: ['owner', 'admin', 'tester'],
  varRead: ['owner', 'admin', 'tester'],
  varWrite: ['owner', 'admin', 'tester'],
  sso: ['owner'],
  keys: ['owner'],
  license: ['owner'],
  ai: ['owner'],
};
const can = (p) => !!state.me && PERMS[p].includes(state.me.role);

// ---------------------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'text') {
      el.textContent = v;
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'hidden') {
      el[k] = !!v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let uid = 0;
/** A labelled form field: returns the wrapper; the control is `wrapper.control`. */
function field(label, control, hint) {
  if (!control.id) control.id = 'f' + (++uid);
  const hintEl = hint ? h('span', { class: 'hint', id: control.id + '-hint', text: hint }) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  const isCheck = control.type === 'checkbox';
  const lab = h('label', { for: control.id, text: label });
  const wrap = isCheck
    ? h('div', { class: 'field check' }, control, lab, hintEl)
    : h('div', { class: 'field' }, lab, control, hintEl);
  wrap.control = control;
  return wrap;
}
const input = (attrs) => h('input', { type: 'text', ...attrs });
function select(options, value, attrs) {
  return h('select', attrs || {}, options.map((o) => {
    const [v, t] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, selected: v === value, text: t });
  }));
}
const btn = (text, onClick, attrs) => h('button', { type: 'button', ...(attrs || {}), on: { click: onClick } }, text);
const alertBox = () => h('div', { class: 'alert', role: 'alert', hidden: true });
function showError(box, err) {
  box.hidden = false;
  box.className = 'alert error';
  box.textContent = message(err);
}
function showOk(box, text) {
  box.hidden = false;
  box.className = 'alert ok';
  box.textContent = text;
}
const clear = (box) => { box.hidden = true; box.textContent = ''; };
const fmtTime = (s) => (s ? new Date(s).toLocaleString() : '—');
const table = (heads, rows, attrs) =>
  h('div', { class: 'table-wrap' }, h('table', attrs || {},
    h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows)));
const empty = (text) => h('p', { class: 'empty', text });
const badge = (status) => h('span', { class: 'badge s-' + status, text: status });

// ---------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || 'HTTP ' + status);
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || 'http_' + status;
  }
}

// Readable messages keyed by the problem `code` (the `detail` is appended when it adds facts).
const MESSAGES = {
  unauthenticated: 'Your session has ended. Please sign in again.',
  invalid_credentials: 'Sign-in failed: tenant, login name or password is wrong.',
  too_many_attempts: 'Too many failed attempts. Wait a moment before trying again.',
  forbidden: 'Your role does not allow this.',
  csrf_failed: 'This tab has no valid session token (was the page opened in a new tab?). Sign out and sign in again.',
  validation_failed: 'Please correct the highlighted field.',
  malformed_json: 'The request could not be read.',
  payload_too_large: 'That is too large.',
  not_found: 'Not found — it may have been deleted, or this appliance version does not offer it.',
  plan_limit: 'Your plan does not allow more of these. The Owner can check the license.',
  feature_not_licensed: 'Your license does not include this feature.',
  name_taken: 'That name is already taken.',
  member_exists: 'A member with that email already exists.',
  last_owner: 'The last Owner cannot be removed or demoted.',
  owner_required: 'Only an Owner can grant or change the Owner role.',
  invalid_transition: 'The run is not in a state that allows this.',
  rotation_in_progress: 'A key rotation is already running. Try again when it has finished.',
  ldap_unavailable: 'The directory could not be reached over TLS.',
  ldap_not_configured: 'No directory is configured yet. Save the LDAP settings first.',
  ldap_service_bind_failed: 'The directory refused the service account (bind DN / password).',
  tls_required: 'The directory URL must use TLS (ldaps:// or StartTLS).',
  egress_denied: 'The operator’s egress list does not allow connecting there.',
  invalid_cursor: 'The page position is no longer valid; showing the first page.',
  invalid_range: '“From” must not be after “To”.',
  invalid_timestamp: 'Enter a valid date and time.',
  ai_endpoint_not_configured: 'No AI endpoint is configured.',
  busy: 'The appliance is busy. Try again shortly.',
  not_local_account: 'This account signs in through the directory; its password is changed there.',
  password_too_long: 'The password is too long.',
  misdirected_request: 'This tenant lives in another region.',
  tenant_suspended: 'This tenant is suspended.',
  internal: 'The appliance hit an internal error. The operator can find details in its log.',
  network: 'The appliance could not be reached.',
};

function message(err) {
  if (!(err instanceof ApiError)) return 'Unexpected error: ' + (err && err.message ? err.message : String(err));
  const base = MESSAGES[err.code];
  const detail = err.problem.detail;
  const where = err.problem.field ? ' [' + err.problem.field + ']' : '';
  if (base && detail && detail !== base) return base + ' (' + detail + ')' + where;
  return (base || detail || err.problem.title || 'Request failed (HTTP ' + err.status + ').') + where;
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  let r;
  try {
    r = await fetch('/api/v1' + path, opts);
  } catch (e) {
    throw new ApiError(0, { code: 'network', detail: String(e.message || e) });
  }
  if (r.status === 204) return null;
  const ct = r.headers.get('content-type') || '';
  const data = ct.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = new ApiError(r.status, data && typeof data === 'object' ? data : { detail: String(data || '') });
    if (r.status === 401 && state.me && !path.startsWith('/auth/')) {
      state.me = null;
      go('/signin', { replace: true, notice: message(err) });
    }
    throw err;
  }
  return data;
}

/** GET that maps 404 (route absent in this build, or nothing saved) to `null`. */
async function optional(path) {
  try {
    return await api('GET', path);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Router (history API; the server answers index.html for client routes)

const routes = [];
const route = (pattern, page, perm) => {
  const keys = [];
  const re = new RegExp('^' + pattern.replace(/:(\w+)/g, (_, k) => { keys.push(k); return '([^/]+)'; }) + '/?$');
  routes.push({ re, keys, page, perm });
};

let pendingNotice = '';
function go(path, opts) {
  const o = opts || {};
  if (o.notice) pendingNotice = o.notice;
  if (o.replace) history.replaceState({}, '', path);
  else history.pushState({}, '', path);
  render();
}

document.addEventListener('click', (ev) => {
  const a = ev.target instanceof Element ? ev.target.closest('a[data-link]') : null;
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', () => render());
// Every form submission starts clean: marks from an earlier failed attempt are cleared before the
// form's own handler runs (capture phase), so only the field the server names now is marked.
document.addEventListener('submit', (ev) => {
  if (ev.target instanceof HTMLFormElement) {
    ev.target.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
  }
}, true);

const link = (href, text, attrs) => h('a', { href, 'data-link': true, ...(attrs || {}) }, text);

let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  liveStop();
  const main = document.getElementById('main');
  const path = location.pathname;
  if (!state.me && path !== '/signin') {
    try {
      state.me = await api('GET', '/me');
      await afterSignIn();
    } catch (e) {
      state.me = null;
    }
    if (seq !== renderSeq) return;
    if (!state.me) {
      const back = path === '/' ? '' : '?next=' + encodeURIComponent(path + location.search);
      history.replaceState({}, '', '/signin' + back);
      return render();
    }
  }
  if (path === '/' || (path === '/signin' && state.me)) {
    history.replaceState({}, '', homePath());
    return render();
  }
  renderTop();
  renderBanners();
  let hit = null;
  for (const r of routes) {
    const m = r.re.exec(path);
    if (m) {
      hit = { r, params: Object.fromEntries(r.keys.map((k, i) => [k, decodeURIComponent(m[i + 1])])) };
      break;
    }
  }
  main.replaceChildren(h('p', { class: 'loading', 'aria-busy': 'true', text: 'Loading…' }));
  const page = h('div', { class: 'page' });
  try {
    if (!hit) {
      page.append(h('h1', { text: 'Page not found' }), h('p', {}, 'There is no page at this address. ', link(homePath(), 'Go to the start page')));
    } else if (hit.r.perm && !can(hit.r.perm)) {
      page.append(h('h1', { text: 'Not available' }), h('p', { text: 'Your role does not include this page.' }));
    } else {
      await hit.r.page(page, hit.params, new URLSearchParams(location.search));
    }
  } catch (e) {
    page.append(h('div', { class: 'alert error', role: 'alert', text: message(e) }));
  }
  if (seq !== renderSeq) return;
  main.replaceChildren(page);
  const h1 = main.querySelector('h1');
  if (h1) {
    h1.tabIndex = -1;
    document.title = h1.textContent + ' — FlowGuard';
    // Move focus to the new page's heading (screen readers announce it; Tab continues there),
    // unless the user is typing in a field that survived the render.
    if (!document.activeElement || document.activeElement === document.body || !main.contains(document.activeElement)) {
      h1.focus();
    }
  }
  if (pendingNotice) {
    main.prepend(h('div', { class: 'alert info', role: 'status', text: pendingNotice }));
    pendingNotice = '';
  }
}

function homePath() {
  if (!state.me) return '/signin';
  if (state.me.kind === 'platform_admin') return '/account';
  return '/applications';
}

async function afterSignIn() {
  state.apps = null;
  state.license = undefined;
  state.notifications = [];
  // Owners and PlatformAdmins get license warnings; other roles get an empty list.
  try {
    const n = await optional('/notifications');
    state.notifications = (n && n.items) || [];
  } catch (e) {
    state.notifications = [];
  }
}

async function apps() {
  if (state.apps === null) {
    const r = await api('GET', '/applications');
    state.apps = r.items;
  }
  if (!state.apps.some((a) => a.id === state.appId)) {
    state.appId = state.apps.length ? state.apps[0].id : '';
  }
  return state.apps;
}

function setApp(id) {
  state.appId = id;
  localStorage.setItem('fg_app', id);
}

// ---------------------------------------------------------------------------------------------
// Frame: top bar with navigation by role, banners

function renderTop() {
  const top = document.getElementById('top');
  if (!state.me) {
    top.hidden = true;
    top.replaceChildren();
    return;
  }
  top.hidden = false;
  const items = [];
  const add = (href, text, ok) => { if (ok) items.push(h('li', {}, link(href, text, location.pathname.startsWith(href) ? { 'aria-current': 'page' } : {}))); };
  const app = state.appId;
  const tenantUser = state.me.kind === 'user';
  add('/applications', 'Applications', tenantUser);
  add(app ? '/apps/' + app + '/flows' : '/applications', 'Flows', tenantUser);
  add(app ? '/apps/' + app + '/runs' : '/applications', 'Runs', tenantUser);
  add(app ? '/apps/' + app + '/variables' : '/applications', 'Variables', tenantUser && can('varRead'));
  add('/members', 'Members', can('memberRead'));
  add('/tokens', 'Tokens', can('agentTokens'));
  add('/audit', 'Audit log', can('audit'));
  add('/keys', 'Keys', can('keys'));
  add('/license', 'License', can('license'));
  add('/sso', 'LDAP', can('sso'));
  add('/ai', 'AI endpoint', can('ai'));
  add('/account', 'Account', true);
  top.replaceChildren(
    h('a', { class: 'brand', href: homePath(), 'data-link': true }, 'FlowGuard'),
    h('nav', { 'aria-label': 'Main' }, h('ul', {}, items)),
    h('div', { class: 'who' },
      h('span', { class: 'me', text: state.me.name + ' · ' + state.me.role }),
      btn('Sign out', signOut, { id: 'signout' })));
}

function renderBanners() {
  const b = document.getElementById('banners');
  const out = [];
  if (state.me && state.me.must_change_password) {
    out.push(h('div', { class: 'banner warning' }, 'You are using a one-time password. ', link('/account', 'Change it now'), '.'));
  }
  for (const n of state.notifications) {
    out.push(h('div', { class: 'banner ' + (n.severity === 'critical' || n.severity === 'error' ? 'error' : 'warning'), 'data-kind': n.kind },
      n.message, n.expires_at ? ' (expires ' + fmtTime(n.expires_at) + ')' : ''));
  }
  b.replaceChildren(...out);
}

async function signOut() {
  try {
    await api('POST', '/auth/logout');
  } catch (e) {
    // the session may already be gone; signing out locally is what matters
  }
  state.me = null;
  state.csrf = '';
  sessionStorage.removeItem('fg_csrf');
  renderTop();
  go('/signin', { notice: 'You are signed out.' });
}

// ---------------------------------------------------------------------------------------------
// Sign-in

async function pageSignIn(page, _p, q) {
  renderTop();
  const tenant = input({ id: 'signin-tenant', name: 'tenant', autocomplete: 'organization', value: localStorage.getItem('fg_tenant') || '' });
  const email = input({ id: 'signin-email', name: 'email', autocomplete: 'username', required: true });
  const password = input({ id: 'signin-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const mode = select([['any', 'Local account (or directory when enabled)'], ['ldap', 'Directory (LDAP) only']], 'any', { id: 'signin-mode' });
  const box = alertBox();
  const submit = h('button', { type: 'submit', id: 'signin-submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', novalidate: true },
    field('Tenant', tenant, 'Tenant id or name. Leave empty to sign in as a platform administrator.'),
    field('Email or login name', email),
    field('Password', password),
    field('Account type', mode),
    box, submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    submit.disabled = true;
    try {
      const t = tenant.value.trim();
      const out = mode.value === 'ldap'
        ? await api('POST', '/auth/ldap/login', { tenant: t, username: email.value.trim(), password: password.value })
        : await api('POST', '/auth/login', { tenant: t || null, email: email.value.trim(), password: password.value });
      state.csrf = out.csrf_token;
      sessionStorage.setItem('fg_csrf', out.csrf_token);
      state.me = out.me;
      localStorage.setItem('fg_tenant', t);
      await afterSignIn();
      const next = q.get('next');
      go(next && next.startsWith('/') && !next.startsWith('//') ? next : homePath(), { replace: true });
    } catch (e) {
      showError(box, e);
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  page.append(h('h1', { text: 'Sign in to FlowGuard' }), form);
}

// ---------------------------------------------------------------------------------------------
// Applications

async function pageApplications(page) {
  const list = await apps();
  const box = alertBox();
  page.append(h('h1', { text: 'Applications' }), box);
  // At most one application form is open at a time (ids inside it are unique on the page).
  let formSlot = null;
  const closeForms = () => {
    page.querySelectorAll('tr.edit-row').forEach((r) => r.remove());
    if (formSlot) formSlot.replaceChildren();
  };
  if (can('appWrite')) {
    formSlot = h('div');
    page.append(h('div', { class: 'actions' }, btn('New application', () => {
      closeForms();
      formSlot.replaceChildren(appForm(null, async (body) => {
        const a = await api('POST', '/applications', body);
        state.apps = null;
        setApp(a.id);
        go('/applications', { notice: 'Application “' + a.name + '” created.' });
      }, () => formSlot.replaceChildren()));
      formSlot.querySelector('input').focus();
    }, { id: 'app-new', class: 'primary create' })), formSlot);
  }
  if (!list.length) {
    page.append(empty(can('appWrite') ? 'No applications yet. Create one to start adding flows.' : 'No applications yet. An Owner or Admin can create one.'));
    return;
  }
  const rows = list.map((a) => {
    const tr = h('tr', { 'data-id': a.id },
      h('td', {}, link('/apps/' + a.id + '/flows', a.name, { on: { click: () => setApp(a.id) } })),
      h('td', { text: a.base_url }),
      h('td', { text: a.repo_url || '—' }),
      h('td', { text: fmtTime(a.updated_at) }),
      h('td', { class: 'row-actions' },
        link('/apps/' + a.id + '/runs', 'Runs', { on: { click: () => setApp(a.id) } }),
        can('appWrite') ? btn('Edit', () => {
          closeForms();
          const cell = h('td', { colspan: 5 });
          const editRow = h('tr', { class: 'edit-row' }, cell);
          cell.append(appForm(a, async (body) => {
            await api('PUT', '/applications/' + a.id, body);
            state.apps = null;
            go('/applications', { notice: 'Application saved.' });
          }, () => editRow.remove()));
          tr.after(editRow);
          cell.querySelector('input').focus();
        }) : null,
        can('appWrite') ? btn('Delete', async () => {
          if (!confirm('Delete application “' + a.name + '” with its flows, runs and agent tokens?')) return;
          try {
            await api('DELETE', '/applications/' + a.id);
            state.apps = null;
            go('/applications', { notice: 'Application deleted.' });
          } catch (e) { showError(box, e); }
        }, { class: 'danger' }) : null));
    return tr;
  });
  page.append(table(['Name', 'Base URL', 'Repository', 'Updated', 'Actions'], rows, { id: 'apps-table' }));
}

function appForm(a, save, cancel) {
  const name = input({ id: 'app-name', value: a ? a.name : '', required: true, maxlength: 100 });
  const base = input({ id: 'app-base-url', type: 'url', value: a ? a.base_url : '', required: true, placeholder: 'https://shop.example' });
  const repo = input({ id: 'app-repo-url', type: 'url', value: a ? a.repo_url || '' : '' });
  const box = alertBox();
  const form = h('form', { class: 'card', novalidate: true },
    h('h2', { text: a ? 'Edit ' + a.name : 'New application' }),
    field('Name', name), field('Base URL', base, 'Where the application under test is reached (http or https).'),
    field('Repository URL (optional)', repo), box,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'app-save' }, 'Save'), btn('Cancel', cancel)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    try {
      await save({ name: name.value.trim(), base_url: base.value.trim(), repo_url: repo.value.trim() || null });
    } catch (e) {
      showError(box, e);
      const f = { name, base_url: base, repo_url: repo }[e.problem && e.problem.field];
      if (f) { f.setAttribute('aria-invalid', 'true'); f.focus(); }
    }
  });
  return form;
}

/** Header with the application picker for per-application pages; returns the app or null. */
async function appHeader(page, title, appId, sub) {
  const list = await apps();
  const app = list.find((a) => a.id === appId);
  page.append(h('h1', { text: title }));
  if (!app) {
    page.append(empty(list.length ? 'That application does not exist. Pick one below.' : 'No applications yet.'),
      h('p', {}, link('/applications', 'Go to applications')));
    return null;
  }
  setApp(app.id);
  renderTop();
  const pick = select(list.map((a) => [a.id, a.name]), app.id, { id: 'app-picker' });
  pick.addEventListener('change', () => go('/apps/' + pick.value + '/' + sub));
  page.append(h('div', { class: 'toolbar' }, field('Application', pick)));
  return app;
}

// ---------------------------------------------------------------------------------------------
// Flows

async function pageFlows(page, p, q) {
  const app = await appHeader(page, 'Flows', p.app, 'flows');
  if (!app) return;
  const tag = q.get('tag') || '';
  const [all, shown] = await Promise.all([
    api('GET', '/applications/' + app.id + '/flows'),
    tag ? api('GET', '/applications/' + app.id + '/flows?tag=' + encodeURIComponent(tag)) : null,
  ]);
  const flows = shown ? shown.items : all.items;
  const tags = [...new Set(all.items.flatMap((f) => f.tags))].sort();
  const tagSel = select([['', 'All tags'], ...tags.map((t) => [t, t])], tag, { id: 'flow-tag' });
  tagSel.addEventListener('change', () => go('/apps/' + app.id + '/flows' + (tagSel.value ? '?tag=' + encodeURIComponent(tagSel.value) : '')));
  const box = alertBox();
  page.append(h('div', { class: 'toolbar' }, field('Tag', tagSel),
    can('flowWrite') ? link('/apps/' + app.id + '/flows/new', 'New flow', { class: 'button primary create', id: 'flow-new' }) : null), box);
  if (!flows.length) {
    page.append(empty(tag ? 'No flow has the tag “' + tag + '”.' : 'No flows yet.' + (can('flowWrite') ? ' Create one with “New flow”.' : '')));
    return;
  }
  page.append(table(['Name', 'Tags', 'Version', 'Steps', 'Schedule', 'Actions'], flows.map((f) => h('tr', { 'data-id': f.id },
    h('td', {}, link('/flows/' + f.id, f.name)),
    h('td', {}, f.tags.map((t) => h('span', { class: 'tag', text: t }))),
    h('td', { text: 'v' + f.current_version }),
    h('td', { text: String((f.steps || []).length) }),
    h('td', { text: f.schedule ? f.schedule.cron + ' (' + f.schedule.timezone + ')' : '—' }),
    h('td', { class: 'row-actions' }, can('runTrigger') ? btn('Run now', async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api('POST', '/flows/' + f.id + '/runs');
        go('/runs/' + r.id, { notice: 'Run queued.' });
      } catch (e) { showError(box, e); ev.target.disabled = false; }
    }, { class: 'create' }) : null))), { id: 'flows-table' }));
}

const STEP_TYPES = ['navigate', 'click', 'fill', 'select', 'wait', 'assert', 'checkpoint', 'screenshot'];

// Options per step type: [name, label, kind, extra]
const STEP_FIELDS = {
  navigate: [['url', 'URL (absolute, or a path relative to the base URL)', 'text']],
  click: [['selector', 'Selector', 'text'], ['nth', 'Match index (nth)', 'number', 0], ['force', 'Force click', 'bool', false]],
  fill: [['selector', 'Selector', 'text'], ['value', 'Value (literal or {{variable}})', 'text'], ['clear_first', 'Clear first', 'bool', true]],
  select: [['selector', 'Selector', 'text'], ['value', 'Option value', 'text']],
  wait: [['for', 'Wait for', ['selector', 'network-idle', 'url', 'timeout']], ['selector', 'Selector', 'text'], ['url', 'URL', 'text'], ['timeout_ms', 'Timeout (ms)', 'number', 30000]],
  assert: [['selector', 'Selector', 'text'], ['assertion', 'Assertion', ['exists', 'not_exists', 'text_equals', 'text_contains', 'attr_equals']], ['expected', 'Expected', 'text'], ['attribute', 'Attribute', 'text']],
  checkpoint: [['expectation', 'Expectation (what the AI model should see)', 'textarea'], ['region', 'Region x, y, width, height (optional)', 'region']],
  screenshot: [['mask', 'Mask selectors (one per line)', 'lines'], ['full_page', 'Full page', 'bool', false]],
};

function stepEditor(steps, readOnly) {
  const wrap = h('ol', { class: 'steps', id: 'steps' });
  const redraw = () => {
    wrap.replaceChildren(...steps.map((s, i) => stepBox(s, i)));
  };
  const stepBox = (s, i) => {
    const box = h('li', { class: 'step', 'data-step': String(i) });
    const typeSel = select(STEP_TYPES, s.type, { id: 'step-' + i + '-type', 'data-field': 'type', disabled: readOnly });
    typeSel.addEventListener('change', () => {
      steps[i] = { type: typeSel.value };
      redraw();
      const t = document.getElementById('step-' + i + '-type');
      if (t) t.focus();
    });
    const fs = h('fieldset', {}, h('legend', { text: 'Step ' + (i + 1) + ' · ' + s.type }), field('Type', typeSel));
    for (const [name, label, kind, dflt] of STEP_FIELDS[s.type] || []) {
      const id = 'step-' + i + '-' + name;
      let ctl;
      if (Array.isArray(kind)) {
        ctl = select(kind, s[name] || kind[0], { id });
        if (s[name] === undefined) s[name] = kind[0];
        ctl.addEventListener('change', () => { s[name] = ctl.value; });
      } else if (kind === 'bool') {
        if (s[name] === undefined) s[name] = dflt;
        ctl = h('input', { type: 'checkbox', id, checked: s[name] });
        ctl.addEventListener('change', () => { s[name] = ctl.checked; });
      } else if (kind === 'number') {
        ctl = input({ id, type: 'number', min: 0, value: s[name] === undefined ? '' : s[name], placeholder: String(dflt) });
        ctl.addEventListener('input', () => { if (ctl.value === '') delete s[name]; else s[name] = Number(ctl.value); });
      } else if (kind === 'textarea') {
        ctl = h('textarea', { id, rows: 2, value: s[name] || '' });
        ctl.addEventListener('input', () => { s[name] = ctl.value; });
      } else if (kind === 'lines') {
        ctl = h('textarea', { id, rows: 2, value: (s[name] || []).join('\n') });
        ctl.addEventListener('input', () => { s[name] = ctl.value.split('\n').map((x) => x.trim()).filter(Boolean); });
      } else if (kind === 'region') {
        const r = s.region || null;
        ctl = input({ id, value: r ? [r.x, r.y, r.width, r.height].join(', ') : '', placeholder: 'e.g. 0, 0, 640, 360' });
        ctl.addEventListener('input', () => {
          const n = ctl.value.split(',').map((x) => x.trim()).filter((x) => x !== '').map(Number);
          if (n.length === 4 && n.every((x) => Number.isFinite(x))) s.region = { x: n[0], y: n[1], width: n[2], height: n[3] };
          else if (ctl.value.trim() === '') delete s.region;
          // Never drop a malformed region silently: send it as typed so the server's validation
          // message appears at this step.
          else s.region = ctl.value;
        });
      } else {
        ctl = input({ id, value: s[name] === undefined || s[name] === null ? '' : s[name] });
        ctl.addEventListener('input', () => { if (ctl.value === '' && name !== 'value' && name !== 'url' && name !== 'selector' && name !== 'expectation') delete s[name]; else s[name] = ctl.value; });
      }
      ctl.disabled = readOnly;
      ctl.setAttribute('data-field', name);
      fs.append(field(label, ctl));
    }
    fs.append(h('p', { class: 'step-error', role: 'alert', id: 'step-' + i + '-error', hidden: true }));
    if (!readOnly) {
      fs.append(h('div', { class: 'actions' },
        btn('Move up', () => { if (i > 0) { [steps[i - 1], steps[i]] = [steps[i], steps[i - 1]]; redraw(); } }, { disabled: i === 0 }),
        btn('Move down', () => { if (i < steps.length - 1) { [steps[i + 1], steps[i]] = [steps[i], steps[i + 1]]; redraw(); } }, { disabled: i === steps.length - 1 }),
        btn('Remove step', () => { steps.splice(i, 1); redraw(); }, { class: 'danger' })));
    }
    box.append(fs);
    return box;
  };
  redraw();
  wrap.redraw = redraw;
  return wrap;
}

/** Put a server validation error at its step (`steps[i].field`) or return false. */
function showStepError(err) {
  const f = err.problem && err.problem.field;
  const m = f && /^steps\[(\d+)\](?:\.(\w+))?/.exec(f);
  if (!m) return false;
  const i = m[1];
  const p = document.getElementById('step-' + i + '-error');
  if (!p) return false;
  p.hidden = false;
  p.textContent = (err.problem.detail || message(err)) + (m[2] ? ' (' + m[2] + ')' : '');
  const ctl = m[2] && document.getElementById('step-' + i + '-' + m[2]);
  if (ctl) { ctl.setAttribute('aria-invalid', 'true'); ctl.focus(); } else p.scrollIntoView({ block: 'center' });
  return true;
}

async function pageFlowNew(page, p) {
  const app = await appHeader(page, 'New flow', p.app, 'flows/new');
  if (!app) return;
  flowForm(page, app, null);
}

async function pageFlow(page, p, q) {
  const versionN = q.get('version');
  const flow = await api('GET', '/flows/' + p.id + (versionN ? '/versions/' + encodeURIComponent(versionN) : ''));
  setApp(flow.application_id);
  page.append(h('h1', { text: 'Flow: ' + flow.name }));
  page.append(h('p', { class: 'crumbs' }, link('/apps/' + flow.application_id + '/flows', '← All flows'), ' · ',
    link('/apps/' + flow.application_id + '/runs', 'Runs of this application')));
  const versions = h('ul', { class: 'versions', id: 'flow-versions' });
  for (let n = flow.current_version; n >= 1; n--) {
    const label = 'Version ' + n + (n === flow.current_version ? ' (current)' : '');
    versions.append(h('li', {}, n === flow.version ? h('strong', { 'aria-current': 'true', text: label })
      : link('/flows/' + flow.id + (n === flow.current_version ? '' : '?version=' + n), label)));
  }
  const old = flow.version !== flow.current_version;
  const side = h('aside', { class: 'card side' }, h('h2', { text: 'Version history' }), versions,
    h('p', { class: 'hint', text: 'Saving creates a new immutable version; runs keep the version they were queued with.' }));
  const mainCol = h('div', { class: 'grow' });
  page.append(h('div', { class: 'two-col' }, mainCol, side));
  if (old) mainCol.append(h('div', { class: 'alert info', role: 'status', text: 'You are looking at version ' + flow.version + ' (created ' + fmtTime(flow.created_at) + ' by ' + flow.created_by + '). Saving it makes it the new current version.' }));
  flowForm(mainCol, { id: flow.application_id }, flow);
  if (can('flowWrite') && !old) mainCol.append(scheduleForm(flow));
}

function flowForm(page, app, flow) {
  const ro = !can('flowWrite');
  const steps = flow ? JSON.parse(JSON.stringify(flow.steps || [])) : [];
  const name = input({ id: 'flow-name', value: flow ? flow.name : '', disabled: ro, required: true });
  const tags = input({ id: 'flow-tags', value: flow ? flow.tags.join(', ') : '', disabled: ro });
  const box = alertBox();
  const editor = stepEditor(steps, ro);
  const form = h('form', { class: 'card', novalidate: true },
    field('Name', name), field('Tags', tags, 'Comma-separated, e.g. smoke, checkout'),
    h('h2', { text: 'Steps' }), editor);
  if (!steps.length) form.append(empty('No steps yet.'));
  if (!ro) {
    const addType = select(STEP_TYPES, 'navigate', { id: 'step-add-type' });
    form.append(h('div', { class: 'toolbar' }, field('New step type', addType),
      btn('Add step', () => {
        steps.push({ type: addType.value });
        editor.redraw();
        const t = document.getElementById('step-' + (steps.length - 1) + '-type');
        if (t) t.focus();
      }, { id: 'step-add' })));
    form.append(box, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'flow-save' }, flow ? 'Save new version' : 'Create flow')));
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    for (const el of form.querySelectorAll('.step-error')) { el.hidden = true; el.textContent = ''; }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const body = {
      name: name.value.trim(),
      tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean),
      source: flow ? flow.source || 'manual' : 'manual',
      steps,
    };
    try {
      const saved = flow ? await api('PUT', '/flows/' + flow.id, body) : await api('POST', '/applications/' + app.id + '/flows', body);
      go('/flows/' + saved.id, { notice: 'Flow saved as version ' + saved.version + '.' });
    } catch (e) {
      if (!showStepError(e)) {
        showError(box, e);
        const f = { name, tags }[e.problem && e.problem.field];
        if (f) { f.setAttribute('aria-invalid', 'true'); f.focus(); }
      } else {
        showError(box, new ApiError(e.status, { code: e.code, detail: 'A step needs attention: ' + (e.problem.detail || ''), field: e.problem.field }));
      }
    }
  });
  page.append(form);
}

function scheduleForm(flow) {
  const cron = input({ id: 'sched-cron', value: flow.schedule ? flow.schedule.cron : '', placeholder: '0 6 * * 1-5' });
  const tz = input({ id: 'sched-tz', value: flow.schedule ? flow.schedule.timezone : 'UTC' });
  const box = alertBox();
  const form = h('form', { class: 'card', novalidate: true }, h('h2', { text: 'Schedule' }),
    field('Cron (5 fields, or 6 with seconds)', cron), field('Time zone (IANA)', tz), box,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save schedule'),
      flow.schedule ? btn('Remove schedule', async () => {
        try { await api('DELETE', '/flows/' + flow.id + '/schedule'); go('/flows/' + flow.id, { notice: 'Schedule removed.' }); } catch (e) { showError(box, e); }
      }) : null));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    try {
      await api('PUT', '/flows/' + flow.id + '/schedule', { cron: cron.value.trim(), timezone: tz.value.trim() });
      go('/flows/' + flow.id, { notice: 'Schedule saved.' });
    } catch (e) { showError(box, e); }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// Runs

const RUN_STATUSES = ['queued', 'running', 'passed', 'failed', 'cancelled', 'error'];
const active = (s) => s === 'queued' || s === 'running';

function duration(a, b) {
  if (!a || !b) return '—';
  const ms = new Date(b) - new Date(a);
  return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s';
}

async function pageRuns(page, p, q) {
  const app = await appHeader(page, 'Runs', p.app, 'runs');
  if (!app) return;
  const status = q.get('status') || '';
  const flows = (await api('GET', '/applications/' + app.id + '/flows')).items;
  const names = Object.fromEntries(flows.map((f) => [f.id, f.name]));
  const box = alertBox();
  const filters = h('div', { class: 'filters', role: 'group', 'aria-label': 'Filter by status' },
    ['', ...RUN_STATUSES].map((s) => link('/apps/' + app.id + '/runs' + (s ? '?status=' + s : ''), s || 'all',
      { class: 'chip', 'aria-current': s === status ? 'true' : null })));
  page.append(filters);
  if (can('runTrigger') && flows.length) {
    const pick = select(flows.map((f) => [f.id, f.name]), flows[0].id, { id: 'run-flow' });
    page.append(h('div', { class: 'toolbar' }, field('Flow', pick), btn('Trigger run', async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api('POST', '/flows/' + pick.value + '/runs');
        go('/runs/' + r.id, { notice: 'Run queued.' });
      } catch (e) { showError(box, e); ev.target.disabled = false; }
    }, { id: 'run-trigger', class: 'primary create' })));
  }
  page.append(box);
  const tbody = h('tbody');
  const more = btn('Load more', () => load(), { id: 'runs-more', hidden: true });
  let cursor = null;
  const load = async () => {
    const qs = new URLSearchParams({ limit: '50' });
    if (status) qs.set('status', status);
    if (cursor) qs.set('cursor', cursor);
    try {
      const r = await api('GET', '/applications/' + app.id + '/runs?' + qs);
      for (const run of r.items) tbody.append(runRow(run, names, box));
      cursor = r.next_cursor || null;
      more.hidden = !cursor;
      if (!tbody.children.length) tbody.append(h('tr', {}, h('td', { colspan: 7 }, empty(status ? 'No ' + status + ' runs.' : 'No runs yet.'))));
    } catch (e) { showError(box, e); }
  };
  page.append(h('div', { class: 'table-wrap' }, h('table', { id: 'runs-table' },
    h('thead', {}, h('tr', {}, ['Run', 'Flow', 'Status', 'Trigger', 'Queued', 'Duration', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
    tbody)), more);
  await load();
  liveRuns(app.id, status, tbody, names, box);
}

function runRow(run, names, box) {
  return h('tr', { 'data-id': run.id, 'data-queued': run.queued_at },
    h('td', {}, link('/runs/' + run.id, run.id.slice(0, 8))),
    h('td', { text: (names[run.flow_id] || run.flow_id) + ' v' + run.flow_version }),
    h('td', {}, badge(run.status), run.reason ? h('span', { class: 'hint', text: ' ' + run.reason }) : null),
    h('td', { text: run.trigger }),
    h('td', { text: fmtTime(run.queued_at) }),
    h('td', { text: duration(run.started_at, run.finished_at) }),
    h('td', {}, can('runTrigger') && active(run.status) ? btn('Cancel', async () => {
      try { await api('POST', '/runs/' + run.id + '/cancel'); render(); } catch (e) { showError(box, e); }
    }) : null));
}

async function pageRun(page, p) {
  const run = await api('GET', '/runs/' + p.id);
  setApp(run.application_id);
  let flow = null;
  try { flow = await api('GET', '/flows/' + run.flow_id + '/versions/' + run.flow_version); } catch (e) { flow = null; }
  const box = alertBox();
  page.append(h('h1', { text: 'Run ' + run.id.slice(0, 8) }),
    h('p', { class: 'crumbs' }, link('/apps/' + run.application_id + '/runs', '← All runs'),
      flow ? [' · ', link('/flows/' + run.flow_id, 'Flow “' + flow.name + '”')] : null),
    box,
    h('dl', { class: 'facts', id: 'run-facts' },
      h('dt', { text: 'Status' }), h('dd', {}, badge(run.status)),
      h('dt', { text: 'Flow version' }), h('dd', { text: 'v' + run.flow_version }),
      h('dt', { text: 'Trigger' }), h('dd', { text: run.trigger + (run.triggered_by ? ' by ' + run.triggered_by : '') }),
      h('dt', { text: 'Queued' }), h('dd', { text: fmtTime(run.queued_at) }),
      h('dt', { text: 'Started' }), h('dd', { text: fmtTime(run.started_at) }),
      h('dt', { text: 'Finished' }), h('dd', { text: fmtTime(run.finished_at) }),
      h('dt', { text: 'Duration' }), h('dd', { text: duration(run.started_at, run.finished_at) }),
      run.reason ? [h('dt', { text: 'Reason' }), h('dd', { text: run.reason })] : null,
      run.error ? [h('dt', { text: 'Error' }), h('dd', { class: 'error-text', text: run.error })] : null));
  const actions = h('div', { class: 'actions' });
  if (can('runTrigger') && active(run.status)) {
    actions.append(btn('Cancel run', async () => {
      try { await api('POST', '/runs/' + run.id + '/cancel'); render(); } catch (e) { showError(box, e); }
    }, { class: 'danger', id: 'run-cancel' }));
  }
  page.append(actions);
  liveRun(run, page);
  page.append(h('h2', { text: 'Steps' }));
  const byIndex = Object.fromEntries(run.steps.map((s) => [s.index, s]));
  const n = Math.max(run.step_count || 0, run.steps.length);
  if (!n) { page.append(empty('This flow version has no steps.')); return; }
  const list = h('ol', { class: 'run-steps', id: 'run-steps' });
  for (let i = 0; i < n; i++) {
    const s = byIndex[i];
    const def = flow && flow.steps ? flow.steps[i] : null;
    const li = h('li', { class: 'run-step', 'data-step': String(i) },
      h('div', { class: 'step-head' },
        h('strong', { text: 'Step ' + (i + 1) + (def ? ' · ' + def.type : '') }), ' ',
        badge(s ? s.status : 'pending'),
        h('span', { class: 'hint', text: s && s.duration_ms != null ? ' ' + s.duration_ms + ' ms' : '' })),
      def ? h('p', { class: 'hint', text: describeStep(def) }) : null,
      s && s.error ? h('p', { class: 'error-text', text: s.error }) : null,
      s && s.reason ? h('p', { class: 'hint', text: 'Reason: ' + s.reason }) : null);
    if (s && s.has_screenshot) {
      const slot = h('div', { class: 'shot', text: 'Loading screenshot…' });
      li.append(slot);
      loadShot(run.id, i, slot);
    }
    list.append(li);
  }
  page.append(list);
}

// ---- live run pages (issue 22): Server-Sent Events from /runs/{id}/events and
// /applications/{app}/runs/events. One stream at a time; render() closes it.
let liveSource = null;

function liveStop() {
  if (liveSource) { liveSource.close(); liveSource = null; }
}

function liveOpen(path, handlers) {
  liveStop();
  if (typeof EventSource === 'undefined') return null;
  const es = new EventSource('/api/v1' + path, { withCredentials: true });
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (ev) => { let d = null; try { d = JSON.parse(ev.data); } catch (e) { return; } fn(d, es); });
  }
  liveSource = es;
  return es;
}

// The run page re-renders itself when the run's status, a step or a screenshot changes, and
// says when nothing can run a queued run (with how to start an agent).
function liveRun(run, page) {
  const known = Object.fromEntries(run.steps.map((s) => [s.index, s.status + '|' + s.has_screenshot]));
  if (run.status === 'queued') runnerHint(page);
  if (!active(run.status)) return;
  let pending = null;
  const refresh = () => { if (!pending) pending = setTimeout(() => { pending = null; render(); }, 150); };
  liveOpen('/runs/' + run.id + '/events', {
    status: (d, es) => { if (!active(d.status)) es.close(); if (d.status !== run.status) refresh(); },
    step: (d) => { if (known[d.index] !== d.status + '|' + d.has_screenshot) refresh(); },
    screenshot: (d) => { if (!String(known[d.index] || '').endsWith('|true')) refresh(); },
  });
}

async function runnerHint(page) {
  let r;
  try { r = await api('GET', '/runners'); } catch (e) { return; }
  if (r.can_run) return;
  const why = r.embedded && r.embedded.reason ? 'The embedded runner is off: ' + r.embedded.reason + '. ' : '';
  page.querySelector('.actions')?.before(h('div', { class: 'banner warning', id: 'runner-hint', role: 'status' },
    h('strong', { text: 'Nothing can run this queued run. ' }),
    h('span', { text: why + 'No agent has been seen in the last 5 minutes. To start one: ' + r.how_to_start_agent })));
}

// The runs list updates rows in place (and adds new runs on top) as they change.
function liveRuns(appId, status, tbody, names, box) {
  liveOpen('/applications/' + appId + '/runs/events', {
    run: (run) => {
      const row = tbody.querySelector('tr[data-id="' + CSS.escape(run.id) + '"]');
      const fits = !status || run.status === status;
      if (row) { if (fits) row.replaceWith(runRow(run, names, box)); else row.remove(); return; }
      if (!fits) return;
      const first = tbody.querySelector('tr[data-id]');
      if (!first) tbody.replaceChildren();
      if (!first || run.queued_at >= (first.dataset.queued || '')) tbody.prepend(runRow(run, names, box));
    },
  });
}

function describeStep(d) {
  switch (d.type) {
    case 'navigate': return 'Go to ' + d.url;
    case 'click': return 'Click ' + d.selector;
    case 'fill': return 'Fill ' + d.selector;
    case 'select': return 'Select “' + d.value + '” in ' + d.selector;
    case 'wait': return 'Wait for ' + d.for + (d.selector ? ' ' + d.selector : '') + (d.url ? ' ' + d.url : '');
    case 'assert': return 'Assert ' + d.selector + ' ' + d.assertion + (d.expected ? ' “' + d.expected + '”' : '');
    case 'checkpoint': return 'Checkpoint: ' + d.expectation;
    case 'screenshot': return 'Screenshot' + (d.mask && d.mask.length ? ', masking ' + d.mask.join(', ') : '');
    default: return d.type;
  }
}

async function loadShot(runId, i, slot) {
  try {
    const u = await api('GET', '/runs/' + runId + '/steps/' + i + '/screenshot');
    const img = h('img', { src: u.url, alt: 'Screenshot of step ' + (i + 1) + ' (masked areas are black)', class: 'screenshot', id: 'shot-' + i });
    img.addEventListener('error', () => slot.replaceChildren(h('p', { class: 'error-text', text: 'The screenshot could not be loaded (the signed link may have expired — refresh the page).' })));
    slot.replaceChildren(h('a', { href: u.url, target: '_blank', rel: 'noopener' }, img),
      h('p', { class: 'hint', text: 'Signed link valid until ' + fmtTime(u.expires_at) }));
  } catch (e) {
    slot.replaceChildren(h('p', { class: 'error-text', text: message(e) }));
  }
}

// ---------------------------------------------------------------------------------------------
// Variables

async function pageVariables(page, p) {
  const app = await appHeader(page, 'Variables', p.app, 'variables');
  if (!app) return;
  const vars = (await api('GET', '/applications/' + app.id + '/variables')).items;
  const box = alertBox();
  page.append(box);
  if (can('varWrite')) {
    const name = input({ id: 'var-name', required: true, autocomplete: 'off' });
    const secret = h('input', { type: 'checkbox', id: 'var-secret' });
    const value = input({ id: 'var-value', autocomplete: 'off' });
    secret.addEventListener('change', () => { value.type = secret.checked ? 'password' : 'text'; });
    const form = h('form', { class: 'card', novalidate: true }, h('h2', { text: 'Set a variable' }),
      field('Name', name, 'Use it in steps as {{name}}.'), field('Value', value),
      field('Secret (write-only: never shown again, masked in screenshots)', secret),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary create' }, 'Save variable')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(box);
      name.removeAttribute('aria-invalid');
      if (!name.value.trim()) {
        name.setAttribute('aria-invalid', 'true');
        showOk(box, '');
        box.className = 'alert error';
        box.textContent = 'Enter a variable name (letters, digits and _, not starting with a digit).';
        name.focus();
        return;
      }
      try {
        await api('PUT', '/applications/' + app.id + '/variables/' + encodeURIComponent(name.value.trim()), { value: value.value, secret: secret.checked });
        go(location.pathname, { notice: 'Variable “' + name.value.trim() + '” saved.' });
      } catch (e) { showError(box, e); }
    });
    page.append(form);
  }
  if (!vars.length) { page.append(empty('No variables yet.')); return; }
  page.append(table(['Name', 'Kind', 'Value', 'Updated', 'Actions'], vars.map((v) => h('tr', {},
    h('td', {}, h('code', { text: v.name })),
    h('td', { text: v.secret ? 'secret' : 'plain' }),
    h('td', { text: v.secret ? (v.set ? '•••••• (set, write-only)' : 'not set') : v.value }),
    h('td', { text: fmtTime(v.updated_at) }),
    h('td', {}, can('varWrite') ? btn('Delete', async () => {
      if (!confirm('Delete variable ' + v.name + '?')) return;
      try { await api('DELETE', '/applications/' + app.id + '/variables/' + encodeURIComponent(v.name)); render(); } catch (e) { showError(box, e); }
    }, { class: 'danger' }) : null))), { id: 'vars-table' }));
}

// ---------------------------------------------------------------------------------------------
// Members

async function pageMembers(page) {
  const members = (await api('GET', '/members')).items;
  const box = alertBox();
  const roles = state.me.role === 'owner' ? ['owner', 'admin', 'tester', 'viewer'] : ['admin', 'tester', 'viewer'];
  page.append(h('h1', { text: 'Members and roles' }), box,
    h('p', { class: 'hint', text: 'Owner: everything. Admin: applications, flows, members, agent tokens. Tester: flows and runs. Viewer: read only.' }));
  if (can('memberWrite')) {
    const email = input({ id: 'member-email', type: 'email', autocomplete: 'off', required: true });
    const role = select(roles, 'viewer', { id: 'member-role' });
    const pw = input({ id: 'member-password', type: 'password', autocomplete: 'new-password' });
    const form = h('form', { class: 'card', novalidate: true }, h('h2', { text: 'Add a member' }),
      field('Email', email), field('Role', role), field('Initial password', pw, 'At least 12 characters; the member must change it at first sign-in.'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary create' }, 'Add member')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(box);
      try {
        await api('POST', '/members', { email: email.value.trim(), role: role.value, password: pw.value });
        go('/members', { notice: 'Member added.' });
      } catch (e) { showError(box, e); }
    });
    page.append(form);
  }
  if (!members.length) { page.append(empty('No members.')); return; }
  page.append(table(['Email', 'Name', 'Role', 'Source', 'Active', 'Actions'], members.map((m) => {
    const canTouch = can('memberWrite') && (state.me.role === 'owner' || m.role !== 'owner') && m.id !== state.me.id;
    const roleCell = canTouch ? select(roles.includes(m.role) ? roles : [m.role, ...roles], m.role, { 'aria-label': 'Role of ' + m.email }) : null;
    if (roleCell) {
      roleCell.addEventListener('change', async () => {
        try { await api('PATCH', '/members/' + m.id, { role: roleCell.value }); showOk(box, 'Role of ' + m.email + ' is now ' + roleCell.value + '.'); } catch (e) { roleCell.value = m.role; showError(box, e); }
      });
    }
    return h('tr', {},
      h('td', { text: m.email }), h('td', { text: m.display_name || '—' }),
      h('td', {}, roleCell || m.role), h('td', { text: m.source }), h('td', { text: m.active ? 'yes' : 'no' }),
      h('td', {}, canTouch ? btn('Remove', async () => {
        if (!confirm('Remove ' + m.email + '?')) return;
        try { await api('DELETE', '/members/' + m.id); render(); } catch (e) { showError(box, e); }
      }, { class: 'danger' }) : null));
  }), { id: 'members-table' }));
}

// ---------------------------------------------------------------------------------------------
// Tokens

function shownOnce(token) {
  const out = h('output', { class: 'secret', id: 'token-value', text: token });
  const status = h('span', { class: 'hint', role: 'status' });
  return h('div', { class: 'alert ok once', role: 'status' },
    h('p', {}, h('strong', { text: 'Copy this token now — it is shown only once.' })), out, ' ',
    btn('Copy', async () => {
      try {
        await navigator.clipboard.writeText(token);
        status.textContent = ' Copied.';
      } catch (e) {
        const r = document.createRange();
        r.selectNodeContents(out);
        const sel = getSelection();
        sel.removeAllRanges();
        sel.addRange(r);
        status.textContent = ' Selected — press Ctrl+C to copy.';
      }
    }, { id: 'token-copy' }), status);
}

async function pageTokens(page) {
  const list = await apps();
  const names = Object.fromEntries(list.map((a) => [a.id, a.name]));
  const agent = (await api('GET', '/agent-tokens')).items;
  const scim = can('scimTokens') ? (await api('GET', '/scim-tokens')).items : null;
  const once = h('div');
  const box = alertBox();
  page.append(h('h1', { text: 'Agent and SCIM tokens' }), once, box);
  const section = (title, items, kind, form) => {
    page.append(h('h2', { text: title }), form);
    if (!items.length) { page.append(empty('No ' + kind + ' tokens yet.')); return; }
    page.append(table(['Name', kind === 'agent' ? 'Application' : 'Kind', 'Prefix', 'Created', 'Actions'], items.map((t) => h('tr', {},
      h('td', { text: t.name }), h('td', { text: kind === 'agent' ? names[t.application_id] || t.application_id : 'SCIM' }),
      h('td', {}, h('code', { text: t.prefix })), h('td', { text: fmtTime(t.created_at) + ' by ' + t.created_by }),
      h('td', {}, btn('Revoke', async () => {
        if (!confirm('Revoke token ' + t.name + '? Clients using it stop working at once.')) return;
        try { await api('DELETE', '/' + kind + '-tokens/' + t.id); render(); } catch (e) { showError(box, e); }
      }, { class: 'danger' })))), { id: kind + '-tokens-table' }));
  };
  const created = (t) => {
    once.replaceChildren(shownOnce(t.token));
    const c = document.getElementById('token-copy');
    if (c) c.focus();
  };
  // agent tokens
  const agentForm = h('form', { class: 'card', novalidate: true });
  if (!list.length) {
    agentForm.append(empty('Create an application first: an agent token is scoped to one application.'));
  } else {
    const app = select(list.map((a) => [a.id, a.name]), state.appId, { id: 'agent-token-app' });
    const name = input({ id: 'agent-token-name', required: true });
    agentForm.append(field('Application', app), field('Token name', name),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary create' }, 'Create agent token')));
    agentForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(box);
      try {
        const t = await api('POST', '/agent-tokens', { application_id: app.value, name: name.value.trim() });
        name.value = '';
        created(t);
      } catch (e) { showError(box, e); }
    });
  }
  section('Agent tokens', agent, 'agent', agentForm);
  if (scim) {
    const name = input({ id: 'scim-token-name', required: true });
    const scimForm = h('form', { class: 'card', novalidate: true }, field('Token name (e.g. the IdP)', name),
      h('p', { class: 'hint', text: 'SCIM base URL for the identity provider: ' + location.origin + '/scim/v2' }),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary create' }, 'Create SCIM token')));
    scimForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(box);
      try { const t = await api('POST', '/scim-tokens', { name: name.value.trim() }); name.value = ''; created(t); } catch (e) { showError(box, e); }
    });
    section('SCIM tokens', scim, 'scim', scimForm);
  }
}

// ---------------------------------------------------------------------------------------------
// Audit log

async function license() {
  if (state.license === undefined) {
    try { state.license = can('license') ? await optional('/license') : null; } catch (e) { state.license = null; }
  }
  return state.license;
}

function toIso(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' + pad(d.getHours()) + ':' + pad(d.getMinutes());
}

async function pageAudit(page, _p, q) {
  const lic = await license();
  const from = input({ id: 'audit-from', type: 'datetime-local', value: toLocal(q.get('from')) });
  const to = input({ id: 'audit-to', type: 'datetime-local', value: toLocal(q.get('to')) });
  const action = input({ id: 'audit-action', value: q.get('action') || '', placeholder: 'e.g. flow.create' });
  const actor = input({ id: 'audit-actor', value: q.get('actor') || '', placeholder: 'email' });
  const form = h('form', { class: 'card filters-form', novalidate: true },
    field('From', from), field('To', to), field('Action', action), field('Actor', actor),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply filters')));
  const params = () => {
    const s = new URLSearchParams();
    if (toIso(from.value)) s.set('from', toIso(from.value));
    if (toIso(to.value)) s.set('to', toIso(to.value));
    if (action.value.trim()) s.set('action', action.value.trim());
    if (actor.value.trim()) s.set('actor', actor.value.trim());
    return s;
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); go('/audit?' + params()); });
  page.append(h('h1', { text: 'Audit log' }), form);
  const exportOk = lic && lic.entitlements && (lic.entitlements.features || []).includes('audit.export');
  if (exportOk) {
    const ex = (fmt) => {
      const s = new URLSearchParams();
      if (q.get('from')) s.set('from', q.get('from'));
      if (q.get('to')) s.set('to', q.get('to'));
      s.set('format', fmt);
      return '/api/v1/audit/export?' + s;
    };
    page.append(h('div', { class: 'actions', id: 'audit-export' },
      h('a', { class: 'button', href: ex('csv'), download: '' }, 'Export CSV'),
      h('a', { class: 'button', href: ex('ndjson'), download: '' }, 'Export NDJSON'),
      h('span', { class: 'hint', text: ' Exports end with a signed trailer line (row count, last hash).' })));
  } else {
    page.append(h('p', { class: 'hint', id: 'audit-export-note', text: lic ? 'Export (CSV/NDJSON) needs the license feature audit.export.' : 'Export is not available on this appliance or license.' }));
  }
  const box = alertBox();
  page.append(box);
  const qs = new URLSearchParams();
  for (const k of ['from', 'to', 'action', 'actor', 'cursor']) if (q.get(k)) qs.set(k, q.get(k));
  qs.set('limit', '50');
  let pageData;
  try {
    pageData = await api('GET', '/audit?' + qs);
  } catch (e) {
    if (e.code === 'invalid_cursor') { go('/audit', { replace: true, notice: message(e) }); return; }
    throw e;
  }
  if (!pageData.items.length) {
    page.append(empty(q.toString() ? 'No audit rows match these filters.' : 'No audit rows yet.'));
  } else {
    page.append(table(['Time', 'Actor', 'Role', 'Action', 'Target', 'Client', 'Details'], pageData.items.map((r) => h('tr', { 'data-seq': String(r.seq) },
      h('td', { text: fmtTime(r.ts) }), h('td', { text: r.actor_email || '—' }), h('td', { text: r.actor_role || '—' }),
      h('td', {}, h('code', { text: r.action })), h('td', { text: r.target || '—' }), h('td', { text: r.client_ip || '—' }),
      h('td', { class: 'details' }, r.details && Object.keys(r.details).length ? h('code', { text: JSON.stringify(r.details) }) : '—'))), { id: 'audit-table' }));
  }
  const nav = h('div', { class: 'actions pager' });
  if (q.get('cursor')) {
    const first = new URLSearchParams(q);
    first.delete('cursor');
    nav.append(link('/audit?' + first, 'First page', { class: 'button' }));
  }
  if (pageData.next_cursor) {
    const next = new URLSearchParams(q);
    next.set('cursor', pageData.next_cursor);
    nav.append(link('/audit?' + next, 'Next page', { class: 'button', id: 'audit-next' }));
  }
  page.append(nav);
}

// ---------------------------------------------------------------------------------------------
// Keys, license

async function pageKeys(page) {
  const k = await api('GET', '/keys');
  const box = alertBox();
  page.append(h('h1', { text: 'Encryption keys' }), box,
    h('dl', { class: 'facts' },
      h('dt', { text: 'Active version' }), h('dd', { text: k.active_version != null ? 'v' + k.active_version : '—' }),
      h('dt', { text: 'Pending version' }), h('dd', { text: k.pending_version != null ? 'v' + k.pending_version + ' (rotation unfinished)' : 'none' }),
      h('dt', { text: 'Rotation period' }), h('dd', { text: k.rotation_days + ' days' }),
      h('dt', { text: 'Next rotation' }), h('dd', { text: fmtTime(k.next_rotation_at) + (k.rotation_due ? ' (due now)' : '') })));
  const rotate = btn('Rotate now', async () => {
    if (!confirm('Rotate the tenant keys now? Requests keep being served; this can take a while for large stores.')) return;
    rotate.disabled = true;
    rotate.textContent = 'Rotating…';
    try {
      const r = await api('POST', '/keys/rotate');
      go('/keys', { notice: 'Rotated v' + r.rotation.from_version + ' → v' + r.rotation.to_version + ': ' + r.rotation.secrets_resealed + ' secrets and ' + r.rotation.screenshots_resealed + ' screenshots re-sealed.' });
    } catch (e) {
      showError(box, e);
      rotate.disabled = false;
      rotate.textContent = 'Rotate now';
    }
  }, { class: 'primary', id: 'keys-rotate' });
  page.append(h('div', { class: 'actions' }, rotate));
  page.append(table(['Version', 'State', 'Database key', 'Data key', 'Created', 'Retired'], k.versions.map((v) => h('tr', {},
    h('td', { text: 'v' + v.version }), h('td', { text: v.state }), h('td', { text: v.db_key_state }), h('td', { text: v.dek_state }),
    h('td', { text: fmtTime(v.created_at) }), h('td', { text: fmtTime(v.retired_at) }))), { id: 'keys-table' }));
}

async function pageLicense(page) {
  state.license = undefined;
  const lic = await license();
  page.append(h('h1', { text: 'License' }));
  if (!lic) {
    page.append(empty('License information is not available on this appliance version. Without a license the appliance runs as Free (1 application, 7-day retention, no export).'));
    return;
  }
  const e = lic.entitlements || {};
  page.append(h('dl', { class: 'facts', id: 'license-facts' },
    h('dt', { text: 'Status' }), h('dd', {}, badge(lic.status)),
    h('dt', { text: 'License id' }), h('dd', { text: lic.license_id || '—' }),
    h('dt', { text: 'Licensee' }), h('dd', { text: lic.licensee || '—' }),
    h('dt', { text: 'Expires' }), h('dd', { text: fmtTime(lic.expires_at) }),
    h('dt', { text: 'Plan' }), h('dd', { text: e.plan || '—' }),
    h('dt', { text: 'Features' }), h('dd', { text: (e.features || []).join(', ') || 'none' }),
    h('dt', { text: 'Applications' }), h('dd', { text: e.max_applications == null ? 'unlimited' : String(e.max_applications) }),
    h('dt', { text: 'Users' }), h('dd', { text: e.max_users == null ? 'unlimited' : String(e.max_users) }),
    h('dt', { text: 'Retention' }), h('dd', { text: e.retention_days != null ? e.retention_days + ' days' : '—' })));
}

// ---------------------------------------------------------------------------------------------
// LDAP

async function pageSso(page) {
  const cfg = (await optional('/sso/ldap')) || {
    enabled: false, url: '', starttls: false, ca_pem: '', client_cert_pem: null, client_key_set: false, bind_dn: '', bind_password_set: false,
    user_base: '', user_filter: '(uid={username})', email_attr: 'mail', name_attr: 'cn', member_of_attr: null, group_base: null,
    group_filter: null, nested_groups: false, nested_max_depth: 5, role_mapping: [], default_role: null,
  };
  const box = alertBox();
  page.append(h('h1', { text: 'Directory (LDAP) sign-in' }), box);
  const f = {
    enabled: h('input', { type: 'checkbox', id: 'ldap-enabled', checked: cfg.enabled }),
    url: input({ id: 'ldap-url', value: cfg.url, placeholder: 'ldaps://ldap.example:636' }),
    starttls: h('input', { type: 'checkbox', id: 'ldap-starttls', checked: cfg.starttls }),
    ca_pem: h('textarea', { id: 'ldap-ca', rows: 4, value: cfg.ca_pem || '' }),
    client_cert_pem: h('textarea', { id: 'ldap-client-cert', rows: 3, value: cfg.client_cert_pem || '' }),
    client_key_pem: h('textarea', { id: 'ldap-client-key', rows: 3, autocomplete: 'off', placeholder: cfg.client_key_set ? 'set — leave empty to keep' : '' }),
    bind_dn: input({ id: 'ldap-bind-dn', value: cfg.bind_dn }),
    bind_password: input({ id: 'ldap-bind-pw', type: 'password', autocomplete: 'off', placeholder: cfg.bind_password_set ? 'set — leave empty to keep' : '' }),
    user_base: input({ id: 'ldap-user-base', value: cfg.user_base }),
    user_filter: input({ id: 'ldap-user-filter', value: cfg.user_filter }),
    email_attr: input({ id: 'ldap-email-attr', value: cfg.email_attr }),
    name_attr: input({ id: 'ldap-name-attr', value: cfg.name_attr }),
    member_of_attr: input({ id: 'ldap-memberof', value: cfg.member_of_attr || '' }),
    group_base: input({ id: 'ldap-group-base', value: cfg.group_base || '' }),
    group_filter: input({ id: 'ldap-group-filter', value: cfg.group_filter || '' }),
    nested_groups: h('input', { type: 'checkbox', id: 'ldap-nested', checked: cfg.nested_groups }),
    nested_max_depth: input({ id: 'ldap-depth', type: 'number', min: 1, value: cfg.nested_max_depth }),
    default_role: select([['', 'none (no access without a mapped group)'], 'viewer', 'tester', 'admin'], cfg.default_role || '', { id: 'ldap-default-role' }),
  };
  const mapping = (cfg.role_mapping || []).map((m) => ({ ...m }));
  const mapList = h('div', { id: 'ldap-mapping' });
  const drawMap = () => mapList.replaceChildren(...mapping.map((m, i) => {
    const dn = input({ value: m.group_dn, 'aria-label': 'Group DN ' + (i + 1) });
    dn.addEventListener('input', () => { m.group_dn = dn.value; });
    const role = select(['owner', 'admin', 'tester', 'viewer'], m.role, { 'aria-label': 'Role for group ' + (i + 1) });
    role.addEventListener('change', () => { m.role = role.value; });
    return h('div', { class: 'row' }, dn, role, btn('Remove', () => { mapping.splice(i, 1); drawMap(); }));
  }));
  drawMap();
  const labels = {
    enabled: 'Enabled', url: 'Server URL (ldaps://, or ldap:// with StartTLS)', starttls: 'Use StartTLS', ca_pem: 'CA certificate (PEM)',
    client_cert_pem: 'Client certificate (PEM, optional)', client_key_pem: 'Client key (PEM, write-only)', bind_dn: 'Service bind DN',
    bind_password: 'Service bind password (write-only)', user_base: 'User search base', user_filter: 'User filter ({username} is replaced)',
    email_attr: 'Email attribute', name_attr: 'Display name attribute', member_of_attr: 'memberOf attribute (optional)',
    group_base: 'Group search base (optional)', group_filter: 'Group filter (optional)', nested_groups: 'Resolve nested groups',
    nested_max_depth: 'Nested group depth', default_role: 'Default role',
  };
  const form = h('form', { class: 'card', novalidate: true }, Object.entries(f).map(([k, c]) => field(labels[k], c)),
    h('h2', { text: 'Group → role mapping' }), mapList,
    btn('Add mapping', () => { mapping.push({ group_dn: '', role: 'viewer' }); drawMap(); }),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save LDAP settings'),
      btn('Test connection', async () => {
        clear(box);
        try {
          const r = await api('POST', '/sso/ldap/test-connection');
          showOk(box, (r.ok ? 'Connected' : 'Not OK') + ' over ' + r.tls + '; service bind ' + (r.service_bind ? 'succeeded' : 'failed') + ' (' + r.elapsed_ms + ' ms).');
        } catch (e) { showError(box, e); }
      })));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    const opt = (v) => (v.trim() ? v.trim() : null);
    const body = {
      enabled: f.enabled.checked, url: f.url.value.trim(), starttls: f.starttls.checked, ca_pem: f.ca_pem.value,
      client_cert_pem: opt(f.client_cert_pem.value), bind_dn: f.bind_dn.value.trim(), user_base: f.user_base.value.trim(),
      user_filter: f.user_filter.value.trim(), email_attr: f.email_attr.value.trim(), name_attr: f.name_attr.value.trim(),
      member_of_attr: opt(f.member_of_attr.value), group_base: opt(f.group_base.value), group_filter: opt(f.group_filter.value),
      nested_groups: f.nested_groups.checked, nested_max_depth: Number(f.nested_max_depth.value || 5),
      role_mapping: mapping.filter((m) => m.group_dn.trim()), default_role: f.default_role.value || null,
    };
    if (f.bind_password.value) body.bind_password = f.bind_password.value;
    if (f.client_key_pem.value.trim()) body.client_key_pem = f.client_key_pem.value;
    try {
      await api('PUT', '/sso/ldap', body);
      go('/sso', { notice: 'LDAP settings saved.' });
    } catch (e) {
      showError(box, e);
      const c = f[e.problem && e.problem.field];
      if (c) { c.setAttribute('aria-invalid', 'true'); c.focus(); }
    }
  });
  page.append(form);
  // dry run
  const user = input({ id: 'ldap-dry-user', autocomplete: 'off' });
  const out = h('div', { id: 'ldap-dry-result', role: 'status' });
  const dry = h('form', { class: 'card', novalidate: true }, h('h2', { text: 'Mapping dry run' }),
    h('p', { class: 'hint', text: 'Look a user up and see the groups and role a sign-in would get — no password, nobody is signed in.' }),
    field('Login name', user), h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Run dry run')), out);
  dry.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren(h('p', { class: 'loading', text: 'Asking the directory…' }));
    try {
      const r = await api('POST', '/sso/ldap/test', { username: user.value.trim() });
      out.replaceChildren(h('dl', { class: 'facts' },
        h('dt', { text: 'Outcome' }), h('dd', { text: r.outcome }),
        h('dt', { text: 'DN' }), h('dd', { text: r.dn || '—' }),
        h('dt', { text: 'Email' }), h('dd', { text: r.email || '—' }),
        h('dt', { text: 'Groups' }), h('dd', { text: ((r.groups || []).join('; ') || 'none') + (r.truncated ? ' (truncated)' : '') }),
        h('dt', { text: 'Matched mappings' }), h('dd', { text: (r.matched || []).map((m) => m.group_dn + ' → ' + m.role).join('; ') || 'none' }),
        h('dt', { text: 'Role' }), h('dd', { text: (r.role || 'no access') + (r.by_default ? ' (default role)' : '') })));
    } catch (e) {
      out.replaceChildren(h('p', { class: 'alert error', role: 'alert', text: message(e) }));
    }
  });
  page.append(dry);
}

// ---------------------------------------------------------------------------------------------
// AI endpoint

async function pageAi(page) {
  const cur = await optional('/ai-endpoint');
  page.append(h('h1', { text: 'AI endpoint' }));
  if (!cur) {
    page.append(empty('AI endpoint settings are not available on this appliance version. Checkpoint steps stay “not evaluated” until an endpoint is configured.'));
    return;
  }
  const box = alertBox();
  page.append(h('p', { class: 'hint', text: 'Checkpoint steps are judged only by the endpoint configured here (or the operator’s deployment default). There is no public default and no fallback.' }),
    h('dl', { class: 'facts', id: 'ai-facts' },
      h('dt', { text: 'Source' }), h('dd', { text: cur.source }),
      h('dt', { text: 'Kind' }), h('dd', { text: cur.kind || '—' }),
      h('dt', { text: 'Base URL' }), h('dd', { text: cur.base_url || '—' }),
      h('dt', { text: 'Model' }), h('dd', { text: cur.model || '—' }),
      h('dt', { text: 'API key' }), h('dd', { text: cur.api_key_set ? 'set (write-only)' : 'none' }),
      h('dt', { text: 'CA certificates' }), h('dd', { text: cur.ca_pem_set ? 'custom (stored; replaces the built-in roots)' : 'built-in roots' })), box);
  const f = {
    kind: select([['openai-chat', 'OpenAI-compatible chat completions'], ['anthropic-messages', 'Anthropic Messages API']], cur.kind || 'openai-chat', { id: 'ai-kind' }),
    base_url: input({ id: 'ai-base-url', type: 'url', value: cur.source === 'tenant' ? cur.base_url || '' : '', placeholder: 'https://llm.internal.example' }),
    model: input({ id: 'ai-model', value: cur.source === 'tenant' ? cur.model || '' : '' }),
    api_key: input({ id: 'ai-key', type: 'password', autocomplete: 'off' }),
    ca_pem: h('textarea', { id: 'ai-ca', rows: 3 }),
    timeout_ms: input({ id: 'ai-timeout', type: 'number', min: 100, value: cur.timeout_ms || '' }),
    max_tokens: input({ id: 'ai-max-tokens', type: 'number', min: 16, value: cur.max_tokens || '' }),
  };
  const labels = { kind: 'Kind', base_url: 'Base URL (https)', model: 'Model', api_key: 'API key (write-only; leave empty for none)', ca_pem: 'CA certificates (PEM, optional; replaces the built-in roots)', timeout_ms: 'Timeout (ms)', max_tokens: 'Max tokens' };
  const form = h('form', { class: 'card', novalidate: true }, h('h2', { text: 'Tenant endpoint' }),
    h('p', { class: 'hint', text: 'Saving replaces the tenant endpoint completely: a stored API key and CA certificates are not kept, so enter them again.' }),
    Object.entries(f).map(([k, c]) => field(labels[k], c)),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save endpoint'),
      btn('Test endpoint', async () => {
        clear(box);
        try {
          const r = await api('POST', '/ai-endpoint/test');
          (r.ok ? showOk : (b, t) => showError(b, new ApiError(0, { detail: t })))(box, 'Test ' + (r.ok ? 'passed' : 'failed') + ': ' + (r.outcome || '') + (r.error ? ' — ' + r.error : '') + ' (' + r.model + ', ' + r.latency_ms + ' ms)');
        } catch (e) { showError(box, e); }
      }),
      cur.source === 'tenant' ? btn('Remove tenant endpoint', async () => {
        if (!confirm('Remove the tenant endpoint and fall back to the deployment default (if any)?')) return;
        try { await api('DELETE', '/ai-endpoint'); go('/ai', { notice: 'Tenant endpoint removed.' }); } catch (e) { showError(box, e); }
      }, { class: 'danger' }) : null));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    const body = { kind: f.kind.value, base_url: f.base_url.value.trim(), model: f.model.value.trim() };
    if (f.api_key.value) body.api_key = f.api_key.value;
    if (f.ca_pem.value.trim()) body.ca_pem = f.ca_pem.value;
    if (f.timeout_ms.value) body.timeout_ms = Number(f.timeout_ms.value);
    if (f.max_tokens.value) body.max_tokens = Number(f.max_tokens.value);
    try {
      await api('PUT', '/ai-endpoint', body);
      go('/ai', { notice: 'AI endpoint saved.' });
    } catch (e) {
      showError(box, e);
      const c = f[e.problem && e.problem.field];
      if (c) { c.setAttribute('aria-invalid', 'true'); c.focus(); }
    }
  });
  page.append(form);
}

// ---------------------------------------------------------------------------------------------
// Account

async function pageAccount(page) {
  const me = await api('GET', '/me');
  state.me = me;
  renderBanners();
  const cur = input({ id: 'pw-current', type: 'password', autocomplete: 'current-password' });
  const next = input({ id: 'pw-new', type: 'password', autocomplete: 'new-password' });
  const box = alertBox();
  const form = h('form', { class: 'card narrow', novalidate: true }, h('h2', { text: 'Change password' }),
    field('Current password', cur), field('New password', next, '12 to 1024 characters. Your other sessions end.'), box,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Change password')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    try {
      await api('POST', '/me/password', { current_password: cur.value, new_password: next.value });
      cur.value = '';
      next.value = '';
      state.me.must_change_password = false;
      renderBanners();
      showOk(box, 'Password changed.');
    } catch (e) { showError(box, e); }
  });
  page.append(h('h1', { text: 'Account' }), h('dl', { class: 'facts' },
    h('dt', { text: 'Signed in as' }), h('dd', { text: me.name }),
    h('dt', { text: 'Role' }), h('dd', { text: me.role }),
    h('dt', { text: 'Tenant' }), h('dd', { text: me.tenant_id || 'platform (catalog)' })), form);
  if (me.kind === 'platform_admin') {
    page.append(h('p', { class: 'hint', text: 'Platform administrators manage tenants and licenses through the API and the host CLI; they never read tenant data.' }));
  }
}

// ---------------------------------------------------------------------------------------------

route('/signin', pageSignIn);
route('/applications', pageApplications, 'tenantRead');
route('/apps/:app/flows', pageFlows, 'tenantRead');
route('/apps/:app/flows/new', pageFlowNew, 'flowWrite');
route('/flows/:id', pageFlow, 'tenantRead');
route('/apps/:app/runs', pageRuns, 'tenantRead');
route('/runs/:id', pageRun, 'tenantRead');
route('/apps/:app/variables', pageVariables, 'varRead');
route('/members', pageMembers, 'memberRead');
route('/tokens', pageTokens, 'agentTokens');
route('/audit', pageAudit, 'audit');
route('/keys', pageKeys, 'keys');
route('/license', pageLicense, 'license');
route('/sso', pageSso, 'sso');
route('/ai', pageAi, 'ai');
route('/account', pageAccount);

render();
