// Trigger an event on pusher-compat with the official Node SDK (`npm install pusher`).
//
//   PUSHER_APP_ID=1001 PUSHER_APP_KEY=app-key PUSHER_APP_SECRET=app-secret \
//   PUSHER_HOST=127.0.0.1 PUSHER_PORT=6001 PUSHER_SCHEME=http \
//     node trigger.mjs orders order-shipped '{"id": 17}'
//
// Arguments: channel, event name, JSON data (defaults: orders, order-shipped, {"id": 17}).
// The environment variables are the ones a Laravel .env has. Prints the HTTP status and the
// server's JSON answer, e.g. {"status":200,"body":{}}; exits 1 when the server refuses.
import Pusher from 'pusher';

const env = process.env;
const scheme = env.PUSHER_SCHEME ?? 'http';
const pusher = new Pusher({
  appId: env.PUSHER_APP_ID ?? '1001',
  key: env.PUSHER_APP_KEY ?? 'app-key',
  secret: env.PUSHER_APP_SECRET ?? 'app-secret',
  host: env.PUSHER_HOST ?? '127.0.0.1',
  port: env.PUSHER_PORT ?? '6001',
  useTLS: scheme === 'https',
});

const [channel = 'orders', event = 'order-shipped', data = '{"id": 17}'] = process.argv.slice(2);

try {
  // Resolves with the fetch Response; a non-2xx answer rejects with a RequestError.
  const response = await pusher.trigger(channel, event, JSON.parse(data));
  console.log(JSON.stringify({ status: response.status, body: await response.json() }));
} catch (error) {
  console.error(`trigger failed: ${error.status ?? ''} ${error.body ?? error.message}`.trim());
  process.exit(1);
}
