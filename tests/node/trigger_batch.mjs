// Node SDK triggerBatch: 10 items are accepted and all delivered; 11 are refused whole.
import { client, rest, scenario, sleep, statusOf, subscribe, waitFor } from './lib.mjs';

const items = (count, prefix) =>
  Array.from({ length: count }, (_, i) => ({ channel: 'batched', name: `${prefix}-${i}`, data: { i } }));

scenario(async () => {
  const channel = await subscribe(client(), 'batched');
  const received = [];
  channel.bind_global((event, data) => event.startsWith('pusher') || received.push([event, data.i]));
  const sdk = rest();

  const ten = await statusOf(sdk.triggerBatch(items(10, 'ok')));
  await waitFor(() => received.length >= 10, '10 batched events').catch(() => {});
  const eleven = await statusOf(sdk.triggerBatch(items(11, 'too-many')));
  await sleep(300); // any delivery from the refused batch would arrive now
  return { status_10: ten, status_11: eleven, received };
});
