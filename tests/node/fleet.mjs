// A fleet of pusher-js clients driven line by line from stdin, for the cluster tests.
//
// Commands (one JSON object per line):
//   {"op": "connect", "id": "a", "port": 6001, "member": {...}?, "user": {...}?}
//   {"op": "subscribe", "id": "a", "channel": "presence-room"}
//   {"op": "unsubscribe", "id": "a", "channel": "presence-room"}
//   {"op": "signin", "id": "a"}
//   {"op": "trigger", "id": "a", "channel": "private-x", "event": "client-x", "data": {...}}
//   {"op": "disconnect", "id": "a"}
// Every observation is printed as one JSON line with the client id:
//   {"id", "kind": "state", "state"}         connection state changes
//   {"id", "kind": "error", "code", "message"} pusher:error frames
//   {"id", "kind": "event", "channel", "event", "data", "members"?}
//     every channel event; presence channels add pusher-js's own member list (id -> info)
//   {"id", "kind": "signin"}                  pusher:signin_success
//   {"id", "kind": "user", "event", "data"}   events on pusher.user (send-to-user)
//   {"id", "kind": "watchlist", "event", "data"} pusher.user.watchlist: online / offline

import readline from 'node:readline';
import PusherJs from 'pusher-js';
import { authOptions, connectionOptions } from './lib.mjs';

const clients = new Map();
const say = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

function members(channel) {
  if (!channel.members) return undefined;
  const list = {};
  channel.members.each((member) => { list[member.id] = member.info ?? null; });
  return list;
}

const commands = {
  connect({ id, port, member, user }) {
    const pusher = new PusherJs(process.env.PUSHER_APP_KEY, {
      ...connectionOptions(), wsPort: port, ...authOptions({ member, user }),
    });
    clients.set(id, pusher);
    pusher.connection.bind('state_change', ({ current }) => say({ id, kind: 'state', state: current }));
    pusher.connection.bind('message', (message) => {
      if (message.event === 'pusher:error') {
        say({ id, kind: 'error', code: message.data?.code ?? null, message: message.data?.message });
      } else if (message.event === 'pusher:signin_success') {
        say({ id, kind: 'signin' });
      }
    });
    pusher.user.bind_global((event, data) => say({ id, kind: 'user', event, data }));
    pusher.user.watchlist.bind_global((event, data) => say({ id, kind: 'watchlist', event, data }));
  },
  subscribe({ id, channel: name }) {
    const channel = clients.get(id).subscribe(name);
    channel.bind_global((event, data) => {
      say({ id, kind: 'event', channel: name, event, data, members: members(channel) });
    });
  },
  unsubscribe({ id, channel }) { clients.get(id).unsubscribe(channel); },
  signin({ id }) { clients.get(id).signin(); },
  trigger({ id, channel, event, data }) { clients.get(id).channel(channel).trigger(event, data); },
  disconnect({ id }) { clients.get(id).disconnect(); },
};

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  const command = JSON.parse(line);
  try {
    commands[command.op](command);
  } catch (error) {
    say({ id: command.id, kind: 'failure', message: String(error) });
  }
});
input.on('close', () => {
  for (const pusher of clients.values()) pusher.disconnect();
  setTimeout(() => process.exit(0), 100);
});
say({ kind: 'ready' });
