// 20 client events in a tight loop on a private channel: the server lets about ten
// through per second and answers the rest with pusher:error 4301, keeping the socket.
import { client, recordErrors, scenario, sleep, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const senderClient = client();
  const sender = await subscribe(senderClient, 'private-flood');
  const receiver = await subscribe(client(), 'private-flood');
  const received = [];
  receiver.bind('client-n', (data) => received.push(data.n));
  const errors = recordErrors(senderClient);
  const socketId = senderClient.connection.socket_id;

  for (let n = 0; n < 20; n++) sender.trigger('client-n', { n });
  // Each event is either refused (to the sender) or delivered (to the receiver).
  await waitFor(() => errors.length + received.length >= 20, 'every event answered');
  await sleep(300); // a stray delivery of a refused event would arrive now
  return {
    received,
    error_codes: errors.map((e) => e.code),
    state: senderClient.connection.state,
    same_socket: senderClient.connection.socket_id === socketId,
  };
});
