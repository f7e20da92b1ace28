// pusher.signin() with an in-process user authenticator, then Node SDK sendToUser.
// Ann is signed in on two sockets, Bob on one, and one socket is not signed in.
import { client, record, rest, scenario, sleep, waitFor } from './lib.mjs';

function signedIn(user) {
  const pusher = client({ user });
  pusher.signin();
  return pusher;
}

const subscribedToUser = (pusher) =>
  waitFor(() => pusher.user.serverToUserChannel?.subscribed, `#server-to-user for ${pusher.key}`);

scenario(async () => {
  const ann = { id: 'ann-1', user_info: { name: 'Ann' } };
  const clients = [signedIn(ann), signedIn(ann), signedIn({ id: 'bob-2' })];
  const anonymous = client();
  let signinSuccess = 0;
  clients[0].bind('pusher:signin_success', () => signinSuccess++);
  await Promise.all(clients.map(subscribedToUser));

  const [ann1, ann2, bob] = clients.map((pusher) => record(pusher.user, 'private-note'));
  const anon = [];
  anonymous.bind_global((event) => event.startsWith('pusher') || anon.push(event));

  const sent = { text: 'only for Ann', n: 1 };
  const res = await rest().sendToUser('ann-1', 'private-note', sent);
  await waitFor(() => ann1.length && ann2.length, 'private-note on both of Ann\'s sockets');
  await sleep(300);
  return {
    user_data: clients.map((pusher) => pusher.user.user_data),
    user_channel: clients[0].user.serverToUserChannel.name,
    signin_success_events: signinSuccess,
    send_status: res.status,
    sent,
    ann_tab1: ann1.map((e) => e.data),
    ann_tab2: ann2.map((e) => e.data),
    bob: bob.map((e) => e.data),
    anonymous: anon,
  };
});
