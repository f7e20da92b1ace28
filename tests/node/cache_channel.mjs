// Cache channels: an empty one answers pusher:cache_miss; after an event is triggered with
// the Node SDK (nobody subscribed), a new subscriber receives that event right away.
import { client, record, rest, scenario, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  const empty = pusher.subscribe('cache-empty');
  const misses = record(empty, 'pusher:cache_miss');
  await waitFor(() => misses.length, 'pusher:cache_miss');

  const res = await rest().trigger('cache-prices', 'price-updated', { p: 1 });
  const prices = pusher.subscribe('cache-prices');
  const replayed = record(prices, 'price-updated');
  const pricesMisses = record(prices, 'pusher:cache_miss');
  await waitFor(() => replayed.length, 'replayed price-updated');
  return {
    trigger_status: res.status,
    cache_miss: misses.length,
    replayed,
    prices_cache_miss: pricesMisses.length,
  };
});
