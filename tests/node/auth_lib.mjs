// Helpers for the scenarios that authorize through the server's own HTTP endpoints,
// POST /broadcasting/auth and /broadcasting/user-auth, exactly as a Laravel front end does:
// no customHandler, just `authEndpoint`, `auth.headers` and `userAuthentication` with a
// JWT in `Authorization: Bearer`. The tokens are minted by the Python test (PyJWT, HS256)
// and passed in the environment as JWT_<NAME> (e.g. JWT_ANN), so the claims under test
// are spelled out in tests/test_auth_e2e.py.

import PusherJs from 'pusher-js';
import Echo from 'laravel-echo';
import { connectionOptions, env, rest, waitFor } from './lib.mjs';

export const authEndpoint = `http://${env.host}:${env.port}/broadcasting/auth`;
export const userAuthEndpoint = `http://${env.host}:${env.port}/broadcasting/user-auth`;

/** The JWT the test passed as JWT_<NAME>; throws when it is missing. */
export function token(name) {
  const value = process.env[`JWT_${name.toUpperCase()}`];
  if (!value) throw new Error(`JWT_${name.toUpperCase()} is not set`);
  return value;
}

/**
 * pusher-js / Echo options pointing both auth calls at our server with a Bearer token.
 * Option names as in pusher-js 8.6 (`authEndpoint` + `auth.headers` take the legacy
 * channel-authorization path Echo uses; `userAuthentication` is merged over the default
 * {endpoint, transport: 'ajax'}) and Echo 2.5 (which passes all options to pusher-js).
 */
export function endpointOptions(jwt) {
  return {
    authEndpoint,
    auth: { headers: { Authorization: `Bearer ${jwt}` } },
    userAuthentication: {
      endpoint: userAuthEndpoint,
      headers: { Authorization: `Bearer ${jwt}` },
    },
  };
}

const clients = [];

/** Laravel Echo (pusher broadcaster) authorizing through the HTTP endpoints with `jwt`. */
export function authEcho(jwt) {
  const instance = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJs,
    key: env.key,
    ...connectionOptions(),
    ...endpointOptions(jwt),
  });
  clients.push(instance.connector.pusher);
  return instance;
}

/** A plain pusher-js client authorizing through the HTTP endpoints with `jwt`. */
export function authClient(jwt) {
  const pusher = new PusherJs(env.key, { ...connectionOptions(), ...endpointOptions(jwt) });
  clients.push(pusher);
  return pusher;
}

/** Disconnect every client made here (scenario() only knows lib.mjs's own clients). */
export function disconnectAll() {
  for (const pusher of clients) pusher.disconnect();
}

/**
 * The Node SDK with the master key the test configured for the app
 * (PUSHER_MASTER_KEY_BASE64), so it encrypts what it triggers on private-encrypted-*.
 */
export function sdk() {
  const key = process.env.PUSHER_MASTER_KEY_BASE64;
  return key ? rest({ encryptionMasterKeyBase64: key }) : rest();
}

/** Resolve with user_data once pusher.user has signed in and subscribed #server-to-user-<id>. */
export async function userChannelReady(pusher, who = 'user') {
  await waitFor(() => pusher.user.serverToUserChannel?.subscribed, `#server-to-user for ${who}`);
  return pusher.user.user_data;
}

/** Record pusher.connection state names, starting with the current one. */
export function recordStates(pusher) {
  const states = [pusher.connection.state];
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  return states;
}

/** Watchlist events ({name, user_ids}) delivered to pusher.user.watchlist, in order. */
export function recordWatchlist(pusher) {
  const events = [];
  for (const name of ['online', 'offline']) {
    pusher.user.watchlist.bind(name, (event) => events.push({ name: event.name, user_ids: event.user_ids }));
  }
  return events;
}

/**
 * Open `open(name)` (an Echo channel) for every name, recording per name whether it
 * subscribed, what Echo's .error() got, and what `event` delivered; resolves once every
 * channel is subscribed or refused.
 */
export async function subscribeAll(names, open, event) {
  const results = {};
  for (const name of names) {
    const result = { subscribed: false, error: null, received: [] };
    results[name] = result;
    open(name)
      .subscribed(() => { result.subscribed = true; })
      .error((err) => { result.error = { type: err.type, status: err.status ?? null }; })
      .listen(event, (data) => result.received.push(data));
  }
  await waitFor(() => names.every((n) => results[n].subscribed || results[n].error),
    'every channel subscribed or refused');
  return results;
}
