// Node SDK trigger with {socket_id}: that socket is skipped, others still receive.
import { client, rest, scenario, sleep, subscribe, waitFor } from './lib.mjs';

function names(channel) {
  const seen = [];
  channel.bind_global((event) => event.startsWith('pusher') || seen.push(event));
  return seen;
}

scenario(async () => {
  const excludedClient = client();
  const excluded = names(await subscribe(excludedClient, 'news'));
  const other = names(await subscribe(client(), 'news'));
  const sdk = rest();

  const socketId = excludedClient.connection.socket_id;
  await sdk.trigger('news', 'not-for-sender', { n: 1 }, { socket_id: socketId });
  await sdk.trigger('news', 'for-everyone', { n: 2 });
  await waitFor(() => other.length === 2 && excluded.length >= 1, 'both events');
  await sleep(200);
  return { excluded_received: excluded, other_received: other };
});
