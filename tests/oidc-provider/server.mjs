// Test OpenID Provider for the oidc-gateway end-to-end tests.
//
// A real, certified OP (panva/oidc-provider 9) with an in-memory store, a
// plain HTML login/consent UI and a request counter. See README.md.
//
//   node tests/oidc-provider/server.mjs --port <PORT> --config <path-to-json>
//
// Prints exactly one line `READY http://127.0.0.1:<PORT>` on stdout once it
// accepts connections. Everything else (oidc-provider notices/warnings, errors)
// goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import * as util from 'node:util';
import { fileURLToPath } from 'node:url';

// oidc-provider prints its NOTICEs with console.info (stdout) and prints an
// "Unsupported runtime" warning at import time. Keep stdout for the READY line
// only, and drop the expected development-mode warnings unless asked for them.
const VERBOSE = process.env.OIDC_OP_VERBOSE === '1';
const QUIET = [
  'Unsupported runtime',
  'in-memory adapter is used',
];
console.info = (...args) => { if (VERBOSE) console.error(...args); };
console.log = (...args) => console.error(...args);
const originalWarn = console.warn.bind(console);
console.warn = (...args) => {
  const text = args.map(String).join(' ');
  if (!VERBOSE && QUIET.some((q) => text.includes(q))) return;
  originalWarn(...args);
};

const { default: Provider, errors: opErrors } = await import('oidc-provider');

// ---------------------------------------------------------------------------
// Command line and configuration
// ---------------------------------------------------------------------------

function parseArgs(argv) {
  const out = { port: undefined, config: undefined };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const [key, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]); // eslint-disable-line no-plusplus
    switch (key) {
      case '--port': out.port = value(); break;
      case '--config': out.config = value(); break;
      case '-h':
      case '--help':
        process.stderr.write('usage: node server.mjs --port <PORT> [--config <file.json>]\n');
        process.exit(0);
        break;
      default:
        fail(`unknown argument: ${arg}`);
    }
  }
  if (out.port === undefined) fail('--port is required (use 0 for an ephemeral port)');
  if (!/^\d+$/.test(String(out.port)) || Number(out.port) > 65535) fail(`invalid --port: ${out.port}`);
  out.port = Number(out.port);
  return out;
}

function fail(msg) {
  process.stderr.write(`test-op: ${msg}\n`);
  process.exit(2);
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');

function loadConfig(file) {
  if (!file) return {};
  // Relative paths: relative to the cwd first, then to the repository root.
  const candidates = path.isAbsolute(file)
    ? [file]
    : [path.resolve(process.cwd(), file), path.resolve(REPO_ROOT, file)];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) fail(`config file not found: ${file}`);
  try {
    return JSON.parse(fs.readFileSync(found, 'utf8'));
  } catch (err) {
    return fail(`cannot parse config ${found}: ${err.message}`);
  }
}

const args = parseArgs(process.argv.slice(2));
const cfg = loadConfig(args.config);

const DEFAULT_CLIENTS = [{
  client_id: 'gateway',
  client_secret: 'gateway-secret',
  redirect_uris: ['http://127.0.0.1:18080/oauth2/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1:18080/'],
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
}];
const DEFAULT_ACCOUNTS = [{
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
}];
const DEFAULT_TTL = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  ClientCredentials: 600,
  Grant: 86400,
  IdToken: 3600,
  Interaction: 600,
  RefreshToken: 86400,
  Session: 86400,
  DeviceCode: 600,
  BackchannelAuthenticationRequest: 600,
  PreAuthorizedCode: 600,
};

// RFC 8693 token exchange: audience -> { scope: "allowed scopes", ttl: seconds }. When set,
// every client may use the grant.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const exchangeAudiences = cfg.token_exchange;
const clients = (cfg.clients ?? DEFAULT_CLIENTS).map((c) => (exchangeAudiences
  ? { ...c, grant_types: [...(c.grant_types ?? ['authorization_code']), TOKEN_EXCHANGE] }
  : c));
const accounts = cfg.accounts ?? DEFAULT_ACCOUNTS;
const ttl = { ...DEFAULT_TTL };
for (const [k, v] of Object.entries(cfg.ttl ?? {})) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`ttl.${k} must be a positive number of seconds`);
  ttl[k] = v;
}
const resourceServers = cfg.resource_servers ?? {};
// oidc-provider's default clockTolerance is 15 s, which would keep a 2 s access
// token usable at userinfo for 17 s. Everything runs on one host: default to 0.
const clockTolerance = cfg.clock_tolerance ?? 0;
if (typeof clockTolerance !== 'number' || clockTolerance < 0) fail('clock_tolerance must be a number >= 0');
const opaqueResource = cfg.opaque_resource;
// Behind a TLS terminator: `issuer` is its https URL, and `client_cert_header` the request
// header in which it passes the client certificate (URL-encoded PEM, as nginx's
// $ssl_client_escaped_cert) for RFC 8705 tls_client_auth.
const issuerOverride = cfg.issuer;
const clientCertHeader = cfg.client_cert_header;

const accountsById = new Map();
const accountsByUsername = new Map();
for (const a of accounts) {
  if (!a.id || !a.username) fail('every account needs "id" and "username"');
  accountsById.set(String(a.id), a);
  accountsByUsername.set(String(a.username), a);
}

// Scopes known to the OP: OIDC ones plus every scope a resource server declares.
const extraScopes = new Set();
for (const rs of Object.values(resourceServers)) {
  for (const s of String(rs.scope ?? '').split(' ').filter(Boolean)) extraScopes.add(s);
}
if (opaqueResource) extraScopes.add('orders:read');

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

// The asynchronous form on purpose: on Node 20, generateKeyPairSync can deadlock when a
// garbage collection runs during the key generation (KeyGenJob's destructor takes a mutex the
// synchronous job still holds); seen as an OP that never prints READY under load.
const { privateKey } = await util.promisify(crypto.generateKeyPair)('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `test-op-${crypto.randomBytes(6).toString('hex')}`,
  use: 'sig',
  alg: 'RS256',
};
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------
// HTML helpers
// ---------------------------------------------------------------------------

function esc(value) {
  return String(value ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
</head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

function sendHtml(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(html));
  res.end(html);
}

function loginPage(uid, { username = '', error } = {}) {
  return page('Sign in', `${error ? `<p class="error" id="error">${esc(error)}</p>\n` : ''}<form method="post" action="/interaction/${esc(uid)}/login" id="login-form" enctype="application/x-www-form-urlencoded">
  <label>Username <input type="text" name="username" id="username" value="${esc(username)}" autofocus></label><br>
  <label>Password <input type="password" name="password" id="password"></label><br>
  <button type="submit" id="submit">Sign in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort" id="abort">Cancel</a></p>`);
}

function consentPage(uid, clientId, details) {
  const items = [];
  if (details.missingOIDCScope) items.push(`<li>scopes: <span id="scopes">${esc(details.missingOIDCScope.join(' '))}</span></li>`);
  if (details.missingOIDCClaims) items.push(`<li>claims: ${esc(details.missingOIDCClaims.join(' '))}</li>`);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    items.push(`<li>${esc(indicator)}: ${esc(scopes.join(' '))}</li>`);
  }
  return page('Authorize', `<p>Client <strong id="client">${esc(clientId)}</strong> requests access:</p>
<ul>
${items.join('\n')}
</ul>
<form method="post" action="/interaction/${esc(uid)}/confirm" id="consent-form" enctype="application/x-www-form-urlencoded">
  <button type="submit" id="submit">Allow</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort" id="abort">Deny</a></p>`);
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

function resourceServerInfo(indicator) {
  if (Object.hasOwn(resourceServers, indicator)) {
    const rs = resourceServers[indicator];
    const info = {
      scope: rs.scope ?? '',
      audience: rs.audience ?? indicator,
      accessTokenFormat: rs.accessTokenFormat ?? 'jwt',
    };
    if (rs.accessTokenTTL !== undefined) info.accessTokenTTL = rs.accessTokenTTL;
    if (info.accessTokenFormat === 'jwt') info.jwt = { sign: { alg: 'RS256' } };
    return info;
  }
  if (opaqueResource && indicator === opaqueResource) {
    return { scope: 'orders:read', audience: opaqueResource, accessTokenFormat: 'opaque' };
  }
  return undefined;
}

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: {
    keys: cookieKeys,
    // Cookies are not isolated by port: prefix ours so they never clash with
    // the gateway's cookies on the same 127.0.0.1 host.
    names: {
      session: 'op_session',
      interaction: 'op_interaction',
      resume: 'op_interaction_resume',
    },
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', ...extraScopes],
  claims: {
    // As Okta, Keycloak and Entra do, the ID token says how and when the user authenticated.
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'groups', 'realm_access'],
  },
  conformIdTokenClaims: false,
  // Two authentication levels: the password alone, and the password with a one-time code.
  acrValues: ['urn:test:pwd', 'urn:test:mfa'],
  clockTolerance,
  async findAccount(ctx, id) {
    const account = accountsById.get(String(id));
    if (!account) return undefined;
    return {
      accountId: String(account.id),
      async claims(use) {
        const claims = {
          preferred_username: account.username,
          ...(account.claims ?? {}),
          sub: String(account.id),
        };
        // Entra ID's groups overage: the ID token names a source instead of carrying the
        // groups, and its userinfo has none (unless `groups_in_userinfo`).
        if (account.groups_overage && (use === 'id_token' || !account.groups_in_userinfo)) {
          delete claims.groups;
          claims._claim_names = { groups: 'src1' };
          claims._claim_sources = { src1: { endpoint: `${provider.issuer}/__test/groups` } };
        }
        return claims;
      },
    };
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  pkce: { required: () => true },
  clientAuthMethods: [
    'none', 'client_secret_basic', 'client_secret_jwt', 'client_secret_post', 'private_key_jwt',
    ...(typeof clientCertHeader === 'string' ? ['tls_client_auth'] : []),
  ],
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => {
        if (token.clientId !== client.clientId) {
          throw new opErrors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    userinfo: { enabled: true },
    mTLS: {
      enabled: typeof clientCertHeader === 'string',
      tlsClientAuth: true,
      // Access tokens of clients registered with tls_client_certificate_bound_access_tokens
      // carry cnf.x5t#S256 of the certificate presented at the token endpoint (RFC 8705).
      certificateBoundAccessTokens: true,
      getCertificate(ctx) {
        const value = ctx.get(clientCertHeader);
        return value ? decodeURIComponent(value) : undefined;
      },
      // The terminator (nginx, ssl_verify_client) refuses a certificate it cannot verify
      // against its CA, so one that arrives was verified.
      certificateAuthorized(ctx) {
        return Boolean(ctx.get(clientCertHeader));
      },
      certificateSubjectMatches(ctx, property, expected) {
        if (property !== 'tls_client_auth_subject_dn') return false;
        const cert = new crypto.X509Certificate(decodeURIComponent(ctx.get(clientCertHeader)));
        return cert.subject.split('\n').join(',') === expected;
      },
    },
    backchannelLogout: { enabled: cfg.backchannel_logout === true },
    // Off unless a test asks (`par`: true, or "required"): the gateway's default pushes
    // whenever discovery advertises the endpoint, and most tests read the front-channel URL.
    pushedAuthorizationRequests: {
      enabled: cfg.par === true || cfg.par === 'required',
      requirePushedAuthorizationRequests: cfg.par === 'required',
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        // `form` is <form id="op.logoutForm" method="post" action=".../session/end/confirm">
        // with a hidden "xsrf" input; put the buttons inside it.
        const buttons = '\n  <button type="submit" id="submit" name="logout" value="yes">Yes, sign me out</button>\n'
          + '  <button type="submit" id="cancel">No, stay signed in</button>\n';
        ctx.type = 'html';
        ctx.body = page('Sign out', `<p>Do you want to sign out from ${esc(ctx.host)}?</p>\n${form.replace('</form>', `${buttons}</form>`)}`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p id="signed-out">You have been signed out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => false,
      async getResourceServerInfo(ctx, indicator) {
        const info = resourceServerInfo(indicator);
        if (!info) throw new opErrors.InvalidTarget();
        return info;
      },
    },
  },
  // Claims a test adds to every JWT access token of a client (`client_token_claims`, by
  // client id): the groups an operator's tool has, as Okta and Entra add them.
  async extraTokenClaims(ctx, token) {
    return cfg.client_token_claims?.[token.clientId];
  },
  // DPoP proofs (features.dPoP is on by default) may be RSA-signed, as the test keys are.
  enabledJWA: { dPoPSigningAlgValues: ['ES256', 'RS256', 'PS256', 'EdDSA'] },
  clientBasedCORS: () => false,
  // oidc-provider refuses outgoing requests to loopback addresses (SSRF protection), and every
  // relying party of these tests (the back-channel logout URI) is on 127.0.0.1.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', Object.entries(out)
      .map(([k, v]) => `<p><strong>${esc(k)}</strong>: <span class="${esc(k)}">${esc(v)}</span></p>`).join('\n'));
  },
};

// ---------------------------------------------------------------------------
// Interaction routes
// ---------------------------------------------------------------------------

const MAX_BODY = 64 * 1024;

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

async function handleInteraction(provider, req, res, pathname) {
  const m = pathname.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?\/?$/);
  if (!m) return sendHtml(res, 404, page('Not found', '<p>Not found</p>'));
  const [, uid, action] = m;
  const method = req.method.toUpperCase();

  try {
    if (!action && method === 'GET') {
      const details = await provider.interactionDetails(req, res);
      if (details.uid !== uid) throw new opErrors.SessionNotFound('interaction uid mismatch');
      const { prompt, params } = details;
      if (prompt.name === 'login') {
        return sendHtml(res, 200, loginPage(uid, { username: params.login_hint ?? '' }));
      }
      if (prompt.name === 'consent') {
        return sendHtml(res, 200, consentPage(uid, params.client_id, prompt.details));
      }
      return sendHtml(res, 400, page('Error', `<p>unsupported prompt ${esc(prompt.name)}</p>`));
    }

    if (action === 'login' && method === 'POST') {
      const form = await readForm(req);
      const details = await provider.interactionDetails(req, res);
      if (details.uid !== uid) throw new opErrors.SessionNotFound('interaction uid mismatch');
      if (details.prompt.name !== 'login') {
        return sendHtml(res, 400, page('Error', '<p>this interaction is not a login</p>'));
      }
      const username = form.get('username') ?? '';
      const password = form.get('password') ?? '';
      const account = accountsByUsername.get(username);
      const ok = account
        && crypto.timingSafeEqual(
          crypto.createHash('sha256').update(String(account.password ?? '')).digest(),
          crypto.createHash('sha256').update(password).digest(),
        );
      // An account with an `otp` also signs in with its password followed by that code
      // (FreeIPA's and RADIUS's "password+OTP"): a second factor, acr urn:test:mfa.
      const withOtp = account?.otp !== undefined
        && crypto.timingSafeEqual(
          crypto.createHash('sha256').update(`${account.password ?? ''}${account.otp}`).digest(),
          crypto.createHash('sha256').update(password).digest(),
        );
      if (!ok && !withOtp) {
        return sendHtml(res, 200, loginPage(uid, { username, error: 'Invalid username or password' }));
      }
      return provider.interactionFinished(req, res, {
        login: withOtp
          ? { accountId: String(account.id), acr: 'urn:test:mfa', amr: ['pwd', 'otp'] }
          : { accountId: String(account.id), acr: 'urn:test:pwd', amr: ['pwd'] },
      }, { mergeWithLastSubmission: false });
    }

    if (action === 'confirm' && method === 'POST') {
      await readForm(req); // body is not used, but drain it
      const details = await provider.interactionDetails(req, res);
      if (details.uid !== uid) throw new opErrors.SessionNotFound('interaction uid mismatch');
      const { prompt: { name, details: missing }, params, session } = details;
      if (name !== 'consent') {
        return sendHtml(res, 400, page('Error', '<p>this interaction is not a consent</p>'));
      }
      let { grantId } = details;
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      grantId = await grant.save();
      const consent = {};
      if (!details.grantId) consent.grantId = grantId;
      return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    }

    if (action === 'abort' && method === 'GET') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }

    res.setHeader('Allow', action === 'login' || action === 'confirm' ? 'POST' : 'GET');
    return sendHtml(res, 405, page('Method not allowed', '<p>Method not allowed</p>'));
  } catch (err) {
    if (err instanceof opErrors.SessionNotFound || err instanceof opErrors.OIDCProviderError) {
      return sendHtml(res, err.status ?? 400, page('Error', `<p><strong>${esc(err.message)}</strong>: <span class="error_description">${esc(err.error_description)}</span></p>`));
    }
    if (err.status === 413) return sendHtml(res, 413, page('Error', '<p>request body too large</p>'));
    console.error('test-op: interaction error', err);
    return sendHtml(res, 500, page('Error', '<p>internal error</p>'));
  }
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

const HISTORY = 200;
const stats = { count: 0, paths: [] };
// What the OP issued and how its token endpoint answered, for the fleet tests: refresh
// tokens (to prove no store holds one in clear), grants by type, invalid_grant answers, and
// back-channel logout deliveries.
const issued = {
  refresh_tokens: [],
  grants: {},
  invalid_grant: 0,
  backchannel: { ok: 0, error: 0 },
  groups_requests: 0,
};

// A delay before the token endpoint sees a request (`/__test/token-delay?ms=N`), so a test can
// kill a gateway while its refresh is in flight. A request whose client went away meanwhile is
// dropped unprocessed, as if it had been lost on the network.
let tokenDelayMs = 0;

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-store',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

// Signs a JWT with the OP's own key: the tests build logout tokens the OP would never send
// (a nonce, no events, a stale iat, a wrong typ) and need them to carry a valid signature, so
// that only the claim under test is wrong.
function signJwt(header, payload) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b64({ alg: 'RS256', kid: signingJwk.kid, ...header })}.${b64(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${sig}`;
}

/** The payload of a JWT this OP signed, if its signature holds and it has not expired. */
function verifiedJwt(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return undefined;
  const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), crypto.createPublicKey(privateKey), Buffer.from(parts[2], 'base64url'));
  if (!ok) return undefined;
  const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  return payload.exp > Date.now() / 1000 ? payload : undefined;
}

/**
 * RFC 8693: the subject token must be an active access token of this OP (opaque, or a JWT it
 * signed); the audience one the configuration lists, and the scopes within what it allows.
 * The token issued is a JWT for that audience, naming the user and the client that acted.
 */
async function tokenExchange(ctx) {
  const {
    subject_token: subjectToken, subject_token_type: subjectType, audience, scope,
  } = ctx.oidc.params;
  if (subjectType !== ACCESS_TOKEN_TYPE) throw new opErrors.InvalidRequest('subject_token_type must be an access token');
  const opaque = await provider.AccessToken.find(subjectToken).catch(() => undefined);
  const sub = opaque && !opaque.isExpired ? opaque.accountId : verifiedJwt(subjectToken)?.sub;
  if (!sub) throw new opErrors.InvalidGrant('subject_token is not an active access token');
  const rules = Object.hasOwn(exchangeAudiences, audience ?? '') ? exchangeAudiences[audience] : undefined;
  if (!rules) throw new opErrors.InvalidTarget(`no token is issued for audience ${audience}`);
  const allowed = String(rules.scope ?? '').split(' ').filter(Boolean);
  const asked = String(scope ?? rules.scope ?? '').split(' ').filter(Boolean);
  const denied = asked.filter((s) => !allowed.includes(s));
  if (denied.length) throw new opErrors.InvalidScope(`not for ${audience}: ${denied.join(' ')}`, denied.join(' '));
  const ttl = rules.ttl ?? 300;
  const now = Math.floor(Date.now() / 1000);
  const clientId = ctx.oidc.client.clientId;
  ctx.body = {
    access_token: signJwt({ typ: 'at+jwt' }, {
      iss: provider.issuer, sub, aud: audience, scope: asked.join(' '), client_id: clientId,
      act: { sub: clientId }, iat: now, exp: now + ttl, jti: crypto.randomUUID(),
    }),
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: ttl,
    scope: asked.join(' '),
  };
}

let provider;
let providerCallback;

const server = http.createServer((req, res) => {
  let pathname;
  try {
    pathname = new URL(req.url, 'http://127.0.0.1').pathname;
  } catch {
    pathname = req.url;
  }

  if (pathname === '/__test/issued') {
    sendJson(res, 200, issued);
    return;
  }
  if (pathname === '/__test/sign' && req.method === 'POST') {
    readForm(req).then((form) => {
      try {
        sendJson(res, 200, {
          jwt: signJwt(JSON.parse(form.get('header') ?? '{}'), JSON.parse(form.get('payload') ?? '{}')),
        });
      } catch (err) {
        sendJson(res, 400, { error: String(err) });
      }
    }, () => sendJson(res, 400, { error: 'bad form' }));
    return;
  }
  if (pathname === '/__test/groups' && provider) {
    // Microsoft Graph's /me/memberOf shape: pages of 100 directory objects, with
    // @odata.nextLink, for the account of the caller's bearer token (an active access token).
    issued.groups_requests += 1;
    const auth = String(req.headers.authorization ?? '');
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    provider.AccessToken.find(token).catch(() => undefined).then((at) => {
      if (!at || at.isExpired) {
        sendJson(res, 401, { error: 'invalid_token' });
        return;
      }
      const all = accountsById.get(at.accountId)?.claims?.groups ?? [];
      const page = Number(new URL(req.url, 'http://127.0.0.1').searchParams.get('page') ?? 0);
      const body = {
        value: all.slice(page * 100, page * 100 + 100).map((id) => ({ '@odata.type': '#microsoft.graph.group', id })),
      };
      const query = new URL(req.url, 'http://127.0.0.1').searchParams;
      if (query.has('next_to')) body['@odata.nextLink'] = query.get('next_to');
      else if ((page + 1) * 100 < all.length) body['@odata.nextLink'] = `${provider.issuer}/__test/groups?page=${page + 1}`;
      sendJson(res, 200, body);
    });
    return;
  }
  if (pathname === '/__test/token-delay') {
    tokenDelayMs = Number(new URL(req.url, 'http://127.0.0.1').searchParams.get('ms') ?? 0);
    sendJson(res, 200, { ms: tokenDelayMs });
    return;
  }
  if (pathname === '/__test/requests') {
    const body = JSON.stringify({ count: stats.count, paths: stats.paths });
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
    return;
  }

  stats.count += 1;
  stats.paths.push(pathname);
  if (stats.paths.length > HISTORY) stats.paths.splice(0, stats.paths.length - HISTORY);

  if (!provider) {
    res.writeHead(503).end();
    return;
  }
  if (pathname === '/interaction' || pathname.startsWith('/interaction/')) {
    handleInteraction(provider, req, res, pathname).catch((err) => {
      console.error('test-op: unhandled interaction error', err);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
    return;
  }
  if (pathname === '/token' && tokenDelayMs > 0) {
    setTimeout(() => {
      if (req.socket.destroyed || res.destroyed) return;
      providerCallback(req, res);
    }, tokenDelayMs);
    return;
  }
  providerCallback(req, res);
});

server.keepAliveTimeout = 5000;

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${args.port}: ${err.message}`));

server.listen(args.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = issuerOverride ?? `http://127.0.0.1:${port}`;
  try {
    provider = new Provider(issuer, configuration);
  } catch (err) {
    fail(`invalid provider configuration: ${err.stack ?? err}`);
  }
  if (exchangeAudiences) {
    provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
      'subject_token', 'subject_token_type', 'audience', 'scope', 'requested_token_type',
    ]);
  }
  // The TLS terminator's X-Forwarded-Proto and Host make the URLs the OP builds.
  if (issuerOverride) provider.proxy = true;
  provider.on('server_error', (ctx, err) => console.error('test-op: server_error', err));
  provider.on('refresh_token.saved', (token) => issued.refresh_tokens.push(token.jti));
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params?.grant_type ?? 'unknown';
    issued.grants[type] = (issued.grants[type] ?? 0) + 1;
  });
  provider.on('grant.error', (ctx, err) => {
    if (err.error === 'invalid_grant') issued.invalid_grant += 1;
  });
  provider.on('backchannel.success', () => { issued.backchannel.ok += 1; });
  provider.on('backchannel.error', (ctx, err) => {
    issued.backchannel.error += 1;
    console.error('test-op: back-channel logout failed', err?.message ?? err, err?.cause);
  });
  providerCallback = provider.callback();
  process.stdout.write(`LISTENING http://127.0.0.1:${port}\nREADY ${issuer}\n`);
});
