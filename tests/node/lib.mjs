// Shared helpers for the end-to-end scenarios in this folder.
//
// Every scenario is a small script run by tests/test_node_clients.py through `run_node`:
// it drives the unmodified npm clients (pusher-js, laravel-echo, the `pusher` Node SDK)
// against the server named by PUSHER_HOST/PUSHER_PORT and prints exactly one JSON line
// with its observations. Channel authorization and user authentication are signed
// in-process with the Node SDK, so no HTTP auth endpoint is needed.

import PusherJs from 'pusher-js';
import PusherServer from 'pusher';
import Echo from 'laravel-echo';

export const env = {
  host: process.env.PUSHER_HOST ?? '127.0.0.1',
  port: Number(process.env.PUSHER_PORT ?? 6001),
  appId: process.env.PUSHER_APP_ID ?? 'app-id',
  key: process.env.PUSHER_APP_KEY ?? 'app-key',
  secret: process.env.PUSHER_APP_SECRET ?? 'app-secret',
};

// 32 bytes, base64: the end-to-end encryption master key (known only to the SDK and the
// auth handler, never to the server).
export const MASTER_KEY_BASE64 = Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');

/** The Node HTTP SDK, pointed at the server under test. */
export function rest(overrides = {}) {
  return new PusherServer({
    appId: env.appId,
    key: env.key,
    secret: env.secret,
    host: env.host,
    port: String(env.port),
    useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY_BASE64,
    ...overrides,
  });
}

/** Flip the last hex digit of a `key:signature` auth string. */
function tamper(auth) {
  const last = auth.at(-1);
  return auth.slice(0, -1) + (last === '0' ? '1' : '0');
}

/**
 * pusher-js auth options that sign in-process with the Node SDK.
 *   member: presence channel_data ({user_id, user_info}) used for presence-* channels
 *   user:   user_data for pusher.signin() ({id, user_info?})
 *   tamperChannels: channel names whose signature is deliberately corrupted
 */
export function authOptions({ member, user, tamperChannels = [] } = {}) {
  const sdk = rest();
  return {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          const presence = channelName.startsWith('presence-') ? member : undefined;
          const auth = sdk.authorizeChannel(socketId, channelName, presence);
          if (tamperChannels.includes(channelName)) auth.auth = tamper(auth.auth);
          callback(null, auth);
        } catch (err) {
          callback(err, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        try {
          callback(null, sdk.authenticateUser(socketId, user));
        } catch (err) {
          callback(err, null);
        }
      },
    },
  };
}

/** Options shared by pusher-js and Echo to reach the local server over plain ws://. */
export function connectionOptions() {
  return {
    cluster: 'mt1',
    wsHost: env.host,
    wsPort: env.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
  };
}

const clients = [];

/** A pusher-js client (Node build). `auth` is passed to authOptions(). */
export function client({ key = env.key, ...auth } = {}, extra = {}) {
  const pusher = new PusherJs(key, { ...connectionOptions(), ...authOptions(auth), ...extra });
  clients.push(pusher);
  return pusher;
}

/** A Laravel Echo instance with the pusher broadcaster, using the pusher-js Node build. */
export function echo(auth = {}) {
  const instance = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJs,
    key: env.key,
    ...connectionOptions(),
    ...authOptions(auth),
  });
  clients.push(instance.connector.pusher);
  return instance;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `predicate` every 10 ms; reject with `what` after `timeout` ms. */
export async function waitFor(predicate, what = 'condition', timeout = 5000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolve once the client reaches state `connected`. */
export function connected(pusher) {
  return waitFor(() => pusher.connection.state === 'connected', 'connected');
}

/** Subscribe and resolve with the channel on pusher:subscription_succeeded. */
export function subscribe(pusher, name) {
  const channel = pusher.subscribe(name);
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (err) =>
      reject(new Error(`subscription to ${name} failed: ${JSON.stringify(err)}`)));
  });
}

/** Record every `event` on `target` (a channel or pusher.user) as {data, user_id?}. */
export function record(target, event) {
  const seen = [];
  target.bind(event, (data, metadata) => {
    seen.push(metadata?.user_id === undefined ? { data } : { data, user_id: metadata.user_id });
  });
  return seen;
}

/** A presence channel's member list as [{id, info}], sorted by id. */
export function members(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  return list.sort((a, b) => String(a.id).localeCompare(String(b.id)));
}

/** Record pusher:member_added / pusher:member_removed on a presence channel, in order. */
export function recordMembership(channel) {
  const events = [];
  channel.bind('pusher:member_added', (m) => events.push({ event: 'added', id: m.id, info: m.info }));
  channel.bind('pusher:member_removed', (m) => events.push({ event: 'removed', id: m.id, info: m.info }));
  return events;
}

/** Error codes and messages emitted on pusher.connection ('error' events). */
export function recordErrors(pusher) {
  const errors = [];
  pusher.connection.bind('error', (err) => {
    const data = err?.error?.data ?? err?.data ?? {};
    errors.push({ type: err?.type ?? null, code: data.code ?? null, message: data.message ?? null });
  });
  return errors;
}

/** Names of the occupied channels the server reports through GET /channels. */
export async function occupiedChannels(sdk = rest()) {
  const res = await sdk.get({ path: '/channels' });
  return Object.keys((await res.json()).channels).sort();
}

/** HTTP status of an SDK request, whether it resolved or failed with a RequestError. */
export async function statusOf(promise) {
  try {
    const res = await promise;
    return res.status;
  } catch (err) {
    if (err?.status === undefined) throw err;
    return err.status;
  }
}

/**
 * Run a scenario: print its result as one JSON line and exit 0, or print
 * {"error": ...} and exit 1 on failure or after `timeout` ms.
 */
export function scenario(main, timeout = 15000) {
  let done = false;
  const fail = (message) => {
    done = true;
    process.stdout.write(JSON.stringify({ error: message }) + '\n');
    process.exit(1);
  };
  setTimeout(() => fail(`scenario timed out after ${timeout} ms`), timeout).unref();
  // The event loop emptied while main() was still waiting (e.g. every socket closed).
  process.on('beforeExit', () => done || fail('scenario stalled: nothing left to wait for'));
  main()
    .then((result) => {
      done = true;
      for (const pusher of clients) pusher.disconnect();
      process.stdout.write(JSON.stringify(result) + '\n');
      process.exit(0);
    })
    .catch((err) => fail(String(err?.stack ?? err)));
}
