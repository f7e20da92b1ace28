// Echo.private('chat.1'): a whisper from one Echo reaches listenForWhisper on the other.
import { echo, scenario, sleep, waitFor } from './lib.mjs';

function join(Echo) {
  const state = { subscribed: false, whispers: [] };
  Echo.private('chat.1')
    .subscribed(() => { state.subscribed = true; })
    .listenForWhisper('typing', (data) => state.whispers.push(data));
  return state;
}

scenario(async () => {
  const senderEcho = echo();
  const sender = join(senderEcho);
  const listener = join(echo());
  await waitFor(() => sender.subscribed && listener.subscribed, 'both Echos subscribed');

  const sent = { name: 'Ann', typing: true };
  senderEcho.private('chat.1').whisper('typing', sent);
  await waitFor(() => listener.whispers.length, 'whisper');
  await sleep(300); // an echo back to the sender would arrive now
  return { sent, listener_whispers: listener.whispers, sender_whispers: sender.whispers };
});
