// Event data size limit: exactly 10 240 bytes is accepted and delivered, one more is 413.
import { client, rest, scenario, sleep, statusOf, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const channel = await subscribe(client(), 'big');
  const received = [];
  channel.bind('big-event', (data) => received.push(data.length));
  const sdk = rest();

  const atLimit = await statusOf(sdk.trigger('big', 'big-event', 'x'.repeat(10240)));
  await waitFor(() => received.length, 'the 10 240-byte event').catch(() => {});
  const overLimit = await statusOf(sdk.trigger('big', 'big-event', 'x'.repeat(10241)));
  const wayOver = await statusOf(sdk.trigger('big', 'big-event', { blob: 'y'.repeat(20000) }));
  await sleep(300);
  return { status_10240: atLimit, status_10241: overLimit, status_20k_object: wayOver, received };
});
