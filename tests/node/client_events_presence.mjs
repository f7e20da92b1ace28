// Client events on a presence channel: Ann (two tabs) and Bob; Ann's first tab triggers.
import { client, record, recordErrors, scenario, sleep, subscribe, waitFor } from './lib.mjs';

const CHANNEL = 'presence-chat';
const ANN = { user_id: '1', user_info: { name: 'Ann' } };
const BOB = { user_id: '2', user_info: { name: 'Bob' } };

scenario(async () => {
  const senderClient = client({ member: ANN });
  const sender = await subscribe(senderClient, CHANNEL);
  const sameUser = await subscribe(client({ member: ANN }), CHANNEL);
  const other = await subscribe(client({ member: BOB }), CHANNEL);
  const seen = {
    sender: record(sender, 'client-typing'),
    same_user: record(sameUser, 'client-typing'),
    other: record(other, 'client-typing'),
  };
  const errors = recordErrors(senderClient);

  const sent = { text: 'hello', user_id: 'forged' };
  const accepted = sender.trigger('client-typing', sent);
  await waitFor(() => seen.other.length && seen.same_user.length, 'client-typing');
  await sleep(300); // an echo to the sender would arrive now
  return { accepted, sent, ...seen, sender_errors: errors };
});
