// Presence with two users on three sockets: user 2 watches while user 1 opens two tabs,
// then closes them one at a time.
import { client, members, recordMembership, scenario, sleep, subscribe, waitFor } from './lib.mjs';

const CHANNEL = 'presence-room';
const ANN = { user_id: '1', user_info: { name: 'Ann' } };
const BOB = { user_id: '2', user_info: { name: 'Bob' } };

scenario(async () => {
  const bob = await subscribe(client({ member: BOB }), CHANNEL);
  const bobSees = recordMembership(bob);
  const bobOnJoin = { count: bob.members.count, me: bob.members.me, members: members(bob) };

  const annTab1 = client({ member: ANN });
  const ann1 = await subscribe(annTab1, CHANNEL);
  const ann1Sees = recordMembership(ann1);
  await waitFor(() => bobSees.length, 'member_added for Ann');

  const annTab2 = client({ member: ANN });
  const ann2 = await subscribe(annTab2, CHANNEL);
  const ann2OnJoin = { count: ann2.members.count, me: ann2.members.me, members: members(ann2) };
  await sleep(300); // a duplicate member_added would arrive now
  const bobAfterJoins = { events: [...bobSees], count: bob.members.count };

  annTab1.disconnect();
  await sleep(500); // a premature member_removed would arrive now
  const bobAfterFirstClose = { events: [...bobSees], count: bob.members.count };

  annTab2.disconnect();
  await waitFor(() => bobSees.length > bobAfterFirstClose.events.length, 'member_removed for Ann');
  await sleep(300); // a duplicate member_removed would arrive now

  return {
    bob_on_join: bobOnJoin,
    ann_tab2_on_join: ann2OnJoin,
    ann_tab1_events: ann1Sees,
    bob_after_joins: bobAfterJoins,
    bob_after_first_close: bobAfterFirstClose,
    bob_final: { events: bobSees, count: bob.members.count, members: members(bob) },
  };
});
