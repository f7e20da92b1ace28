// A message over the server's max_message_bytes (65,536 bytes): the server closes with 1009,
// and pusher-js reports that code and its reason (1006 would mean the close frame was lost).
import { client, connected, recordErrors, scenario, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  const errors = recordErrors(pusher);
  await connected(pusher);
  pusher.send_event('client-big', 'x'.repeat(65537), 'private-anything');
  await waitFor(() => errors.length > 0, 'an error from the close');
  return { error_codes: errors.map((e) => e.code), reasons: errors.map((e) => e.message) };
});
