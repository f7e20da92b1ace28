// Echo.private(name) for each name in argv, authorized by POST /broadcasting/auth with the
// JWT in JWT_USER. Records per channel whether it subscribed or what Echo's .error() got,
// then triggers `order.shipped` on every one of them (allowed or not) with the Node SDK and
// records what each channel received.
import { scenario, sleep, waitFor } from './lib.mjs';
import { authEcho, disconnectAll, sdk, subscribeAll, token } from './auth_lib.mjs';

const names = process.argv.slice(2);

scenario(async () => {
  const Echo = authEcho(token('user'));
  const results = await subscribeAll(names, (name) => Echo.private(name), '.order.shipped');

  const sent = { order: 'shipped', n: 1 };
  const res = await sdk().trigger(names.map((name) => `private-${name}`), 'order.shipped', sent);
  const allowed = names.filter((name) => results[name].subscribed);
  await waitFor(() => allowed.every((name) => results[name].received.length), 'order.shipped');
  await sleep(300); // a stray delivery to a refused channel would arrive now
  const state = Echo.connector.pusher.connection.state;
  disconnectAll();
  return { trigger_status: res.status, sent, state, channels: results };
});
