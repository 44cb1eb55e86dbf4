// Test-only OpenID provider for tests/api/oidc.rs: the npm package `oidc-provider` (OpenID
// Certified, pinned in package.json; installed by .ci/run into $OIDC_NODE_DIR), served over TLS
// with a certificate from the test's own CA.
//
// Usage: node provider.mjs <config.json>. The config names `cert` and `key` (PEM paths),
// `clients` (oidc-provider client metadata) and `users` (login name → claims, incl. `sub`).
// The script listens on 127.0.0.1:0, builds the provider with issuer https://localhost:<port>
// and prints `PORT=<port>` once ready.
//
// Login is scripted, not the package's dev interactions: GET /interaction/:uid shows a tiny
// form (input `login`, button `Sign in`) for the login prompt and grants the requested scopes
// at the consent prompt; POST /interaction/:uid/login finishes the login.
//
// Test controls (plain HTTP on the same TLS port, loopback only):
// - POST /__test/rotate: a new signing key (new `kid`); the old one is gone from the JWKS.
// - POST /__test/mode?m=<mode>: rewrite the next ID tokens the token endpoint returns, to test
//   the relying party's refusals: `none` (alg none), `hs256` (HS256 keyed with the public key
//   PEM), `iss` (other issuer), `aud` (other audience), `expired` (exp 10 min ago), `skew_in`
//   (iat 60 s ahead), `skew_out` (iat 10 min ahead), `nonce` (other nonce), `off`. All but
//   `none`/`hs256` are re-signed with the provider's real key.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { generateKeyPairSync, createPublicKey, createHmac, sign, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// stdout carries only the `PORT=` line (the test stops reading after it): everything the
// package logs goes to stderr, and a closed stdout is not fatal.
process.stdout.on('error', () => {});
console.log = console.error;
console.info = console.error;
console.warn = console.error;

const nodeDir = process.env.OIDC_NODE_DIR || '/var/tmp/flowguard-npm-oidc';
const { default: Provider } = await import(
  pathToFileURL(join(nodeDir, 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let mode = 'off';

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomUUID(), use: 'sig', alg: 'RS256' };
}
let signingKey = newKey();

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function forge(idToken, issuer) {
  const [h, p] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  const priv = { key: signingKey, format: 'jwk' };
  const rs256 = (hd, cl) => {
    const input = `${b64(hd)}.${b64(cl)}`;
    return `${input}.${sign('sha256', Buffer.from(input), priv).toString('base64url')}`;
  };
  switch (mode) {
    case 'none':
      return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    case 'hs256': {
      const pem = createPublicKey(priv).export({ type: 'spki', format: 'pem' });
      const hd = { alg: 'HS256', typ: 'JWT', kid: header.kid };
      const input = `${b64(hd)}.${b64(claims)}`;
      return `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
    }
    case 'iss':
      return rs256(header, { ...claims, iss: 'https://evil.example' });
    case 'aud':
      return rs256(header, { ...claims, aud: 'someone-else', azp: undefined });
    case 'expired':
      return rs256(header, { ...claims, iat: now - 1200, exp: now - 600 });
    case 'skew_in':
      return rs256(header, { ...claims, iat: now + 60, exp: now + 660 });
    case 'skew_out':
      return rs256(header, { ...claims, iat: now + 600, exp: now + 1200 });
    case 'nonce':
      return rs256(header, { ...claims, nonce: 'not-the-nonce' });
    default:
      return idToken;
  }
}

function build(issuer) {
  const p = new Provider(issuer, {
    clients: cfg.clients,
    jwks: { keys: [signingKey] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'groups', 'oid'],
    },
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true, methods: ['S256'] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['flowguard-test-cookie-key'] },
    async findAccount(ctx, id) {
      const u = Object.values(cfg.users).find((x) => x.sub === id);
      if (!u) return undefined;
      return { accountId: id, async claims() { return { ...u }; } };
    },
  });
  p.proxy = false;
  p.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.body && ctx.body.id_token && mode !== 'off') {
      ctx.body = { ...ctx.body, id_token: forge(ctx.body.id_token, issuer) };
    }
  });
  return p;
}

let provider;
let handler;

function readBody(req) {
  return new Promise((resolve) => {
    let s = '';
    req.on('data', (c) => { s += c; });
    req.on('end', () => resolve(s));
  });
}

async function interaction(req, res, url) {
  const uid = url.pathname.split('/')[2];
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'POST' && url.pathname.endsWith('/login')) {
    const form = new URLSearchParams(await readBody(req));
    const user = cfg.users[form.get('login') || ''];
    const result = user
      ? { login: { accountId: user.sub } }
      : { error: 'access_denied', error_description: 'unknown test user' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (details.prompt.name === 'login') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>Test IdP</title><form method="post" action="/interaction/${uid}/login">
<input id="login" name="login" autocomplete="off"><button id="submit" type="submit">Sign in</button></form>`);
    return;
  }
  const { params, session } = details;
  const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const server = createServer(
  { cert: readFileSync(cfg.cert), key: readFileSync(cfg.key) },
  async (req, res) => {
    const url = new URL(req.url, 'https://localhost');
    try {
      if (url.pathname === '/__test/rotate' && req.method === 'POST') {
        signingKey = newKey();
        provider = build(provider.issuer);
        handler = provider.callback();
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ kid: signingKey.kid }));
        return;
      }
      if (url.pathname === '/__test/mode' && req.method === 'POST') {
        mode = url.searchParams.get('m') || 'off';
        res.writeHead(200);
        res.end(mode);
        return;
      }
      if (url.pathname.startsWith('/interaction/')) {
        await interaction(req, res, url);
        return;
      }
      handler(req, res);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(e && e.stack ? e.stack : e));
    }
  },
);

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  provider = build(`https://localhost:${port}`);
  handler = provider.callback();
  process.stdout.write(`PORT=${port}\n`);
});
