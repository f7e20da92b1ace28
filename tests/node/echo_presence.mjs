// Echo.join('room.1'): here() lists members, joining()/leaving() follow Bob in and out.
import { echo, scenario, waitFor } from './lib.mjs';

const byName = (list) => [...list].sort((a, b) => a.name.localeCompare(b.name));

scenario(async () => {
  const ann = { here: null, joining: [], leaving: [] };
  echo({ member: { user_id: '1', user_info: { name: 'Ann' } } })
    .join('room.1')
    .here((users) => { ann.here = byName(users); })
    .joining((user) => ann.joining.push(user))
    .leaving((user) => ann.leaving.push(user));
  await waitFor(() => ann.here, 'Ann here()');

  const bobEcho = echo({ member: { user_id: '2', user_info: { name: 'Bob' } } });
  let bobHere = null;
  bobEcho.join('room.1').here((users) => { bobHere = byName(users); });
  await waitFor(() => bobHere && ann.joining.length, 'Bob here() and Ann joining()');

  bobEcho.leave('room.1');
  await waitFor(() => ann.leaving.length, 'Ann leaving()');
  return { ann, bob_here: bobHere };
});
