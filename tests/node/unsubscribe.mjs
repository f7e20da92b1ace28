// A channel the only subscriber leaves disappears from GET /channels.
// Argument: `unsubscribe` (pusher.unsubscribe) or `disconnect` (close the socket).
import { client, occupiedChannels, rest, scenario, subscribe, waitFor } from './lib.mjs';

const how = process.argv[2] ?? 'unsubscribe';

scenario(async () => {
  const sdk = rest();
  const stays = client();
  await subscribe(stays, 'stays-here');
  const leaves = client();
  await subscribe(leaves, 'leaves-soon');
  const before = await occupiedChannels(sdk);

  if (how === 'disconnect') leaves.disconnect();
  else leaves.unsubscribe('leaves-soon');

  let after;
  await waitFor(async () => {
    after = await occupiedChannels(sdk);
    return !after.includes('leaves-soon');
  }, 'leaves-soon to vacate', 3000).catch(() => {});
  return { how, before, after };
});
