// Node SDK trigger with {info}: per-channel subscription and user counts in the reply.
// Sockets: 2 on `counted`, 3 on `presence-counted` (user 1 twice, user 2 once).
import { client, rest, scenario, subscribe } from './lib.mjs';

scenario(async () => {
  await Promise.all([
    subscribe(client(), 'counted'),
    subscribe(client(), 'counted'),
    subscribe(client({ member: { user_id: '1' } }), 'presence-counted'),
    subscribe(client({ member: { user_id: '1' } }), 'presence-counted'),
    subscribe(client({ member: { user_id: '2' } }), 'presence-counted'),
  ]);
  const sdk = rest();
  const pub = await sdk.trigger('counted', 'ev', {}, { info: 'subscription_count' });
  const presence = await sdk.trigger('presence-counted', 'ev', {}, { info: 'user_count' });
  const plain = await sdk.trigger('counted', 'ev', {});
  return {
    public: { status: pub.status, body: await pub.json() },
    presence: { status: presence.status, body: await presence.json() },
    without_info: { status: plain.status, body: await plain.json() },
  };
});
