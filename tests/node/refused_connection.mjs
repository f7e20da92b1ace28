// A connection the server refuses (bad or disabled app key, taken from PUSHER_APP_KEY):
// record the state changes and error codes, then wait to see whether pusher-js retries.
import { client, recordErrors, scenario, sleep, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  const states = [pusher.connection.state];
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  const errors = recordErrors(pusher);
  await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
  await sleep(1500); // a reconnect would happen after 0-1 s (pusher-js retries 4100-4199 after 1 s)
  return {
    states,
    error_codes: errors.map((e) => e.code),
    socket_id: pusher.connection.socket_id ?? null,
  };
});
