// Plain pusher-js chat room against pusher-compat: see chat.html for how to open it and the
// server config it needs.
(function () {
  'use strict';

  const params = new URLSearchParams(window.location.search);
  const host = params.get('host') || window.location.hostname;
  const port = Number(params.get('port') || 6001);
  const key = params.get('key') || 'app-key';
  // The token comes in the fragment (#token=…), which the browser sends to no server: it stays
  // out of access logs and Referer headers.
  const token = new URLSearchParams(window.location.hash.slice(1)).get('token') || '';
  const room = params.get('room') || 'lobby';
  const name = params.get('name') || 'guest';
  const tls = params.get('tls') === '1';
  const httpBase = `${tls ? 'https' : 'http'}://${host}:${port}`;

  const $ = (id) => document.getElementById(id);
  $('room').textContent = room;

  /** Append a message; `kind` is "mine", "theirs" or "server". */
  function show(kind, from, text) {
    const li = document.createElement('li');
    li.className = kind;
    li.textContent = `${from}: ${text}`;
    $('messages').appendChild(li);
  }

  // pusher-js pointed at pusher-compat: plain WebSockets to host:port (cluster is required
  // by pusher-js 8 but unused once wsHost is set); private channels are authorized by the
  // server's /broadcasting/auth with the JWT as a Bearer token.
  const pusher = new window.Pusher(key, {
    cluster: 'mt1',
    wsHost: host,
    wsPort: port,
    wssPort: port,
    forceTLS: tls,
    enabledTransports: ['ws', 'wss'],
    disableStats: true,
    channelAuthorization: {
      endpoint: `${httpBase}/broadcasting/auth`,
      transport: 'ajax',
      headers: { Authorization: `Bearer ${token}` },
    },
  });
  window.pusher = pusher; // handy in the devtools console

  pusher.connection.bind('state_change', ({ current }) => {
    $('status').textContent = current;
    $('status').dataset.state = current;
  });

  const channel = pusher.subscribe(`private-chat.${room}`);

  channel.bind('pusher:subscription_succeeded', () => {
    $('error').textContent = '';
    $('send').disabled = false;
  });
  // 401: no or bad token; 403: no [[auth.rules]] admits you to this room.
  channel.bind('pusher:subscription_error', (error) => {
    $('error').textContent = `Could not join ${room}: ${error.status ?? ''} ${error.error ?? ''}`.trim();
  });
  // From the other browsers (client events are never echoed to their sender)...
  channel.bind('client-message', (data) => show('theirs', data.name, data.text));
  // ...and from your backend, through the HTTP API (any Pusher SDK).
  channel.bind('message', (data) => show('server', data.name || 'server', data.text));

  $('send-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    // trigger() returns false when the event could not be sent (not connected).
    if (channel.trigger('client-message', { name, text })) {
      show('mine', 'You', text);
      $('text').value = '';
    }
  });
})();
