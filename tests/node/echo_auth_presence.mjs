// Echo.join('chat.lobby') for Ann then Bob (JWT_ANN, JWT_BOB), authorized by
// POST /broadcasting/auth: here()/joining()/leaving() carry the user_info the server copied
// from the token claims. Ann also tries Echo.join('orders.7'), which no presence rule admits.
import { members, scenario, waitFor } from './lib.mjs';
import { authEcho, disconnectAll, token } from './auth_lib.mjs';

const ROOM = 'chat.lobby';
const byName = (list) => [...list].sort((a, b) => String(a.name).localeCompare(String(b.name)));

scenario(async () => {
  const annEcho = authEcho(token('ann'));
  const ann = { here: null, joining: [], leaving: [], denied: null };
  annEcho.join(ROOM)
    .here((users) => { ann.here = byName(users); })
    .joining((user) => ann.joining.push(user))
    .leaving((user) => ann.leaving.push(user));
  annEcho.join('orders.7').error((err) => { ann.denied = { type: err.type, status: err.status ?? null }; });
  await waitFor(() => ann.here && ann.denied, 'Ann here() and the refused join');

  const bobEcho = authEcho(token('bob'));
  let bobHere = null;
  bobEcho.join(ROOM).here((users) => { bobHere = byName(users); });
  await waitFor(() => bobHere && ann.joining.length, 'Bob here() and Ann joining()');
  const presence = annEcho.connector.pusher.channel(`presence-${ROOM}`);
  const annView = { me: presence.members.me, members: members(presence) };

  bobEcho.leave(ROOM);
  await waitFor(() => ann.leaving.length, 'Ann leaving()');
  const afterLeave = members(presence);
  disconnectAll();
  return { ann, bob_here: bobHere, ann_view: annView, ann_members_after_leave: afterLeave };
});
