// Echo.connector.signin() (pusher.signin()) with a token the server refuses (JWT_USER):
// POST /broadcasting/user-auth answers 401, pusher-js emits pusher:signin_error on
// pusher.user and never sends pusher:signin; the connection stays up.
import { scenario, sleep, waitFor } from './lib.mjs';
import { authEcho, disconnectAll, token } from './auth_lib.mjs';

scenario(async () => {
  const Echo = authEcho(token('user'));
  const pusher = Echo.connector.pusher;
  const errors = [];
  let signinSuccess = 0;
  pusher.user.bind('pusher:signin_error', (err) => errors.push({ type: err.type, status: err.status ?? null }));
  pusher.connection.bind('message', (msg) => { if (msg.event === 'pusher:signin_success') signinSuccess++; });
  Echo.connector.signin();
  await waitFor(() => errors.length, 'pusher:signin_error');
  await sleep(300);
  const result = {
    errors,
    signin_success: signinSuccess,
    user_data: pusher.user.user_data,
    state: pusher.connection.state,
  };
  disconnectAll();
  return result;
});
