// End-to-end encrypted channel: the Node SDK encrypts with the master key, pusher-js
// decrypts with the shared secret from the in-process auth handler.
import { client, record, rest, scenario, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  const channel = await subscribe(pusher, 'private-encrypted-x');
  const received = record(channel, 'secret-message');
  const sent = { text: 'for your eyes only', n: 42, nested: { ok: true } };
  const res = await rest().trigger('private-encrypted-x', 'secret-message', sent);
  await waitFor(() => received.length, 'secret-message');
  return { trigger_status: res.status, sent, received: received.map((e) => e.data) };
});
