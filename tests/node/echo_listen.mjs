// Echo.channel('orders').listen('OrderShipped') receives a Laravel-style event name.
import { echo, rest, scenario, waitFor } from './lib.mjs';

scenario(async () => {
  const Echo = echo();
  const received = [];
  let subscribed = false;
  Echo.channel('orders')
    .subscribed(() => { subscribed = true; })
    .listen('OrderShipped', (data) => received.push(data));
  await waitFor(() => subscribed, 'Echo channel subscribed');

  const sent = { order: { id: 1, status: 'shipped' } };
  const res = await rest().trigger('orders', 'App\\Events\\OrderShipped', sent);
  await waitFor(() => received.length, 'OrderShipped');
  return { trigger_status: res.status, sent, received };
});
