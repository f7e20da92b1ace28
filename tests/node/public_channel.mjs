// Subscribe to a public channel, then receive an event triggered through the Node SDK.
import { client, record, rest, scenario, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  let succeeded = 0;
  const channel = pusher.subscribe('orders-public');
  channel.bind('pusher:subscription_succeeded', () => succeeded++);
  await waitFor(() => succeeded, 'subscription_succeeded');
  const received = record(channel, 'order-placed');
  const sent = { id: 7, items: ['tea', 'cake'], total: 12.5, note: 'ünïcødé' };
  const res = await rest().trigger('orders-public', 'order-placed', sent);
  await waitFor(() => received.length, 'order-placed');
  return { subscription_succeeded: succeeded, trigger_status: res.status, sent, received };
});
