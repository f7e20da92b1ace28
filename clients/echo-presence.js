// Laravel Echo presence room against pusher-compat: see echo-presence.html for how to open it.
//
// Everything the page needs comes from the query string (the token from the fragment); in a
// real app the token would come from your login session and the rest from your build-time
// config.
(function () {
  'use strict';

  const params = new URLSearchParams(window.location.search);
  const host = params.get('host') || window.location.hostname;
  const port = Number(params.get('port') || 6001);
  const key = params.get('key') || 'app-key';
  // The token comes in the fragment (#token=…), which the browser sends to no server: it stays
  // out of access logs and Referer headers.
  const token = new URLSearchParams(window.location.hash.slice(1)).get('token') || '';
  const room = params.get('room') || 'chat.lobby';
  const tls = params.get('tls') === '1';
  // With several [[apps]] in the server config, the auth endpoints need to be told which
  // one signs: ?app=<app id or key>.
  const app = params.get('app');
  const httpBase = `${tls ? 'https' : 'http'}://${host}:${port}`;
  const appQuery = app ? `?app=${encodeURIComponent(app)}` : '';

  const $ = (id) => document.getElementById(id);
  $('room').textContent = room;

  /** Append one <li> with `text` to the list `id`. */
  function addItem(id, text) {
    const li = document.createElement('li');
    li.textContent = text;
    $(id).appendChild(li);
  }

  function showError(text) {
    $('error').textContent = text;
  }

  // -- Echo ---------------------------------------------------------------------------------
  //
  // broadcaster 'pusher' passes every option to `new Pusher(key, options)`:
  //  * wsHost/wsPort/forceTLS/enabledTransports point pusher-js at our server over plain
  //    WebSockets (no fallback to Pusher's HTTP transports); cluster is required by pusher-js
  //    8 but unused once wsHost is set.
  //  * authEndpoint + auth.headers: pusher-js POSTs socket_id and channel_name there for
  //    private-, presence- and private-encrypted- channels (our /broadcasting/auth).
  //  * userAuthentication: the same for pusher.signin() (our /broadcasting/user-auth).
  const bearer = { Authorization: `Bearer ${token}` };
  const echo = new window.Echo.default({
    broadcaster: 'pusher',
    key,
    cluster: 'mt1',
    wsHost: host,
    wsPort: port,
    wssPort: port,
    forceTLS: tls,
    enabledTransports: ['ws', 'wss'],
    disableStats: true,
    authEndpoint: `${httpBase}/broadcasting/auth${appQuery}`,
    auth: { headers: bearer },
    userAuthentication: { endpoint: `${httpBase}/broadcasting/user-auth${appQuery}`, headers: bearer },
  });
  window.echo = echo; // handy in the devtools console

  // Connection state, shown at the top (initialized, connecting, connected, unavailable...).
  const connection = echo.connector.pusher.connection;
  connection.bind('state_change', ({ current }) => {
    $('status').textContent = current;
    $('status').dataset.state = current;
  });

  // -- The presence channel -----------------------------------------------------------------

  const channel = echo.join(room);

  // Echo's here/joining/leaving hand over user_info only; the pusher-js channel underneath
  // (channel.subscription) keeps the full member list with ids, which is what we render.
  function renderMembers() {
    const list = [];
    channel.subscription.members.each((member) => list.push(member));
    list.sort((a, b) => displayName(a).localeCompare(displayName(b)));
    $('members').replaceChildren(...list.map((member) => {
      const li = document.createElement('li');
      li.textContent = displayName(member);
      li.dataset.userId = member.id;
      return li;
    }));
  }

  function displayName(member) {
    return (member.info && member.info.name) || String(member.id);
  }

  channel
    // Whispering needs the subscription: keep the button disabled until then.
    .subscribed(() => { $('whisper-send').disabled = false; })
    .here(renderMembers)
    .joining(renderMembers)
    .leaving(renderMembers)
    // 401: no or bad token; 403: no [[auth.rules]] admits this user to the channel.
    .error((error) => showError(`Could not join ${room}: ${error.status ?? ''} ${error.error ?? ''}`.trim()))
    // Every server event on the channel. Laravel events arrive as App\Events\Name and are
    // shown as "Name"; events triggered under another name are shown with a leading dot.
    .listenToAll((event, data) => {
      if (event.startsWith('.client-')) return; // whispers are handled below
      addItem('events', `${event} ${JSON.stringify(data)}`);
    })
    // Whispers are client events (client-message) sent straight from another browser; the
    // server relays them to the other members, never back to the sender.
    .listenForWhisper('message', (data) => addItem('whispers', `${data.name}: ${data.text}`));

  $('whisper-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('whisper-text').value.trim();
    if (!text) return;
    const me = channel.subscription.members.me;
    channel.whisper('message', { name: me ? displayName(me) : 'someone', text });
    addItem('whispers', `You: ${text}`);
    $('whisper-text').value = '';
  });
})();
