// A private channel with a valid signature and one with a tampered signature,
// on the same connection.
import { client, connected, record, recordErrors, rest, scenario, sleep, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client({ tamperChannels: ['private-tampered'] });
  await connected(pusher);
  const socketId = pusher.connection.socket_id;
  const errors = recordErrors(pusher);

  const good = await subscribe(pusher, 'private-valid');
  const bad = pusher.subscribe('private-tampered');
  const badErrors = record(bad, 'pusher:subscription_error');
  let badSucceeded = false;
  bad.bind('pusher:subscription_succeeded', () => { badSucceeded = true; });
  await waitFor(() => badErrors.length, 'pusher:subscription_error');

  // The connection must still work: an event on the valid channel arrives.
  const received = record(good, 'after-error');
  const badReceived = record(bad, 'after-error');
  await rest().trigger(['private-tampered', 'private-valid'], 'after-error', { ok: true });
  await waitFor(() => received.length, 'event after the failed subscription');
  await sleep(200);

  return {
    valid_subscribed: good.subscribed,
    tampered_subscribed: bad.subscribed || badSucceeded,
    tampered_errors: badErrors.map((e) => e.data),
    connection_errors: errors,
    received: received.map((e) => e.data),
    tampered_received: badReceived.length,
    state: pusher.connection.state,
    same_socket: pusher.connection.socket_id === socketId,
  };
});
