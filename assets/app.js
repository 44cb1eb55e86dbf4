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
  integration: ['owner', 'admin'],
  ticketFile: ['owner', 'admin', 'tester'],
  platform: ['platform_admin'],
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
  oidc_not_configured: 'Single sign-on is not configured yet. Save the single sign-on settings first.',
  oidc_provider_error: 'The identity provider could not be used (discovery or signing keys).',
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
  // The field is marked in the form itself; the text stays in plain words.
  const where = '';
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
  // The API answers only /me, /me/password and logout until a one-time password is changed.
  if (state.me && state.me.must_change_password && path !== '/account') {
    history.replaceState({}, '', '/account');
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
  if (state.me.must_change_password) return '/account';
  if (state.me.kind === 'platform_admin') return '/platform/tenants';
  return '/applications';
}

async function afterSignIn() {
  state.apps = null;
  state.license = undefined;
  state.notifications = [];
  // Owners and PlatformAdmins get license warnings; other roles get an empty list.
  if (state.me && state.me.must_change_password) return;
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
  const entries = [];
  const add = (href, text, ok) => { if (ok) entries.push([href, text]); };
  const app = state.appId;
  const tenantUser = state.me.kind === 'user';
  add('/applications', 'Applications', tenantUser);
  add(app ? '/apps/' + app + '/flows' : '/applications', 'Flows', tenantUser);
  add(app ? '/apps/' + app + '/runs' : '/applications', 'Runs', tenantUser);
  add(app ? '/apps/' + app + '/variables' : '/applications', 'Variables', tenantUser && can('varRead'));
  add(app ? '/apps/' + app + '/integration' : '/applications', 'Integration', tenantUser && can('integration'));
  add('/members', 'Members', can('memberRead'));
  add('/tokens', 'Tokens', can('agentTokens'));
  add('/audit', 'Audit log', can('audit'));
  add('/keys', 'Keys', can('keys'));
  add('/license', 'License', can('license'));
  add('/sso', 'LDAP', can('sso'));
  add('/ai', 'AI endpoint', can('ai'));
  platformNav(add);
  add('/account', 'Account', true);
  const items = entries.map(([href, text]) => h('li', {}, link(href, text, href === currentNav(entries) ? { 'aria-current': 'page' } : {})));
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
  // The choice of account type only when some tenant of this deployment has a directory
  // (GET /auth/methods is deployment-wide; it says nothing about one tenant).
  const modeField = field('Account type', mode);
  modeField.hidden = true;
  const box = alertBox();
  const submit = h('button', { type: 'submit', id: 'signin-submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', novalidate: true },
    signInHelp(),
    field('Tenant', tenant, 'Tenant id or name. Leave empty to sign in as a platform administrator.'),
    field('Email or login name', email),
    field('Password', password),
    modeField,
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
  let methods = { password: true, ldap: true, oidc: true };
  try {
    methods = await api('GET', '/auth/methods');
  } catch (e) {
    // unknown: keep every choice offered
  }
  modeField.hidden = !methods.ldap;
  form.dataset.methods = (methods.ldap ? 'ldap ' : '') + (methods.oidc ? 'oidc' : '');
  if (!methods.ldap) mode.value = 'any';
  if (methods.oidc) ssoSignIn(page, form, tenant, q);
  else ssoRefusal(page, form, q);
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

// Options per step type (src/domain/flow.rs `Step`): [name, label, kind, default, only], where
// `only` ({ option: [values] }) shows the option only while another option of the step has one
// of those values (a wait for `url` has no selector; only `attr_equals` names an attribute).
const STEP_FIELDS = {
  navigate: [['url', 'URL (absolute, or a path relative to the base URL)', 'text']],
  click: [['selector', 'Selector', 'text'], ['nth', 'Match index (nth)', 'number', 0], ['force', 'Force click', 'bool', false]],
  fill: [['selector', 'Selector', 'text'], ['value', 'Value (literal or {{variable}})', 'text'], ['clear_first', 'Clear first', 'bool', true]],
  select: [['selector', 'Selector', 'text'], ['value', 'Option value', 'text']],
  wait: [['for', 'Wait for', ['selector', 'network-idle', 'url', 'timeout']],
    ['selector', 'Selector', 'text', undefined, { for: ['selector'] }],
    ['url', 'URL', 'text', undefined, { for: ['url'] }],
    ['timeout_ms', 'Timeout (ms)', 'number', 30000]],
  assert: [['selector', 'Selector', 'text'], ['assertion', 'Assertion', ['exists', 'not_exists', 'text_equals', 'text_contains', 'attr_equals']],
    ['attribute', 'Attribute', 'text', undefined, { assertion: ['attr_equals'] }],
    ['expected', 'Expected', 'text', undefined, { assertion: ['text_equals', 'text_contains', 'attr_equals'] }]],
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
    const specs = STEP_FIELDS[s.type] || [];
    for (const [name, label, kind, dflt, only] of specs) {
      const id = 'step-' + i + '-' + name;
      if (only && !Object.entries(only).every(([k, vs]) => vs.includes(s[k]))) {
        // Not an option of this step as it stands: not shown, and not sent.
        delete s[name];
        continue;
      }
      let ctl;
      if (Array.isArray(kind)) {
        ctl = select(kind, s[name] || kind[0], { id });
        if (s[name] === undefined) s[name] = kind[0];
        const controls = specs.some((f) => f[4] && name in f[4]);
        ctl.addEventListener('change', () => {
          s[name] = ctl.value;
          if (!controls) return;
          redraw();
          const again = document.getElementById(id);
          if (again) again.focus();
        });
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
    link('/apps/' + flow.application_id + '/runs?flow=' + encodeURIComponent(flow.id), 'Runs of this flow')));
  page.append(runNowBar(flow.id));
  page.append(await flowHistory(flow));
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
  const noSteps = empty('No steps yet.');
  noSteps.id = 'flow-no-steps';
  noSteps.hidden = steps.length > 0;
  form.append(noSteps);
  if (!ro) {
    const addType = select(STEP_TYPES, 'navigate', { id: 'step-add-type' });
    form.append(h('div', { class: 'toolbar' }, field('New step type', addType),
      btn('Add step', () => {
        steps.push({ type: addType.value });
        noSteps.hidden = true;
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
  page.append(filters, runFilterForm(app.id, flows, q));
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
    for (const k of ['flow', 'from', 'to']) if (q.get(k)) qs.set(k, q.get(k));
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
  const actions = h('div', { class: 'actions' }, runNowButton(run.flow_id, box));
  if (can('runTrigger') && active(run.status)) {
    actions.append(btn('Cancel run', async () => {
      try { await api('POST', '/runs/' + run.id + '/cancel'); render(); } catch (e) { showError(box, e); }
    }, { class: 'danger', id: 'run-cancel' }));
  }
  page.append(actions, runTicket(run, box));
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

// A step's screenshot through its signed link (`screenshots.url_ttl_secs`, 15 min by default).
// The page keeps a valid link: it asks for a fresh one shortly before the current one expires
// (so "open full size" works on a page left open) and again when the image fails to load (an
// expired link the browser re-requests); after two failures in a row it says so.
async function loadShot(runId, i, slot) {
  const linkFor = () => api('GET', '/runs/' + runId + '/steps/' + i + '/screenshot');
  let u;
  try {
    u = await linkFor();
  } catch (e) {
    slot.replaceChildren(h('p', { class: 'error-text', text: message(e) }));
    return;
  }
  const img = h('img', { alt: 'Screenshot of step ' + (i + 1) + ' (masked areas are black)', class: 'screenshot', id: 'shot-' + i });
  const a = h('a', { href: u.url, target: '_blank', rel: 'noopener', id: 'shot-' + i + '-link' }, img);
  const note = h('p', { class: 'hint', id: 'shot-' + i + '-expiry' });
  let timer = null;
  let pending = null;
  let failures = 0;
  const show = (link) => {
    u = link;
    a.href = link.url;
    note.textContent = 'Signed link valid until ' + fmtTime(link.expires_at) + ' (renewed by this page while it is open).';
  };
  const schedule = () => {
    clearTimeout(timer);
    const ms = Math.max(1000, Date.parse(u.expires_at) - Date.now() - 5000);
    timer = setTimeout(() => { if (slot.isConnected) renew().catch(() => {}); }, ms);
  };
  const renew = async () => {
    if (!pending) pending = linkFor().finally(() => { pending = null; });
    const link = await pending;
    show(link);
    schedule();
    return link;
  };
  img.addEventListener('load', () => {
    failures = 0;
    img.dataset.loads = String(Number(img.dataset.loads || 0) + 1);
  });
  img.addEventListener('error', async () => {
    if (!slot.isConnected) return;
    failures += 1;
    if (failures > 2) {
      clearTimeout(timer);
      slot.replaceChildren(h('p', { class: 'error-text', text: 'The screenshot could not be loaded.' }));
      return;
    }
    try {
      const link = await renew();
      img.dataset.renewed = String(Number(img.dataset.renewed || 0) + 1);
      img.src = link.url;
    } catch (e) {
      clearTimeout(timer);
      slot.replaceChildren(h('p', { class: 'error-text', text: message(e) }));
    }
  });
  img.src = u.url;
  show(u);
  schedule();
  slot.replaceChildren(a, note);
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

/** A token just created, shown once on the next render of the Tokens page. */
let tokenShownOnce = null;

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
    // Re-render so the lists show the new token; the secret is shown once above them.
    tokenShownOnce = t.token;
    render();
  };
  if (tokenShownOnce) {
    once.replaceChildren(shownOnce(tokenShownOnce));
    tokenShownOnce = null;
    setTimeout(() => { const c = document.getElementById('token-copy'); if (c) c.focus(); }, 0);
  }
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
      h('td', {}, h('code', { text: r.action })), h('td', {}, auditTarget(r.target)), h('td', { text: r.client_ip || '—' }),
      h('td', { class: 'details' }, keyValues(r.details)))), { id: 'audit-table' }));
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
  page.append(licenseHowTo());
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
  await ssoOidcSettings(page);
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect single sign-on (issue 21)

// Why a single sign-on was refused: the `sso_error` the server's callback puts on /signin.
const SSO_REFUSALS = {
  not_configured: 'Single sign-on is not set up for this tenant.',
  provider_unavailable: 'The identity provider could not be reached. Try again later or sign in with a local account.',
  provider_refused: 'The identity provider did not sign you in.',
  state_missing: 'The sign-in could not be matched to this browser (the sign-in cookie or state is missing). Start again.',
  state_unknown: 'The sign-in response does not belong to a sign-in started here. Start again.',
  state_reused: 'This sign-in response was already used. Start again.',
  state_expired: 'The sign-in took longer than 10 minutes and expired. Start again.',
  state_mismatch: 'The sign-in was started in another browser or tab. Start again here.',
  token_exchange_failed: 'The identity provider did not accept the sign-in code (check the client id and secret).',
  alg_not_allowed: 'The identity provider’s token uses a signature algorithm that is not accepted.',
  unknown_key: 'The identity provider’s token is signed with an unknown key.',
  bad_signature: 'The identity provider’s token signature is invalid.',
  wrong_issuer: 'The token comes from another identity provider than the one configured.',
  wrong_audience: 'The token was issued for another application.',
  token_expired: 'The identity provider’s token has expired (or the clocks differ by more than 2 minutes).',
  clock_skew: 'The clocks of this appliance and the identity provider differ by more than 2 minutes.',
  nonce_mismatch: 'The token does not belong to this sign-in (nonce mismatch).',
  invalid_token: 'The identity provider’s token is malformed.',
  unknown_user: 'Your account is not a member of this tenant, and automatic provisioning is off. Ask an Owner.',
  user_disabled: 'Your account in this tenant is disabled.',
  email_conflict: 'A member with your e-mail address exists but is not linked to your identity. Ask an Owner.',
  missing_email: 'The identity provider sent no usable e-mail address.',
  identity_conflict: 'The member this identity points at is linked to another identity. Ask an Owner.',
  last_owner: 'Your group mapping would remove the tenant’s last Owner.',
  plan_limit: 'The license’s user limit is reached.',
  no_matching_group: 'None of your groups gives access to this tenant.',
  tenant_suspended: 'This tenant is suspended.',
};

// The CSRF token of a session opened by single sign-on arrives once in a short-lived cookie.
function adoptSsoCsrf() {
  const m = document.cookie.split('; ').find((c) => c.startsWith('fg_sso_csrf='));
  if (!m) return;
  state.csrf = decodeURIComponent(m.slice('fg_sso_csrf='.length));
  sessionStorage.setItem('fg_csrf', state.csrf);
  document.cookie = 'fg_sso_csrf=; Path=/; Max-Age=0; Secure; SameSite=Lax';
}

/** The refusal a single sign-on callback sent back (`?sso_error=`), above the form. */
function ssoRefusal(page, form, q) {
  const why = q.get('sso_error');
  if (why) {
    page.insertBefore(h('div', { class: 'alert error', role: 'alert', id: 'sso-error', 'data-reason': why },
      h('strong', { text: 'Single sign-on refused. ' }), SSO_REFUSALS[why] || 'The sign-in was refused.'), form);
  }
}

function ssoSignIn(page, form, tenant, q) {
  ssoRefusal(page, form, q);
  const ssoBtn = h('a', { class: 'button', id: 'sso-signin', href: '#', hidden: true }, 'Sign in with single sign-on');
  ssoBtn.addEventListener('click', (ev) => {
    ev.preventDefault();
    const t = tenant.value.trim();
    localStorage.setItem('fg_tenant', t);
    location.assign('/api/v1/auth/oidc/start?tenant=' + encodeURIComponent(t));
  });
  const card = h('div', { class: 'card narrow', id: 'sso-card', hidden: true }, ssoBtn);
  page.append(card);
  let asked = '';
  const check = async () => {
    const t = tenant.value.trim();
    if (t === asked) return;
    asked = t;
    let on = false;
    if (t) {
      try {
        on = !!(await api('GET', '/auth/oidc/available?tenant=' + encodeURIComponent(t))).enabled;
      } catch (e) {
        on = false;
      }
    }
    if (t === asked) { card.hidden = !on; ssoBtn.hidden = !on; }
  };
  tenant.addEventListener('change', check);
  tenant.addEventListener('blur', check);
  check();
}

async function ssoOidcSettings(page) {
  const cfg = (await optional('/sso/oidc')) || {
    enabled: false, issuer: '', client_id: '', client_secret_set: false, scopes: 'openid email profile',
    claims: { email: 'email', name: 'name', groups: 'groups' }, role_mapping: [], default_role: 'Viewer',
    link_claim: null, jit_provisioning: false, ca_pem: null, redirect_uri: null,
  };
  const box = alertBox();
  const f = {
    enabled: h('input', { type: 'checkbox', id: 'oidc-enabled', checked: cfg.enabled }),
    issuer: input({ id: 'oidc-issuer', value: cfg.issuer, placeholder: 'https://login.microsoftonline.com/<tenant>/v2.0' }),
    client_id: input({ id: 'oidc-client-id', value: cfg.client_id }),
    client_secret: input({ id: 'oidc-client-secret', type: 'password', autocomplete: 'off', placeholder: cfg.client_secret_set ? 'set — leave empty to keep' : '' }),
    scopes: input({ id: 'oidc-scopes', value: cfg.scopes }),
    email: input({ id: 'oidc-claim-email', value: cfg.claims.email }),
    name: input({ id: 'oidc-claim-name', value: cfg.claims.name }),
    groups: input({ id: 'oidc-claim-groups', value: cfg.claims.groups }),
    link_claim: input({ id: 'oidc-link-claim', value: cfg.link_claim || '', placeholder: 'oid (Entra), sub (Okta)' }),
    jit_provisioning: h('input', { type: 'checkbox', id: 'oidc-jit', checked: cfg.jit_provisioning }),
    default_role: select([['', 'none (no access without a mapped group)'], 'Viewer', 'Tester', 'Admin'], cfg.default_role || '', { id: 'oidc-default-role' }),
    ca_pem: h('textarea', { id: 'oidc-ca', rows: 3, value: cfg.ca_pem || '' }),
  };
  const labels = {
    enabled: 'Enabled', issuer: 'Issuer (https://)', client_id: 'Client id', client_secret: 'Client secret (write-only)',
    scopes: 'Scopes', email: 'E-mail claim', name: 'Name claim', groups: 'Groups claim',
    link_claim: 'Link claim (matched against SCIM externalId; optional)', jit_provisioning: 'Create members at first sign-in',
    default_role: 'Default role', ca_pem: 'CA certificate (PEM, optional)',
  };
  const mapping = (cfg.role_mapping || []).map((m) => ({ ...m }));
  const mapList = h('div', { id: 'oidc-mapping' });
  const drawMap = () => mapList.replaceChildren(...mapping.map((m, i) => {
    const g = input({ value: m.group, 'aria-label': 'Group ' + (i + 1) });
    g.addEventListener('input', () => { m.group = g.value; });
    const role = select(['Owner', 'Admin', 'Tester', 'Viewer'], m.role, { 'aria-label': 'Role for group ' + (i + 1) });
    role.addEventListener('change', () => { m.role = role.value; });
    return h('div', { class: 'row' }, g, role, btn('Remove', () => { mapping.splice(i, 1); drawMap(); }));
  }));
  drawMap();
  const form = h('form', { class: 'card', novalidate: true, id: 'oidc-form' },
    h('h2', { text: 'Single sign-on (OpenID Connect)' }),
    h('p', { class: 'hint', text: 'Redirect URI to register at the provider: ' + (cfg.redirect_uri || 'set public_url in the appliance configuration first') }),
    box, Object.entries(f).map(([k, c]) => field(labels[k], c)),
    h('h3', { text: 'Group → role mapping (highest wins)' }), mapList,
    btn('Add mapping', () => { mapping.push({ group: '', role: 'Viewer' }); drawMap(); }),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'oidc-save' }, 'Save single sign-on settings'),
      btn('Test connection', async () => {
        clear(box);
        try {
          const r = await api('POST', '/sso/oidc/test-connection');
          showOk(box, 'Discovery and keys OK: ' + r.issuer + ' (' + r.keys + ' signing keys, ' + r.elapsed_ms + ' ms).');
        } catch (e) { showError(box, e); }
      }, { id: 'oidc-test-connection' }),
      cfg.client_secret_set ? btn('Remove', async () => {
        clear(box);
        try {
          await api('DELETE', '/sso/oidc');
          go('/sso', { notice: 'Single sign-on removed.' });
        } catch (e) { showError(box, e); }
      }, { id: 'oidc-delete' }) : null));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    const body = {
      enabled: f.enabled.checked, issuer: f.issuer.value.trim(), client_id: f.client_id.value.trim(), scopes: f.scopes.value.trim(),
      claims: { email: f.email.value.trim(), name: f.name.value.trim(), groups: f.groups.value.trim() },
      role_mapping: mapping.filter((m) => m.group.trim()), default_role: f.default_role.value || null,
      link_claim: f.link_claim.value.trim() || null, jit_provisioning: f.jit_provisioning.checked, ca_pem: f.ca_pem.value.trim() || null,
    };
    if (f.client_secret.value) body.client_secret = f.client_secret.value;
    try {
      await api('PUT', '/sso/oidc', body);
      go('/sso', { notice: 'Single sign-on settings saved.' });
    } catch (e) {
      showError(box, e);
      const c = f[e.problem && e.problem.field];
      if (c) { c.setAttribute('aria-invalid', 'true'); c.focus(); }
    }
  });
  page.append(form);
  const claims = h('textarea', { id: 'oidc-dry-claims', rows: 4, value: '{"sub": "", "email": "", "groups": []}' });
  const out = h('div', { id: 'oidc-dry-result', role: 'status' });
  const dry = h('form', { class: 'card', novalidate: true, id: 'oidc-dry' }, h('h2', { text: 'Single sign-on dry run' }),
    h('p', { class: 'hint', text: 'Paste sample ID-token claims: see which member a sign-in would match or create and its role. Nothing is written.' }),
    field('Claims (JSON)', claims), h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'oidc-dry-run' }, 'Run dry run')), out);
  dry.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let parsed;
    try { parsed = JSON.parse(claims.value); } catch (e) {
      out.replaceChildren(h('p', { class: 'alert error', role: 'alert', text: 'The claims are not valid JSON.' }));
      return;
    }
    try {
      const r = await api('POST', '/sso/oidc/test', { claims: parsed });
      out.replaceChildren(h('dl', { class: 'facts' },
        h('dt', { text: 'Outcome' }), h('dd', { text: r.outcome + (r.reason ? ' (' + r.reason + ')' : '') }),
        h('dt', { text: 'Matched by' }), h('dd', { text: r.matched_by || '—' }),
        h('dt', { text: 'Member' }), h('dd', { text: (r.email || '—') + (r.member_id ? '' : r.outcome === 'allow' ? ' (would be created)' : '') }),
        h('dt', { text: 'Groups' }), h('dd', { text: (r.groups || []).join('; ') || 'none' }),
        h('dt', { text: 'Role' }), h('dd', { text: r.role || 'no access' })));
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
// Ticket integration (issue 20): per-application tracker, test with checks and preview; the
// run page shows the run's ticket and a "File ticket" button on failed runs.

function runTicket(run, box) {
  const t = run.ticket;
  const sec = h('section', { class: 'card', id: 'run-ticket' }, h('h2', { text: 'Ticket' }));
  if (t) {
    sec.append(h('dl', { class: 'facts' },
      h('dt', { text: 'Status' }), h('dd', {}, badge(t.status)),
      h('dt', { text: 'Kind' }), h('dd', { text: t.kind === 'create' ? 'new ticket' : t.kind === 'comment' ? 'comment on the open ticket' : 'recovery comment' }),
      h('dt', { text: 'Ticket' }), h('dd', {}, t.url ? h('a', { href: t.url, target: '_blank', rel: 'noopener', id: 'run-ticket-link' }, t.key || t.url) : document.createTextNode(t.key || '—')),
      h('dt', { text: 'Attempts' }), h('dd', { text: String(t.attempts) }),
      t.error ? [h('dt', { text: 'Error' }), h('dd', { class: 'error-text', text: t.error })] : null));
  } else {
    sec.append(h('p', { class: 'hint', text: 'No ticket was filed for this run.' }));
  }
  if (run.status === 'failed' && can('ticketFile') && (!t || t.status === 'failed')) {
    sec.append(h('div', { class: 'actions' }, btn('File ticket', async () => {
      clear(box);
      try { await api('POST', '/runs/' + run.id + '/ticket'); render(); } catch (e) { showError(box, e); }
    }, { id: 'run-file-ticket' })));
  }
  return sec;
}

async function pageIntegration(page, p) {
  const app = await appHeader(page, 'Ticket integration', p.app, 'integration');
  if (!app) return;
  const path = '/applications/' + app.id + '/integration';
  const cur = await optional(path);
  const box = alertBox();
  const result = h('div', { id: 'integration-test' });
  const rules = (cur && cur.rules) || {};
  const f = {
    provider: select([['jira', 'Jira (Server/Data Center or Cloud)'], ['github', 'GitHub / GitHub Enterprise Server'], ['gitlab', 'GitLab'], ['azure-devops', 'Azure DevOps (Server or Services)']], (cur && cur.provider) || 'jira', { id: 'int-provider' }),
    base_url: input({ id: 'int-base-url', type: 'url', value: (cur && cur.base_url) || '', placeholder: 'https://jira.corp.example' }),
    project: input({ id: 'int-project', value: (cur && cur.project) || '', placeholder: 'ED · owner/repo · group/project · Project name' }),
    token: input({ id: 'int-token', type: 'password', autocomplete: 'off' }),
    email: input({ id: 'int-email', type: 'email', value: (cur && cur.email) || '' }),
    ca_pem: h('textarea', { id: 'int-ca', rows: 3 }),
    token_expires_at: input({ id: 'int-expires', value: (cur && cur.token_expires_at) || '', placeholder: '2027-01-31T00:00:00Z' }),
    labels: input({ id: 'int-labels', value: ((cur && cur.labels) || []).join(', ') }),
    fields: h('textarea', { id: 'int-fields', rows: 3 }),
    after: input({ id: 'int-after', type: 'number', min: 1, max: 100, value: rules.after_consecutive_failures || 1 }),
  };
  f.fields.value = cur && cur.fields && Object.keys(cur.fields).length ? JSON.stringify(cur.fields, null, 2) : '';
  const check = (id, label, on) => { const c = h('input', { type: 'checkbox', id }); c.checked = !!on; return h('label', { class: 'check' }, c, ' ' + label); };
  const rFile = check('int-file', 'File a ticket when a run fails (test failures only)', rules.file_on_failure);
  const rRepeat = check('int-repeat', 'Comment on the open ticket when the same failure repeats (at most hourly)', rules.comment_on_repeat);
  const rRecovery = check('int-recovery', 'Comment when the flow passes again', rules.comment_on_recovery);
  const labels = { provider: 'Tracker', base_url: 'Base URL (https; Azure DevOps: the collection URL)', project: 'Project', token: 'Token (write-only' + (cur ? '; stored — enter it again to save' : '') + ')', email: 'E-mail (Jira Cloud only)', ca_pem: 'CA certificates (PEM, optional; replaces the public roots)', token_expires_at: 'Token expires at (RFC 3339, optional)', labels: 'Labels (comma separated)', fields: 'Extra fields (JSON object, optional)', after: 'File after this many consecutive failures' };
  if (cur) {
    page.append(h('dl', { class: 'facts', id: 'integration-facts' },
      h('dt', { text: 'Tracker' }), h('dd', { text: cur.provider + ' · ' + cur.base_url + ' · ' + cur.project }),
      h('dt', { text: 'Token' }), h('dd', { text: cur.token_set ? 'set (write-only)' : 'none' }),
      cur.auth_failed_at ? [h('dt', { text: 'Token refused' }), h('dd', { class: 'error-text', text: 'The tracker answered 401 at ' + fmtTime(cur.auth_failed_at) + '; deliveries are stopped until a new token is saved.' })] : null));
  }
  const form = h('form', { class: 'card', novalidate: true }, h('h2', { text: cur ? 'Change integration' : 'Connect a tracker' }),
    Object.entries(f).map(([k, c]) => field(labels[k], c)), rFile, rRepeat, rRecovery,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save integration'),
      cur ? btn('Test', async () => {
        clear(box);
        result.replaceChildren(h('p', { class: 'hint', text: 'Testing…' }));
        try {
          const r = await api('POST', path + '/test');
          result.replaceChildren(h('h3', { text: r.ok ? 'All checks passed' : 'Some checks failed' }),
            h('ul', { class: 'checks' }, r.checks.map((c) => h('li', {}, badge(c.ok ? 'passed' : 'failed'), ' ' + c.name + ': ' + c.detail))),
            r.preview ? [h('h3', { text: 'Preview (nothing was created)' }), h('p', {}, h('strong', { text: r.preview.title })), h('pre', { class: 'preview', text: r.preview.body })]
              : h('p', { class: 'hint', text: 'No failed run to preview yet.' }));
        } catch (e) { result.replaceChildren(); showError(box, e); }
      }, { id: 'int-test' }) : null,
      cur ? btn('Remove', async () => {
        if (!confirm('Remove the integration? Tickets already filed stay in the tracker.')) return;
        try { await api('DELETE', path); go('/apps/' + app.id + '/integration', { notice: 'Integration removed.' }); } catch (e) { showError(box, e); }
      }, { class: 'danger' }) : null));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    const body = { provider: f.provider.value, base_url: f.base_url.value.trim(), project: f.project.value.trim(), auth: { token: f.token.value },
      rules: { file_on_failure: rFile.querySelector('input').checked, after_consecutive_failures: Number(f.after.value || 1), comment_on_repeat: rRepeat.querySelector('input').checked, comment_on_recovery: rRecovery.querySelector('input').checked } };
    if (f.email.value.trim()) body.auth.email = f.email.value.trim();
    if (f.ca_pem.value.trim()) body.ca_pem = f.ca_pem.value;
    if (f.token_expires_at.value.trim()) body.token_expires_at = f.token_expires_at.value.trim();
    const ls = f.labels.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (ls.length) body.labels = ls;
    if (f.fields.value.trim()) {
      try { body.fields = JSON.parse(f.fields.value); } catch (e) { showError(box, new ApiError(0, { detail: 'Extra fields must be a JSON object.' })); return; }
    }
    try {
      await api('PUT', path, body);
      go('/apps/' + app.id + '/integration', { notice: 'Integration saved.' });
    } catch (e) {
      showError(box, e);
    }
  });
  page.append(box, form, result);
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
      const was = state.me.must_change_password;
      state.me.must_change_password = false;
      if (was) {
        await afterSignIn();
        renderTop();
      }
      renderBanners();
      showOk(box, 'Password changed.');
    } catch (e) { showError(box, e); }
  });
  page.append(h('h1', { text: 'Account' }), h('dl', { class: 'facts' },
    h('dt', { text: 'Signed in as' }), h('dd', { text: me.name }),
    h('dt', { text: 'Role' }), h('dd', { text: me.role }),
    h('dt', { text: 'Tenant' }), me.tenant_id
      ? h('dd', { id: 'account-tenant' }, h('span', { text: me.tenant_name || me.tenant_id }), ' ', h('span', { class: 'muted', text: '(' + me.tenant_id + ')' }))
      : h('dd', { id: 'account-tenant', text: 'platform (catalog)' })), form);
  if (me.kind === 'platform_admin') {
    page.append(h('p', { class: 'hint', text: 'Platform administrators manage tenants, the license and the catalog audit (pages above); they never read tenant data.' }));
  }
}

// ---------------------------------------------------------------------------------------------
// Navigation helpers, sign-in help, license how-to (issue 23)

/** The one nav entry for the current page: the longest href that prefixes the path. */
function currentNav(entries) {
  const path = location.pathname;
  let best = '';
  for (const [href] of entries) {
    if ((path === href || path.startsWith(href.endsWith('/') ? href : href + '/')) && href.length > best.length) best = href;
  }
  return best;
}

function platformNav(add) {
  const pa = can('platform');
  add('/platform/tenants', 'Tenants', pa);
  add('/platform/license', 'License', pa);
  add('/platform/audit', 'Catalog audit', pa);
  add('/platform/keys', 'Keys', pa);
  add('/platform/backups', 'Backups', pa);
}

function signInHelp() {
  return h('p', { class: 'hint', id: 'signin-help' },
    'First sign-in: the Owner (tenant default, admin@localhost) and the platform administrator got one-time passwords on the first start. ' +
    'They were printed by flowguard serve and are in the file initial-credentials in the data directory (default ./flowguard-data).');
}

function licenseHowTo() {
  return h('section', { class: 'card', id: 'license-howto' },
    h('h2', { text: 'Getting and installing a license' }),
    h('p', { text: 'Licenses are signed tokens issued by the FlowGuard vendor for your deployment; ask your FlowGuard contact for one. ' +
      'To evaluate without a license, a platform administrator can start the 30-day offline trial once per deployment (License page, or flowguard license trial on the host).' }),
    h('p', { text: 'Install a license either way:' }),
    h('ul', {},
      h('li', {}, 'as platform administrator on the License page: paste the token or upload the file, then Install;'),
      h('li', {}, 'on the host: ', h('code', { text: 'flowguard license install license.jwt' }), ', then ', h('code', { text: 'kill -HUP <pid>' }), ' (or Reload) so a running server picks it up.')));
}

// ---------------------------------------------------------------------------------------------
// Runs at a glance: run now, filters, the per-flow history (inline SVG, no library)

function runNowButton(flowId, box) {
  if (!can('runTrigger') || !flowId) return null;
  return btn('Run now', async (ev) => {
    ev.target.disabled = true;
    try {
      const r = await api('POST', '/flows/' + flowId + '/runs');
      go('/runs/' + r.id, { notice: 'Run queued.' });
    } catch (e) { showError(box, e); ev.target.disabled = false; }
  }, { class: 'primary create', id: 'run-now' });
}

function runNowBar(flowId) {
  const box = alertBox();
  const b = runNowButton(flowId, box);
  return b ? h('div', { class: 'actions' }, b, box) : h('div');
}

function runFilterForm(appId, flows, q) {
  const flow = select([['', 'all flows'], ...flows.map((f) => [f.id, f.name])], q.get('flow') || '', { id: 'runs-filter-flow' });
  const from = input({ id: 'runs-filter-from', type: 'date', value: (q.get('from') || '').slice(0, 10) });
  const to = input({ id: 'runs-filter-to', type: 'date', value: (q.get('to') || '').slice(0, 10) });
  const form = h('form', { class: 'card filters-form', novalidate: true, id: 'runs-filter' },
    field('Flow', flow), field('From (day)', from), field('To (day, inclusive)', to),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const s = new URLSearchParams();
    if (q.get('status')) s.set('status', q.get('status'));
    if (flow.value) s.set('flow', flow.value);
    if (from.value) s.set('from', new Date(from.value + 'T00:00:00').toISOString());
    if (to.value) { const d = new Date(to.value + 'T00:00:00'); d.setDate(d.getDate() + 1); s.set('to', d.toISOString()); }
    go('/apps/' + appId + '/runs' + (s.toString() ? '?' + s : ''));
  });
  return form;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) if (c) e.append(c);
  return e;
}

/**
 * Summary of finished runs (newest first): pass rate, the run number a failing streak started
 * at (runs numbered from 1, oldest first), and whether the flow is flaky — it flipped between
 * passed and failed on one flow version.
 */
function runSummary(runs) {
  const done = runs.filter((r) => r.status === 'passed' || r.status === 'failed');
  const passed = done.filter((r) => r.status === 'passed').length;
  const chrono = [...done].reverse();
  let failingSince = null;
  for (let i = chrono.length - 1; i >= 0 && chrono[i].status === 'failed'; i--) failingSince = i + 1;
  const byVersion = {};
  let flaky = false;
  for (const r of chrono) {
    const prev = byVersion[r.flow_version];
    if (prev && prev !== r.status) flaky = true;
    byVersion[r.flow_version] = r.status;
  }
  return { total: done.length, passRate: done.length ? Math.round((passed * 100) / done.length) : null, failingSince, flaky, chrono };
}

async function flowHistory(flow) {
  const section = h('section', { class: 'card', id: 'flow-history' }, h('h2', { text: 'Last 50 runs' }));
  let runs;
  try {
    runs = (await api('GET', '/applications/' + flow.application_id + '/runs?limit=50&flow=' + encodeURIComponent(flow.id))).items;
  } catch (e) {
    section.append(empty('Run history is not available: ' + message(e)));
    return section;
  }
  const sum = runSummary(runs);
  if (!sum.total) {
    section.append(empty('No finished runs yet. Press Run now to start one.'));
    return section;
  }
  section.append(h('p', { id: 'flow-stats' },
    h('strong', { text: sum.passRate + '% passed' }), ' (' + sum.total + ' finished runs)',
    sum.failingSince ? h('span', { class: 'badge s-failed', id: 'flow-failing-since', text: 'failing since run ' + sum.failingSince }) : null,
    sum.flaky ? h('span', { class: 'badge s-flaky', id: 'flow-flaky', title: 'Passed and failed on the same flow version', text: 'flaky' }) : null));
  const n = sum.chrono.length;
  const w = 12;
  const strip = svg('svg', { id: 'flow-strip', width: n * w, height: 20, viewBox: '0 0 ' + (n * w) + ' 20', role: 'img', 'aria-label': 'Pass/fail of the last ' + n + ' finished runs, oldest first' });
  sum.chrono.forEach((r, i) => strip.append(svg('rect', { x: i * w + 1, y: 2, width: w - 2, height: 16, rx: 2, class: 'run-' + r.status, fill: r.status === 'passed' ? '#1b7a3a' : '#b3261e' },
    svg('title', {}, document.createTextNode('run ' + (i + 1) + ': ' + r.status + ' (v' + r.flow_version + ')')))));
  const ms = sum.chrono.map((r) => (r.started_at && r.finished_at ? Math.max(0, new Date(r.finished_at) - new Date(r.started_at)) : 0));
  const max = Math.max(1, ...ms);
  const chart = svg('svg', { id: 'flow-durations', width: n * w, height: 60, viewBox: '0 0 ' + (n * w) + ' 60', role: 'img', 'aria-label': 'Duration of the last ' + n + ' finished runs, longest ' + Math.round(max / 100) / 10 + ' s' });
  ms.forEach((d, i) => {
    const bh = Math.max(1, Math.round((d / max) * 56));
    chart.append(svg('rect', { x: i * w + 1, y: 60 - bh, width: w - 2, height: bh, fill: '#1f5fbf' },
      svg('title', {}, document.createTextNode('run ' + (i + 1) + ': ' + Math.round(d / 100) / 10 + ' s'))));
  });
  section.append(strip, h('br'), chart, h('p', { class: 'hint', text: 'Oldest left, newest right; bar height is the run\'s duration (longest ' + Math.round(max / 100) / 10 + ' s).' }));
  return section;
}

// ---------------------------------------------------------------------------------------------
// PlatformAdmin: tenants, license, catalog audit (never tenant data)

async function pagePlatformTenants(page) {
  const list = await api('GET', '/platform/tenants');
  const box = alertBox();
  const name = input({ id: 'tenant-name', required: true });
  const owner = input({ id: 'tenant-owner', type: 'email', required: true });
  const once = h('div', { id: 'tenant-created' });
  const form = h('form', { class: 'card', novalidate: true, id: 'tenant-form' }, h('h2', { text: 'New tenant' }),
    field('Name', name, 'Letters, digits, spaces, - _ . (not shaped like a tenant id such as weu-abcd12).'),
    field('Owner email', owner, 'The Owner gets a one-time password, shown once below.'), box,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'tenant-create' }, 'Create tenant')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(box);
    try {
      const c = await api('POST', '/platform/tenants', { name: name.value, owner_email: owner.value });
      name.value = '';
      owner.value = '';
      once.replaceChildren(h('div', { class: 'alert ok once', role: 'status' },
        h('p', {}, h('strong', { text: 'Tenant ' + c.tenant.name + ' (' + c.tenant.id + ') created. Copy the Owner\'s one-time password now — it is shown only once.' })),
        h('p', {}, 'Owner ', h('code', { text: c.owner_email }), ' password: ', h('output', { class: 'secret', id: 'tenant-owner-password', text: c.owner_password }))));
      const fresh = await api('GET', '/platform/tenants');
      tbody.replaceChildren(...fresh.items.map(row));
    } catch (e) { markError(form, box, e); }
  });
  const plans = ['free', 'pro', 'business', 'enterprise'];
  const row = (t) => {
    const plan = select(plans.map((p) => [p, p]), t.plan, { id: 'plan-' + t.id, 'aria-label': 'Plan of ' + t.name });
    const rbox = h('span', { class: 'hint', role: 'status' });
    const act = async (what, fn) => {
      rbox.textContent = '';
      try { await fn(); go('/platform/tenants', { notice: what }); } catch (e) { rbox.textContent = message(e); }
    };
    return h('tr', { 'data-tenant': t.id },
      h('td', {}, h('code', { text: t.id })), h('td', { text: t.name }), h('td', { text: t.region }),
      h('td', {}, plan, t.plan_follows_license ? h('span', { class: 'hint', text: ' follows the license' }) : ''),
      h('td', {}, badge(t.status)),
      h('td', { class: 'row-actions' },
        btn('Set plan', () => act('Plan of ' + t.name + ' set to ' + plan.value + '.', () => api('PUT', '/platform/tenants/' + t.id + '/plan', { plan: plan.value })), { id: 'plan-save-' + t.id }),
        t.status === 'suspended'
          ? btn('Resume', () => act(t.name + ' resumed.', () => api('POST', '/platform/tenants/' + t.id + '/resume')), { id: 'resume-' + t.id })
          : btn('Suspend', () => { if (confirm('Suspend ' + t.name + '? Its users and tokens are refused; data is kept.')) act(t.name + ' suspended.', () => api('POST', '/platform/tenants/' + t.id + '/suspend')); }, { id: 'suspend-' + t.id }),
        rbox));
  };
  const tbody = h('tbody', {}, ...list.items.map(row));
  page.append(h('h1', { text: 'Tenants' }), once,
    h('table', { id: 'tenants-table' }, h('thead', {}, h('tr', {}, ...['Id', 'Name', 'Region', 'Plan', 'Status', ''].map((x) => h('th', { text: x })))), tbody),
    form);
}

/** Key status of every tenant (GET /platform/keys): versions and dates, never key material. */
async function pagePlatformKeys(page) {
  const [k, tenants] = await Promise.all([api('GET', '/platform/keys'), api('GET', '/platform/tenants')]);
  const names = Object.fromEntries(tenants.items.map((t) => [t.id, t.name]));
  page.append(h('h1', { text: 'Tenant keys' }),
    h('p', { class: 'hint', text: 'Each tenant has its own versioned key set; it is rotated automatically every ' + k.rotation_days +
      ' days (keys.rotation_days). An Owner can rotate now on the tenant\'s Keys page; on the host: flowguard keys rotate --tenant ID or --all.' }));
  if (!k.items.length) { page.append(empty('No tenants yet.')); return; }
  page.append(table(['Tenant', 'Active', 'Pending', 'Next rotation', 'Due', 'Versions'], k.items.map((s) => h('tr', { 'data-tenant': s.tenant_id },
    h('td', {}, h('span', { text: names[s.tenant_id] || '' }), ' ', h('code', { text: s.tenant_id })),
    h('td', { text: s.active_version != null ? 'v' + s.active_version : '—' }),
    h('td', { text: s.pending_version != null ? 'v' + s.pending_version + ' (rotation unfinished)' : '—' }),
    h('td', { text: fmtTime(s.next_rotation_at) }),
    h('td', {}, s.rotation_due ? badge('due') : h('span', { text: 'no' })),
    h('td', { text: s.versions.map((v) => 'v' + v.version + ' ' + v.state).join(', ') }))), { id: 'platform-keys-table' }));
}

/** Backups (GET/POST /platform/backups): the list, newest first, and "Start backup". */
async function pagePlatformBackups(page) {
  const box = alertBox();
  const tbody = h('tbody');
  const size = (b) => (b == null ? '—' : b >= 1048576 ? (b / 1048576).toFixed(1) + ' MiB' : b >= 1024 ? (b / 1024).toFixed(1) + ' KiB' : b + ' B');
  let timer = null;
  const load = async () => {
    clearTimeout(timer);
    const list = await api('GET', '/platform/backups');
    tbody.replaceChildren(...(list.items.length ? list.items.map((b) => h('tr', { 'data-backup': b.id, 'data-status': b.status },
      h('td', { text: fmtTime(b.started_at) }), h('td', { text: b.trigger }), h('td', {}, badge(b.status)),
      h('td', { text: b.duration_ms != null ? (b.duration_ms / 1000).toFixed(1) + ' s' : '—' }),
      h('td', { text: size(b.size_bytes) }),
      h('td', {}, b.dir ? h('code', { text: b.dir }) : h('span', { class: 'error-text', text: b.error || '' })))) :
      [h('tr', {}, h('td', { colspan: 6, class: 'hint', text: 'No backups started from the API or the schedule yet.' }))]));
    // While one runs, look again until it has finished (only while this page is shown).
    if (list.items.some((b) => b.status === 'running')) timer = setTimeout(() => { if (tbody.isConnected) load().catch((e) => showError(box, e)); }, 1000);
  };
  const start = btn('Start backup', async () => {
    clear(box);
    start.disabled = true;
    try {
      await api('POST', '/platform/backups');
      showOk(box, 'Backup started; the list shows it until it has finished.');
      await load();
    } catch (e) { showError(box, e); }
    start.disabled = false;
  }, { class: 'primary', id: 'backup-start' });
  page.append(h('h1', { text: 'Backups' }),
    h('p', { class: 'hint', text: 'A backup copies every store (catalog and tenants) into the server\'s backup directory ([backup] dir). ' +
      'Check one with flowguard backup verify DIR; restore with flowguard restore DIR --data-dir NEW --master-key FILE (README, Backup and restore). The master key is not in a backup: escrow it separately.' }),
    box, h('div', { class: 'actions' }, start),
    h('table', { id: 'backups-table' }, h('thead', {}, h('tr', {}, ...['Started', 'Trigger', 'Status', 'Took', 'Size', 'Directory'].map((x) => h('th', { text: x })))), tbody));
  await load();
}

/** Show an API error in `box` and mark the field the server names (plain words, no brackets). */
function markError(form, box, e) {
  showError(box, e);
  const f = e && e.problem && e.problem.field;
  if (!f) return;
  const el = form.querySelector('[name="' + f + '"], #' + CSS.escape('tenant-' + (f === 'owner_email' ? 'owner' : f)));
  if (el) { el.setAttribute('aria-invalid', 'true'); el.focus(); }
}

async function pagePlatformLicense(page) {
  const v = await api('GET', '/platform/license');
  const box = alertBox();
  const l = v.license || {};
  page.append(h('h1', { text: 'License' }), box);
  if (v.trial && v.trial.active) {
    page.append(h('div', { class: 'alert info', id: 'trial-countdown', role: 'status', text: 'Offline trial: ' + v.trial.days_left + ' day' + (v.trial.days_left === 1 ? '' : 's') + ' left (ends ' + fmtTime(v.trial.ends_at) + ').' }));
  }
  page.append(h('dl', { class: 'facts', id: 'platform-license-facts' },
    h('dt', { text: 'Status' }), h('dd', {}, badge(v.status)),
    h('dt', { text: 'License id' }), h('dd', { text: l.id || '—' }),
    h('dt', { text: 'Licensee' }), h('dd', { text: l.licensee || '—' }),
    h('dt', { text: 'Plan' }), h('dd', { text: (v.effective && v.effective.plan) || '—' }),
    h('dt', { text: 'Features' }), h('dd', { text: ((v.effective && v.effective.features) || []).join(', ') || 'none' }),
    h('dt', { text: 'Expires' }), h('dd', { text: fmtTime(l.expires_at) + (v.days_until_expiry != null ? ' (' + v.days_until_expiry + ' days)' : '') }),
    h('dt', { text: 'Offline trial' }), h('dd', { text: v.trial ? (v.trial.active ? 'running until ' : 'ended ') + fmtTime(v.trial.ends_at) : 'not used' })));
  const actions = h('div', { class: 'actions' });
  if (v.trial_available) {
    actions.append(btn('Start 30-day trial', async () => {
      if (!confirm('Start the 30-day offline trial? Every licensed feature is on until it ends; it runs once per deployment.')) return;
      try { await api('POST', '/platform/license/trial'); go('/platform/license', { notice: 'Offline trial started.' }); } catch (e) { showError(box, e); }
    }, { class: 'primary', id: 'trial-start' }));
  }
  actions.append(btn('Reload license file', async () => {
    try { await api('POST', '/platform/license/reload'); go('/platform/license', { notice: 'License file reloaded.' }); } catch (e) { showError(box, e); }
  }, { id: 'license-reload' }));
  page.append(actions);
  const token = h('textarea', { id: 'license-token', rows: 4, placeholder: 'eyJ…' });
  const file = h('input', { type: 'file', id: 'license-file', accept: '.jwt,.txt,text/plain' });
  file.addEventListener('change', async () => { if (file.files[0]) token.value = (await file.files[0].text()).trim(); });
  const ibox = alertBox();
  const form = h('form', { class: 'card', novalidate: true, id: 'license-install' }, h('h2', { text: 'Install a license' }),
    field('Token', token, 'Paste the token, or choose the file below.'), field('License file', file), ibox,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Install')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(ibox);
    const r = await fetch('/api/v1/platform/license', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/jwt', Accept: 'application/json', 'X-CSRF-Token': state.csrf }, body: token.value.trim() });
    const data = await r.json().catch(() => ({}));
    if (r.ok) go('/platform/license', { notice: 'License ' + ((data.license && data.license.id) || '') + ' installed.' });
    else { token.setAttribute('aria-invalid', 'true'); showError(ibox, new ApiError(r.status, data)); }
  });
  page.append(form, licenseHowTo());
  const rev = await api('GET', '/platform/license/revocations');
  page.append(h('h2', { text: 'Revoked licenses' }), rev.items.length
    ? table(['License id', 'Reason', 'Revoked', 'By'], rev.items.map((r) => h('tr', {}, h('td', {}, h('code', { text: r.license_id })), h('td', { text: r.reason || '—' }), h('td', { text: fmtTime(r.revoked_at) }), h('td', { text: r.revoked_by }))), { id: 'revocations' })
    : empty('No license has been revoked.'));
}

async function pagePlatformAudit(page, _p, q) {
  const from = input({ id: 'caudit-from', type: 'datetime-local', value: toLocal(q.get('from')) });
  const to = input({ id: 'caudit-to', type: 'datetime-local', value: toLocal(q.get('to')) });
  const action = input({ id: 'caudit-action', value: q.get('action') || '', placeholder: 'e.g. tenant.create' });
  const actor = input({ id: 'caudit-actor', value: q.get('actor') || '', placeholder: 'email' });
  const form = h('form', { class: 'card filters-form', novalidate: true },
    field('From', from), field('To', to), field('Action', action), field('Actor', actor),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply filters')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const s = new URLSearchParams();
    if (toIso(from.value)) s.set('from', toIso(from.value));
    if (toIso(to.value)) s.set('to', toIso(to.value));
    if (action.value.trim()) s.set('action', action.value.trim());
    if (actor.value.trim()) s.set('actor', actor.value.trim());
    go('/platform/audit?' + s);
  });
  const box = alertBox();
  const ex = (fmt) => {
    const s = new URLSearchParams();
    if (q.get('from')) s.set('from', q.get('from'));
    if (q.get('to')) s.set('to', q.get('to'));
    s.set('format', fmt);
    return '/api/v1/platform/audit/export?' + s;
  };
  const verify = btn('Verify chain', async () => {
    clear(box);
    try {
      const r = await api('GET', '/platform/audit/verify');
      if (r.first_bad) showError(box, new ApiError(0, { detail: 'Chain broken at row ' + r.first_bad.seq + ': ' + r.first_bad.reason }));
      else showOk(box, 'Catalog audit chain verified (' + (r.rows != null ? r.rows : r.count) + ' rows).');
    } catch (e) { showError(box, e); }
  }, { id: 'caudit-verify' });
  page.append(h('h1', { text: 'Catalog audit' }), form, h('div', { class: 'actions', id: 'caudit-export' },
    h('a', { class: 'button', href: ex('csv'), download: '' }, 'Export CSV'),
    h('a', { class: 'button', href: ex('ndjson'), download: '' }, 'Export NDJSON'), verify,
    h('span', { class: 'hint', text: ' Export needs the license feature audit.export.' })), box);
  const qs = new URLSearchParams();
  for (const k of ['from', 'to', 'action', 'actor', 'cursor']) if (q.get(k)) qs.set(k, q.get(k));
  qs.set('limit', '50');
  const data = await api('GET', '/platform/audit?' + qs);
  if (!data.items.length) {
    page.append(empty(q.toString() ? 'No catalog audit rows match these filters.' : 'No catalog audit rows yet.'));
  } else {
    page.append(table(['Time', 'Actor', 'Action', 'Target', 'Details'], data.items.map((r) => h('tr', { 'data-seq': String(r.seq) },
      h('td', { text: fmtTime(r.ts) }), h('td', { text: r.actor_email || '—' }), h('td', {}, h('code', { text: r.action })),
      h('td', {}, auditTarget(r.target)), h('td', { class: 'details' }, keyValues(r.details)))), { id: 'caudit-table' }));
  }
  if (data.next_cursor) {
    const next = new URLSearchParams(q);
    next.set('cursor', data.next_cursor);
    page.append(h('div', { class: 'actions pager' }, link('/platform/audit?' + next, 'Next page', { class: 'button' })));
  }
}

/** Audit details as a key/value list instead of raw JSON. */
function keyValues(d) {
  if (!d || typeof d !== 'object' || !Object.keys(d).length) return '—';
  return h('dl', { class: 'kv' }, ...Object.entries(d).flatMap(([k, v]) => [h('dt', { text: k }),
    h('dd', { text: v === null ? '—' : (typeof v === 'object' ? (Array.isArray(v) ? v.join(', ') : JSON.stringify(v)) : String(v)) })]));
}

/** An audit target (`kind:id`) linked to its page where the dashboard has one. */
function auditTarget(t) {
  if (!t) return '—';
  const [kind, id] = t.split(/:(.*)/s);
  const href = { flow: '/flows/', run: '/runs/', tenant: '/platform/tenants#', license: '/platform/license#' }[kind];
  return href && id ? link(href + encodeURIComponent(id), t) : h('code', { text: t });
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
route('/apps/:app/integration', pageIntegration, 'integration');
route('/account', pageAccount);
route('/platform/tenants', pagePlatformTenants, 'platform');
route('/platform/license', pagePlatformLicense, 'platform');
route('/platform/audit', pagePlatformAudit, 'platform');
route('/platform/keys', pagePlatformKeys, 'platform');
route('/platform/backups', pagePlatformBackups, 'platform');
adoptSsoCsrf();

render();
