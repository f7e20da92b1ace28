// A client event the server must refuse (argument: the channel, default a public one):
// the sender gets a pusher:error, the other subscriber gets nothing, the sender stays connected.
import { client, record, recordErrors, scenario, sleep, subscribe, waitFor } from './lib.mjs';

const CHANNEL = process.argv[2] ?? 'public-chat';

scenario(async () => {
  const senderClient = client();
  const sender = await subscribe(senderClient, CHANNEL);
  const other = record(await subscribe(client(), CHANNEL), 'client-shout');
  const errors = recordErrors(senderClient);
  const socketId = senderClient.connection.socket_id;

  sender.trigger('client-shout', { text: 'hi' });
  await waitFor(() => errors.length, 'pusher:error for the sender');
  await sleep(300);
  return {
    errors,
    other_received: other,
    state: senderClient.connection.state,
    same_socket: senderClient.connection.socket_id === socketId,
  };
});
