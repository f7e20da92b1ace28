// Node SDK trigger with {info}: per-channel subscription and user counts in the reply.
// Sockets: 2 on `counted`, 3 on `presence-counted` (user 1 twice, user 2 once), 1 on
// `my-channel`, none on `presence-my-channel`.
import { client, record, rest, scenario, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const [, , , , , mine] = await Promise.all([
    subscribe(client(), 'counted'),
    subscribe(client(), 'counted'),
    subscribe(client({ member: { user_id: '1' } }), 'presence-counted'),
    subscribe(client({ member: { user_id: '1' } }), 'presence-counted'),
    subscribe(client({ member: { user_id: '2' } }), 'presence-counted'),
    subscribe(client(), 'my-channel'),
  ]);
  const delivered = record(mine, 'mixed');
  const sdk = rest();
  const pub = await sdk.trigger('counted', 'ev', {}, { info: 'subscription_count' });
  const presence = await sdk.trigger('presence-counted', 'ev', {}, { info: 'user_count' });
  const plain = await sdk.trigger('counted', 'ev', {});
  // user_count asked of a public and a presence channel at once: delivered, and answered
  // for the presence channel only.
  const mixed = await sdk.trigger(['my-channel', 'presence-my-channel'], 'mixed', { n: 1 },
    { info: 'user_count,subscription_count' });
  await waitFor(() => delivered.length, 'the mixed event on my-channel');
  return {
    public: { status: pub.status, body: await pub.json() },
    presence: { status: presence.status, body: await presence.json() },
    without_info: { status: plain.status, body: await plain.json() },
    mixed: { status: mixed.status, body: await mixed.json(), delivered },
  };
});
