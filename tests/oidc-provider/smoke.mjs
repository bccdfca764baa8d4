// Smoke test for the test OP (server.mjs). Node built-ins only.
//
//   node tests/oidc-provider/smoke.mjs                 # starts its own OP on an ephemeral port
//   node tests/oidc-provider/smoke.mjs --issuer http://127.0.0.1:PORT --config cfg.json
//                                                      # checks an already running OP
//
// Exits 0 and prints "SMOKE OK" when every check passes.

import { spawn } from 'node:child_process';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const CONFIG = {
  clients: [{
    client_id: 'gateway',
    client_secret: 'gateway-secret-smoke',
    redirect_uris: ['http://127.0.0.1:18080/oauth2/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1:18080/'],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  accounts: [{
    id: 'alice-id',
    username: 'alice',
    password: 'wonderland',
    claims: {
      email: 'alice@example.com',
      email_verified: true,
      name: 'Alice Liddell',
      groups: ['admins', 'readers'],
      realm_access: { roles: ['orders:read'] },
    },
  }],
  ttl: {
    AccessToken: 3600, IdToken: 3600, RefreshToken: 86400, Session: 86400, Interaction: 600, Grant: 86400, ClientCredentials: 600,
  },
  resource_servers: {
    'https://api.example.com': { scope: 'orders:read orders:write', audience: 'https://api.example.com', accessTokenFormat: 'jwt' },
  },
  opaque_resource: 'https://opaque.example.com',
};

function arg(name) {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

let child;
let issuer = arg('--issuer');
let config = CONFIG;
if (arg('--config')) config = JSON.parse(fs.readFileSync(arg('--config'), 'utf8'));

async function startOp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'test-op-'));
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, JSON.stringify(config));
  child = spawn(process.execPath, [path.join(HERE, 'server.mjs'), '--port', '0', '--config', file], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('OP did not become ready in 20s')), 20000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/^READY (\S+)$/m);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => reject(new Error(`OP exited early with ${code}`)));
  });
}

// --- tiny cookie jar (name+path keyed, path-prefix matching) -----------------
const jar = new Map();
function storeCookies(res) {
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';').map((s) => s.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let cpath = '/';
    let expired = value === '';
    for (const a of attrs) {
      const [k, v] = a.split('=');
      if (k.toLowerCase() === 'path') cpath = v;
      if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
    }
    const key = `${name}\u0000${cpath}`;
    if (expired) jar.delete(key); else jar.set(key, { name, value, path: cpath });
  }
}
function cookieHeader(url) {
  const p = new URL(url).pathname;
  return [...jar.values()]
    .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
    .map((c) => `${c.name}=${c.value}`).join('; ');
}

async function req(url, { method = 'GET', form, headers = {} } = {}) {
  const h = { ...headers };
  const cookie = cookieHeader(url);
  if (cookie) h.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h['content-type'] = 'application/x-www-form-urlencoded';
  }
  const res = await fetch(url, { method, headers: h, body, redirect: 'manual' });
  storeCookies(res);
  return res;
}

// Follow redirects while they stay on the OP; return the first off-OP Location or final response.
async function follow(res) {
  let r = res;
  while ([302, 303].includes(r.status)) {
    const loc = new URL(r.headers.get('location'), issuer).href;
    if (!loc.startsWith(`${issuer}/`)) return { redirect: loc };
    r = await req(loc);
  }
  return { res: r, url: r.url };
}

const b64u = (b) => Buffer.from(b).toString('base64url');
const jwtPayload = (t) => JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString());

async function main() {
  if (!issuer) issuer = await startOp();
  const client = config.clients[0];
  const account = config.accounts[0];
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`;
  const redirectUri = client.redirect_uris[0];

  // 1. discovery
  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  assert.equal(disco.issuer, issuer);
  for (const k of ['jwks_uri', 'authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'end_session_endpoint', 'introspection_endpoint', 'revocation_endpoint']) {
    assert.ok(disco[k]?.startsWith(issuer), `discovery ${k}`);
  }
  const jwks = await (await fetch(disco.jwks_uri)).json();
  assert.equal(jwks.keys[0].kty, 'RSA');
  assert.equal(jwks.keys[0].d, undefined, 'jwks must not leak private parts');

  // 2. authorization code + PKCE login
  async function authorize() {
    const verifier = b64u(crypto.randomBytes(32));
    const state = b64u(crypto.randomBytes(8));
    const nonce = b64u(crypto.randomBytes(8));
    const u = new URL(disco.authorization_endpoint);
    u.search = new URLSearchParams({
      client_id: client.client_id,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid email profile',
      state,
      nonce,
      code_challenge: b64u(crypto.createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
    });
    return { verifier, state, nonce, res: await req(u.href) };
  }

  const tokenRequest = async (params) => {
    const res = await fetch(disco.token_endpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
    });
    return { status: res.status, json: await res.json() };
  };

  // Full browser-like login: login form (optionally a wrong password first), consent, code exchange.
  async function login({ wrongPasswordFirst = false } = {}) {
    const a = await authorize();
    let step = await follow(a.res);
    assert.ok(step.res, 'expected the login page');
    let html = await step.res.text();
    assert.equal(step.res.status, 200);
    assert.match(html, /<title>Sign in<\/title>/);
    assert.match(html, /name="username"/);
    assert.match(html, /name="password"/);
    assert.match(html, /id="submit"[^>]*>Sign in</);
    const loginAction = html.match(/action="(\/interaction\/[^"]+\/login)"/)[1];

    let r;
    if (wrongPasswordFirst) {
      // wrong password -> form again with error, interaction not finished
      r = await req(`${issuer}${loginAction}`, { method: 'POST', form: { username: account.username, password: 'nope' } });
      assert.equal(r.status, 200);
      html = await r.text();
      assert.match(html, /Invalid username or password/);
      assert.match(html, /<title>Sign in<\/title>/);
    }

    // right password -> consent page
    r = await req(`${issuer}${loginAction}`, { method: 'POST', form: { username: account.username, password: account.password } });
    assert.equal(r.status, 303);
    step = await follow(r);
    assert.ok(step.res, 'expected the consent page');
    html = await step.res.text();
    assert.match(html, /<title>Authorize<\/title>/);
    assert.match(html, /id="submit"[^>]*>Allow</);
    const confirmAction = html.match(/action="(\/interaction\/[^"]+\/confirm)"/)[1];
    r = await req(`${issuer}${confirmAction}`, { method: 'POST', form: {} });
    assert.equal(r.status, 303);
    step = await follow(r);
    assert.ok(step.redirect?.startsWith(redirectUri), `expected redirect to client, got ${JSON.stringify(step)}`);
    const cb = new URL(step.redirect);
    assert.equal(cb.searchParams.get('state'), a.state);
    assert.equal(cb.searchParams.get('iss'), issuer);
    const code = cb.searchParams.get('code');
    assert.ok(code);

    // 3. code exchange (client_secret_basic)
    const t = await tokenRequest({
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: a.verifier,
    });
    assert.equal(t.status, 200, JSON.stringify(t.json));
    const tokens = t.json;
    assert.ok(tokens.id_token && tokens.access_token && tokens.refresh_token, JSON.stringify(tokens));
    const idt = jwtPayload(tokens.id_token);
    assert.equal(idt.iss, issuer);
    assert.equal(idt.sub, account.id);
    assert.equal(idt.aud, client.client_id);
    assert.equal(idt.nonce, a.nonce);
    assert.equal(idt.email, account.claims.email);
    assert.equal(idt.name, account.claims.name);
    assert.deepEqual(idt.groups, account.claims.groups);
    assert.deepEqual(idt.realm_access, account.claims.realm_access);
    return tokens;
  }

  let tokens = await login({ wrongPasswordFirst: true });

  // 4. userinfo
  let r = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
  const ui = await r.json();
  assert.equal(r.status, 200, JSON.stringify(ui));
  assert.equal(ui.sub, account.id);
  assert.equal(ui.email, account.claims.email);
  assert.deepEqual(ui.groups, account.claims.groups);

  // 5. refresh with rotation (twice)
  const refresh = (rt) => tokenRequest({ grant_type: 'refresh_token', refresh_token: rt });
  for (let i = 0; i < 2; i += 1) {
    const t = await refresh(tokens.refresh_token);
    assert.equal(t.status, 200, JSON.stringify(t.json));
    assert.ok(t.json.access_token && t.json.access_token !== tokens.access_token);
    assert.ok(t.json.refresh_token && t.json.refresh_token !== tokens.refresh_token, 'refresh token rotated');
    assert.ok(t.json.id_token);
    tokens = t.json;
  }

  // 6. client_credentials: JWT for the resource server, opaque for opaque_resource
  const cc = async (resource, scope) => {
    const t = await tokenRequest({ grant_type: 'client_credentials', resource, scope });
    assert.equal(t.status, 200, JSON.stringify(t.json));
    return t.json;
  };
  const [jwtResource] = Object.keys(config.resource_servers);
  const jwtTok = await cc(jwtResource, 'orders:read');
  assert.equal(jwtTok.access_token.split('.').length, 3);
  const jp = jwtPayload(jwtTok.access_token);
  assert.equal(jp.aud, config.resource_servers[jwtResource].audience ?? jwtResource);
  assert.equal(jp.iss, issuer);
  assert.equal(jp.scope, 'orders:read');
  assert.equal(jp.client_id, client.client_id);

  const opaque = await cc(config.opaque_resource, 'orders:read');
  assert.equal(opaque.access_token.split('.').length, 1);
  const introspect = async (token) => (await fetch(disco.introspection_endpoint, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  })).json();
  let intro = await introspect(opaque.access_token);
  assert.equal(intro.active, true, JSON.stringify(intro));
  assert.equal(intro.aud, config.opaque_resource);
  assert.equal(intro.scope, 'orders:read');
  assert.equal(intro.client_id, client.client_id);

  // revocation of the opaque token -> inactive
  r = await fetch(disco.revocation_endpoint, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: opaque.access_token }),
  });
  assert.equal(r.status, 200);
  intro = await introspect(opaque.access_token);
  assert.equal(intro.active, false);

  // 7. RP-initiated logout: confirm page -> POST xsrf + logout=yes -> post_logout_redirect_uri
  const postLogout = client.post_logout_redirect_uris[0];
  const eu = new URL(disco.end_session_endpoint);
  eu.search = new URLSearchParams({ id_token_hint: tokens.id_token, post_logout_redirect_uri: postLogout, state: 'bye' });
  r = await req(eu.href);
  assert.equal(r.status, 200);
  let html = await r.text();
  assert.match(html, /<title>Sign out<\/title>/);
  assert.match(html, /id="submit"/);
  const logoutAction = html.match(/<form[^>]*action="([^"]+)"/)[1];
  const xsrf = html.match(/name="xsrf" value="([^"]+)"/)[1];
  r = await req(new URL(logoutAction, issuer).href, { method: 'POST', form: { xsrf, logout: 'yes' } });
  assert.equal(r.status, 303);
  assert.ok(r.headers.get('location').startsWith(postLogout), r.headers.get('location'));
  assert.equal(new URL(r.headers.get('location')).searchParams.get('state'), 'bye');
  // the refresh token died with the session
  r = await refresh(tokens.refresh_token);
  assert.equal(r.status, 400);
  assert.equal(r.json.error, 'invalid_grant');

  // 8. after logout a new authorization asks for login again; abort -> access_denied
  const b = await authorize();
  let step = await follow(b.res);
  html = await step.res.text();
  assert.match(html, /<title>Sign in<\/title>/);
  const abortHref = html.match(/href="(\/interaction\/[^"]+\/abort)"/)[1];
  r = await req(`${issuer}${abortHref}`);
  step = await follow(r);
  const denied = new URL(step.redirect);
  assert.equal(denied.searchParams.get('error'), 'access_denied');
  assert.equal(denied.searchParams.get('state'), b.state);

  // 8b. refresh token reuse detection: replaying a rotated refresh token revokes the whole grant
  tokens = await login();
  const rotated = await refresh(tokens.refresh_token);
  assert.equal(rotated.status, 200);
  r = await refresh(tokens.refresh_token);
  assert.equal(r.status, 400);
  assert.equal(r.json.error, 'invalid_grant');
  r = await refresh(rotated.json.refresh_token);
  assert.equal(r.status, 400, 'grant revoked after refresh token reuse');

  // 9. request counter
  const c1 = await (await fetch(`${issuer}/__test/requests`)).json();
  assert.ok(c1.count > 10, JSON.stringify(c1));
  assert.ok(c1.paths.includes('/token'));
  assert.ok(!c1.paths.includes('/__test/requests'));
  await fetch(`${issuer}/jwks`);
  const c2 = await (await fetch(`${issuer}/__test/requests`)).json();
  assert.equal(c2.count, c1.count + 1);
  assert.equal(c2.paths.at(-1), '/jwks');

  console.log(`SMOKE OK ${issuer} (${c2.count} OP requests)`);
}

try {
  await main();
} catch (err) {
  console.error('SMOKE FAILED:', err);
  process.exitCode = 1;
} finally {
  if (child) {
    const exited = new Promise((resolve) => { child.once('exit', resolve); });
    const t0 = Date.now();
    child.kill('SIGTERM');
    await exited;
    const ms = Date.now() - t0;
    if (ms > 2000) { console.error(`OP took ${ms}ms to exit`); process.exitCode = 1; }
  }
}
