// pusher-js signin() through POST /broadcasting/user-auth (JWT_ANN; Bob with JWT_BOB looks
// on), then the Node SDK's sendToUser reaches pusher.user.bind on Ann's socket only, then
// terminateUserConnections closes Ann's socket with 4009 and pusher-js does not come back.
import { recordErrors, scenario, sleep, waitFor } from './lib.mjs';
import {
  authClient, disconnectAll, recordStates, sdk, token, userChannelReady,
} from './auth_lib.mjs';

scenario(async () => {
  const ann = authClient(token('ann'));
  const bob = authClient(token('bob'));
  const annStates = recordStates(ann);
  const annErrors = recordErrors(ann);
  const annNotes = [];
  const bobNotes = [];
  ann.user.bind('private-note', (data) => annNotes.push(data));
  bob.user.bind('private-note', (data) => bobNotes.push(data));
  ann.signin();
  bob.signin();
  const annUser = await userChannelReady(ann, 'Ann');
  const bobUser = await userChannelReady(bob, 'Bob');

  const sent = { text: 'only for Ann', n: 1 };
  const sendRes = await sdk().sendToUser(annUser.id, 'private-note', sent);
  await waitFor(() => annNotes.length, 'private-note for Ann');
  await sleep(300);

  const terminateRes = await sdk().terminateUserConnections(annUser.id);
  await waitFor(() => ann.connection.state === 'disconnected', 'Ann disconnected');
  await sleep(1500); // pusher-js would reconnect after 1 s if the close code allowed it
  const result = {
    ann_user_data: annUser,
    bob_user_data: bobUser,
    user_channel: `#server-to-user-${annUser.id}`,
    send_status: sendRes.status,
    sent,
    ann_notes: annNotes,
    bob_notes: bobNotes,
    terminate_status: terminateRes.status,
    ann_states: annStates,
    ann_errors: annErrors,
    bob_state: bob.connection.state,
  };
  disconnectAll();
  return result;
});
