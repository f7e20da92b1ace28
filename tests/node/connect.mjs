// pusher-js reaches `connected` and reports the server-assigned socket id.
import { client, connected, scenario } from './lib.mjs';

scenario(async () => {
  const pusher = client();
  await connected(pusher);
  return { state: pusher.connection.state, socket_id: pusher.connection.socket_id };
});
