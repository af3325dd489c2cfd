// A real OpenID Provider for the console's browser tests: node `oidc-provider` (MIT, OpenID
// certified), on loopback. This script only configures it: clients, test accounts, and the
// login screen (oidc-provider leaves interactions to the application), where the person
// may confirm a second factor, which the provider then asserts in `amr` and `acr`.
//
//   node provider.mjs CONFIG.json     (CONFIG: {port, clients: [...], users: {name: claims}, mixup_client})
//
// `mixup_client`: for that client the token endpoint answers with an ID token the provider
// issued, with its own keys, for another client (`aud` another application): the mix-up the
// console must refuse. Prints "ready <issuer>" once listening.
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  scopes: ['openid', 'profile', 'email', 'groups'],
  // acr and amr with every ID token (as Entra, Okta and Keycloak send them): oidc-provider releases
  // a claim only through a granted scope or the claims parameter, and drops `acr` without acrValues.
  claims: { auth_time: null, sid: null, openid: ['sub', 'acr', 'amr'], profile: ['name'], email: ['email'], groups: ['groups'] },
  acrValues: ['urn:test:pwd', 'urn:test:mfa'],
  findAccount: async (ctx, id) => (config.users[id] ? {
    accountId: id,
    claims: async () => ({ sub: id, ...config.users[id] }),
  } : undefined),
  // Scope claims (name, groups) in the ID token, as Entra, Okta and Keycloak put them there.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // First-party clients: no consent screen.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    return grant;
  },
  cookies: { keys: ['schizodot-test-provider'] },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60, IdToken: 300, AccessToken: 300 },
});

if (config.mixup_client) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'token' && ctx.oidc.client?.clientId === config.mixup_client && ctx.body?.id_token) {
      const other = await provider.Client.find(config.clients.find((c) => c.client_id !== config.mixup_client).client_id);
      const claims = JSON.parse(Buffer.from(ctx.body.id_token.split('.')[1], 'base64url'));
      const token = new provider.IdToken({ sub: claims.sub, groups: claims.groups }, { client: other, ctx });
      token.scope = 'openid groups';
      token.set('nonce', claims.nonce);
      ctx.body = { ...ctx.body, id_token: await token.issue({ use: 'idtoken' }) };
    }
  });
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(`<!doctype html><html lang="en"><head><title>Test provider sign-in</title></head><body><main>
<h1>Test organisation: sign in</h1>
<form method="post" action="/interaction/${escape(details.uid)}">
<label for="username">User name</label> <input id="username" name="username" autocomplete="off">
<label><input type="checkbox" id="otp" name="otp" value="1"> I confirm with my one-time code</label>
<button type="submit" id="provider-submit">Sign in</button></form></main></body></html>`);
    return;
  }
  let body = '';
  for await (const chunk of req) body += chunk;
  const form = new URLSearchParams(body);
  const user = form.get('username') || '';
  if (!config.users[user]) {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown user' });
    return;
  }
  const otp = form.get('otp') === '1';
  await provider.interactionFinished(req, res, {
    login: { accountId: user, amr: otp ? ['pwd', 'otp'] : ['pwd'], acr: otp ? 'urn:test:mfa' : 'urn:test:pwd' },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => { res.statusCode = 500; res.end(String(error)); });
  } else {
    callback(req, res);
  }
}).listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
