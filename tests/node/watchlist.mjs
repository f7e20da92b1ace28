// Watchlist: Ann signs in through /broadcasting/user-auth with a token whose `watchlist`
// claim names Bob (JWT_ANN). pusher.user.watchlist sees Bob offline at first, online when
// Bob signs in (JWT_BOB), offline again when Bob's only socket disconnects.
import { scenario, sleep, waitFor } from './lib.mjs';
import { authClient, disconnectAll, recordWatchlist, token, userChannelReady } from './auth_lib.mjs';

scenario(async () => {
  const ann = authClient(token('ann'));
  const seen = recordWatchlist(ann);
  ann.signin();
  const annUser = await userChannelReady(ann, 'Ann');
  await waitFor(() => seen.length >= 1, 'initial watchlist event');
  await sleep(200);
  const initial = [...seen];

  const bob = authClient(token('bob'));
  bob.signin();
  const bobUser = await userChannelReady(bob, 'Bob');
  await waitFor(() => seen.length >= initial.length + 1, 'online for Bob');
  await sleep(200);
  const afterSignin = [...seen];

  bob.disconnect();
  await waitFor(() => seen.length >= afterSignin.length + 1, 'offline for Bob');
  await sleep(300); // a duplicate would arrive now
  disconnectAll();
  return {
    ann_user_data: annUser,
    bob_user_data: bobUser,
    initial,
    after_bob_signin: afterSignin.slice(initial.length),
    after_bob_disconnect: seen.slice(afterSignin.length),
  };
});
