// resources/js/echo.js: Laravel Echo in the browser, connected to pusher-compat.
//
// Install the clients (npm install --save-dev laravel-echo pusher-js), import this file from
// resources/js/app.js (import './echo';), and set the VITE_PUSHER_* lines of .env.example.
// Vite puts those values in the bundle at build time (npm run dev / npm run build).
//
// Then, anywhere in your scripts:
//   window.Echo.channel('orders').listen('OrderShipped', (e) => console.log(e.order));
//   window.Echo.private(`App.Models.User.${userId}`).notification((n) => console.log(n));
//   window.Echo.join(`chat.${roomId}`).here((users) => ...).joining(...).leaving(...);
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

window.Pusher = Pusher;

const scheme = import.meta.env.VITE_PUSHER_SCHEME ?? 'http';

window.Echo = new Echo({
  broadcaster: 'pusher',
  key: import.meta.env.VITE_PUSHER_APP_KEY,
  cluster: import.meta.env.VITE_PUSHER_APP_CLUSTER ?? 'mt1', // required by pusher-js 8, unused
  wsHost: import.meta.env.VITE_PUSHER_HOST ?? window.location.hostname,
  wsPort: Number(import.meta.env.VITE_PUSHER_PORT ?? 80),
  wssPort: Number(import.meta.env.VITE_PUSHER_PORT ?? 443),
  forceTLS: scheme === 'https',
  // Plain WebSockets only: pusher-compat does not serve Pusher's HTTP fallback transports.
  enabledTransports: ['ws', 'wss'],
  disableStats: true,
  // Private and presence channels are signed by your Laravel app's /broadcasting/auth
  // (routes/channels.php), with the session cookie and CSRF token it already has.
  authEndpoint: '/broadcasting/auth',
});
