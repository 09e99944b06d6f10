// A real OpenID Connect provider for Heron's tests: the OpenID-certified `oidc-provider` package
// (pinned in package-lock.json) on plain HTTP, with a minimal login form (fields `login` and
// `password`), automatic consent, PKCE S256 required and a `groups` claim.
//
// Usage: node provider.mjs CONFIG.json   (or the JSON in the env variable OIDC_PROVIDER_CONFIG)
// {
//   "host": "127.0.0.1", "port": 0, "issuer": "http://127.0.0.1:PORT",
//   "client": {"client_id": "...", "client_secret": "...", "redirect_uris": ["..."],
//              "token_endpoint_auth_method": "client_secret_basic",
//              "id_token_signed_response_alg": "RS256"},
//   "users": [{"id": "alice", "email": "...", "name": "...", "password": "...",
//              "groups": ["eng"]}],
//   "groups_in_id_token": true
// }
// When listening it prints one line to stdout: `READY <issuer>`.
//
// Test-only extra: `POST /_test/rotate-keys` makes new signing keys (they sign from then on; the
// old ones stay in the JWKS) and answers the new JWKS' public key ids.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const config = JSON.parse(
  process.argv[2] ? readFileSync(process.argv[2], 'utf8') : process.env.OIDC_PROVIDER_CONFIG,
);
const host = config.host ?? '127.0.0.1';
const port = Number(config.port ?? 0);
const issuer = config.issuer ?? `http://${host}:${port}`;
const users = new Map(config.users.map((user) => [user.id, user]));
const groupsInIdToken = config.groups_in_id_token ?? true;

function newSigningKeys() {
  const stamp = randomUUID().slice(0, 8);
  const make = (type, options, alg) => {
    const jwk = generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
    return { ...jwk, kid: `${alg.toLowerCase()}-${stamp}`, alg, use: 'sig' };
  };
  return [
    make('rsa', { modulusLength: 2048 }, 'RS256'),
    make('ec', { namedCurve: 'P-256' }, 'ES256'),
    make('ed25519', {}, 'EdDSA'),
  ];
}

const cookieKeys = [randomBytes(32).toString('hex')];

function account(id) {
  const user = users.get(id);
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: user.email,
        email_verified: true,
        name: user.name,
        groups: user.groups,
      };
    },
  };
}

function makeProvider(jwks) {
  const client = config.client;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: client.client_id,
        client_secret: client.client_secret,
        redirect_uris: client.redirect_uris,
        token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
        id_token_signed_response_alg: client.id_token_signed_response_alg ?? 'RS256',
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
    ],
    jwks: { keys: jwks },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    // false: the ID token carries the claims of every granted scope (groups among them); true
    // leaves them to userinfo, as some providers do
    conformIdTokenClaims: !groupsInIdToken,
    findAccount: async (ctx, id) => account(id),
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
    },
    pkce: { methods: ['S256'], required: () => true },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: {
      keys: cookieKeys,
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
    clientBasedCORS: () => false,
    renderError: async (ctx, out) => {
      ctx.type = 'text/html';
      ctx.body = page('Error', `<p id="error">${escape(out.error)}: ${escape(out.error_description ?? '')}</p>`);
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));
  return provider;
}

let jwks = newSigningKeys();
let provider = makeProvider(jwks);
let handler = provider.callback();

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head><body>${body}</body></html>`;
}

function loginForm(uid, error) {
  return page(
    'Sign in',
    `<h1>Sign in</h1>${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User <input name="login" id="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" id="submit">Sign in</button>
</form>`,
  );
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function consent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  if (prompt.details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const saved = await grant.save();
  const result = { consent: grantId ? {} : { grantId: saved } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function interaction(req, res, path) {
  const [uid, action] = path.split('/').slice(2);
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch\n');
  if (req.method === 'GET' && !action) {
    if (details.prompt.name === 'consent') return consent(req, res, details);
    return send(res, 200, 'text/html; charset=utf-8', loginForm(uid));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const user = users.get(form.get('login') ?? '');
    if (!user || user.password !== form.get('password')) {
      return send(res, 401, 'text/html; charset=utf-8', loginForm(uid, 'Invalid user or password'));
    }
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.id } },
      { mergeWithLastSubmission: false },
    );
  }
  return send(res, 405, 'text/plain', 'method not allowed\n');
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
    if (path === '/_test/rotate-keys' && req.method === 'POST') {
      jwks = [...newSigningKeys(), ...jwks];
      provider = makeProvider(jwks);
      handler = provider.callback();
      return send(res, 200, 'application/json', JSON.stringify({ kids: jwks.map((k) => k.kid) }));
    }
    return handler(req, res);
  } catch (err) {
    console.error('provider.mjs:', err);
    if (!res.headersSent) send(res, 500, 'text/plain', `${err}\n`);
    else res.end();
  }
});

server.listen(port, host, () => {
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
