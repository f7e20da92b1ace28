// TLS: pusher-js with forceTLS reaches the server over wss://, subscribes, and receives an
// event the Node SDK triggers over https:// (the test's CA is given in NODE_EXTRA_CA_CERTS).
import { client, env, record, rest, scenario, waitFor } from './lib.mjs';

scenario(async () => {
  const pusher = client({}, { forceTLS: true, wssPort: env.port });
  const channel = pusher.subscribe('secure-news');
  let succeeded = 0;
  channel.bind('pusher:subscription_succeeded', () => succeeded++);
  await waitFor(() => succeeded, 'subscription_succeeded over wss');
  const received = record(channel, 'headline');
  const res = await rest({ useTLS: true }).trigger('secure-news', 'headline', { text: 'hi' });
  await waitFor(() => received.length, 'headline');
  return {
    state: pusher.connection.state,
    use_tls: pusher.config.useTLS,
    trigger_status: res.status,
    received,
  };
});
