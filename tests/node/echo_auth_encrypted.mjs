// Echo.encryptedPrivate(name) for each name in argv, authorized by POST /broadcasting/auth
// (which returns the shared_secret derived from the app's master key). The Node SDK, given
// the same master key, encrypts `secret-message`; pusher-js decrypts it in the listener.
import { scenario, sleep, waitFor } from './lib.mjs';
import { authEcho, disconnectAll, sdk, subscribeAll, token } from './auth_lib.mjs';

const names = process.argv.slice(2);

scenario(async () => {
  const Echo = authEcho(token('user'));
  const results = await subscribeAll(names, (name) => Echo.encryptedPrivate(name), '.secret-message');

  const sent = { text: 'for your eyes only', n: 42, nested: { ok: true } };
  const statuses = [];
  // The SDK encrypts per channel, so it triggers one encrypted channel per request.
  for (const name of names) {
    const res = await sdk().trigger(`private-encrypted-${name}`, 'secret-message', sent);
    statuses.push(res.status);
  }
  const allowed = names.filter((n) => results[n].subscribed);
  await waitFor(() => allowed.every((n) => results[n].received.length), 'secret-message');
  await sleep(300);
  disconnectAll();
  return { trigger_statuses: statuses, sent, channels: results };
});
