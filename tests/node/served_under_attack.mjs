// Connect, subscribe to a public channel and receive an event triggered through the signed HTTP
// API, timed from the start: run while the server is flooded with half-sent request heads.
import { client, record, rest, scenario, subscribe, waitFor } from './lib.mjs';

scenario(async () => {
  const started = Date.now();
  const channel = await subscribe(client(), 'under-attack');
  const received = record(channel, 'still-served');
  const res = await rest().trigger('under-attack', 'still-served', { ok: true });
  await waitFor(() => received.length, 'still-served');
  return { elapsed_ms: Date.now() - started, trigger_status: res.status, received };
});
