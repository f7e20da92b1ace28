// GET /channels/presence-x/users lists each distinct user id once.
import { client, rest, scenario, subscribe } from './lib.mjs';

scenario(async () => {
  const sdk = rest();
  const empty = await sdk.get({ path: '/channels/presence-x/users' });
  const emptyBody = await empty.json();
  await Promise.all([
    subscribe(client({ member: { user_id: '1', user_info: { name: 'Ann' } } }), 'presence-x'),
    subscribe(client({ member: { user_id: '1', user_info: { name: 'Ann' } } }), 'presence-x'),
    subscribe(client({ member: { user_id: '2' } }), 'presence-x'),
  ]);
  const res = await sdk.get({ path: '/channels/presence-x/users' });
  const body = await res.json();
  body.users.sort((a, b) => a.id.localeCompare(b.id));
  return { empty: { status: empty.status, body: emptyBody }, status: res.status, body };
});
