// A real OpenID Connect provider (panva's oidc-provider) on loopback, for the cloud-paas tests.
//
// Users: alice (group physics), bob (group biology), carol (group physics), admin (group cloud-paas-admins);
// each one's password is "<name>-password". Clients:
//   cloud-paas-cli    (secret cloud-paas-cli-secret): password grant (users), client_credentials, authorization code
//   physics-robot     (secret physics-robot-secret): client_credentials; its tokens carry the group physics
//   cloud-paas-ui     (secret cloud-paas-ui-secret): authorization code (+ refresh) for a browser login;
//                     redirect URIs from OIDC_REDIRECT_URIS (comma-separated)
// The browser login: /interaction/<uid> shows a sign-in form (user name, password: a wrong one is refused) and
// then a consent form (button "Continue"). ID tokens carry groups, preferred_username and name too.
// Access tokens are JWTs (RS256, keys published at /jwks) for the resource (audience) asked for, default
// OIDC_AUDIENCE; the resource OIDC_OTHER_AUDIENCE exists too, so tests get well-signed tokens for another API.
// Every token carries "groups" and "preferred_username".
//
// Environment: PORT (required), OIDC_AUDIENCE (default urn:cloud-paas:api), OIDC_OTHER_AUDIENCE (default
// urn:other:api), OIDC_REDIRECT_URIS. Prints one line "ready <issuer>" once it listens on 127.0.0.1.
// The password grant is not part of oidc-provider (OAuth 2.1 drops it): it is registered below as a custom grant
// type, and only checks the users listed here.

import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
if (!port) {
  console.error('set PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.OIDC_AUDIENCE || 'urn:cloud-paas:api';
const otherAudience = process.env.OIDC_OTHER_AUDIENCE || 'urn:other:api';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || `http://127.0.0.1:8080/auth/oauth-authorized/oidc`)
  .split(',').map((u) => u.trim()).filter(Boolean);

const users = {
  alice: { groups: ['physics'], name: 'Alice Physicist' },
  bob: { groups: ['biology'], name: 'Bob Biologist' },
  carol: { groups: ['physics'], name: 'Carol Physicist' },
  admin: { groups: ['cloud-paas-admins'], name: 'PaaS Admin' },
};
const clientGroups = { 'physics-robot': ['physics'] };
const apiScope = 'openid profile groups api';

function claimsOf(accountId) {
  const user = users[accountId];
  return user ? { groups: user.groups, preferred_username: accountId, name: user.name } : undefined;
}

function resourceServerInfo(resource) {
  if (resource !== audience && resource !== otherAudience) throw new errors.InvalidTarget();
  return {
    scope: apiScope,
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: 3600,
    jwt: { sign: { alg: 'RS256' } },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'cloud-paas-cli',
      client_secret: 'cloud-paas-cli-secret',
      grant_types: ['password', 'client_credentials', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      scope: apiScope,
    },
    {
      client_id: 'physics-robot',
      client_secret: 'physics-robot-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: apiScope,
    },
    {
      client_id: 'cloud-paas-ui',
      client_secret: 'cloud-paas-ui-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      scope: apiScope,
    },
  ],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'groups', 'api', 'offline_access'],
  async findAccount(_ctx, id) {
    const claims = claimsOf(id);
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
  features: {
    clientCredentials: { enabled: true },
    // our own login and consent pages (below): the login checks the password, unlike oidc-provider's dev pages
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => resourceServerInfo(resource),
    },
  },
  async extraTokenClaims(_ctx, token) {
    if (token.accountId) return claimsOf(token.accountId);
    const groups = clientGroups[token.clientId];
    return groups ? { groups, preferred_username: token.clientId } : undefined;
  },
  pkce: { required: () => false },
  // the ID token carries the scopes' claims (groups, preferred_username, name) whatever the response type
  conformIdTokenClaims: false,
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 3600, ClientCredentials: 3600, Grant: 3600, Session: 3600, Interaction: 600 },
});
provider.proxy = false;

// Resource owner password grant: username + password ("<name>-password") -> a JWT access token for the resource.
provider.registerGrantType('password', async (ctx) => {
  const { username, password, resource } = ctx.oidc.params;
  if (!users[username] || password !== `${username}-password`) {
    throw new errors.InvalidGrant('wrong user name or password');
  }
  const target = resource || audience;
  const info = resourceServerInfo(target);
  const grant = new provider.Grant({ accountId: username, clientId: ctx.oidc.client.clientId });
  grant.addResourceScope(target, apiScope);
  const grantId = await grant.save();
  const token = new provider.AccessToken({
    accountId: username, client: ctx.oidc.client, grantId, gty: 'password', scope: apiScope,
  });
  token.resourceServer = {
    ...info, scopes: new Set(apiScope.split(' ')), identifier: () => target,
  };
  const value = await token.save();
  ctx.body = {
    access_token: value, expires_in: token.expiration, token_type: 'Bearer', scope: apiScope,
  };
}, ['username', 'password', 'resource', 'scope']);

// The interaction pages of the authorization code flow: a login form (user name and password, checked against
// the users above) and a consent form. GET /interaction/:uid shows the one the interaction asks for; the forms
// post to /interaction/:uid/login, /interaction/:uid/confirm and /interaction/:uid/abort.
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>`
    + `<body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

function loginPage(uid, clientId, error) {
  return page('Sign-in', `<p>Sign in to <b>${esc(clientId)}</b></p>`
    + (error ? `<p id="error" role="alert">${esc(error)}</p>` : '')
    + `<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">`
    + '<label>User name <input name="login" id="login" required autofocus></label>'
    + '<label>Password <input name="password" id="password" type="password" required></label>'
    + '<button type="submit" id="sign-in">Sign-in</button></form>'
    + `<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Authorize', `<p><b>${esc(clientId)}</b> asks for: ${esc(scopes.join(' '))}</p>`
    + `<form method="post" action="/interaction/${esc(uid)}/confirm">`
    + '<button type="submit" id="continue">Continue</button></form>'
    + `<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

async function formBody(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function finish(ctx, result, merge) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/);
  if (!match) return next();
  const [, uid, action] = match;
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session, grantId } = details;
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  if (ctx.method === 'GET' && !action) {
    ctx.type = 'html';
    if (prompt.name === 'login') ctx.body = loginPage(uid, params.client_id);
    else if (prompt.name === 'consent') ctx.body = consentPage(uid, params.client_id, String(params.scope).split(' '));
    else ctx.throw(501, `prompt ${prompt.name} not implemented`);
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  if (action === 'abort') {
    return finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
  }
  if (action === 'login') {
    const form = await formBody(ctx);
    const login = form.get('login') || '';
    if (prompt.name !== 'login') ctx.throw(400, 'not a login interaction');
    if (!users[login] || form.get('password') !== `${login}-password`) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(uid, params.client_id, 'Invalid user name or password.');
      return undefined;
    }
    return finish(ctx, { login: { accountId: login } }, false);
  }
  // confirm: grant what the consent prompt found missing
  if (prompt.name !== 'consent') ctx.throw(400, 'not a consent interaction');
  const grant = grantId ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
  }
  return finish(ctx, { consent: { grantId: await grant.save() } }, true);
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
