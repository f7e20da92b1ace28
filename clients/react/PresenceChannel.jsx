// React: a presence chat room with Laravel Echo on pusher-compat.
//
// Copy into resources/js/components/ (or your app's components), with Echo set up as in
// clients/laravel/resources/js/echo.js (window.Echo), React 18+:
//
//   <PresenceChannel room="lobby" me={{ id: user.id, name: user.name }} />
//
// Laravel side: routes/channels.php admits the user and returns what the others see
//   Broadcast::channel('chat.{room}', fn ($user, $room) => ['id' => $user->id, 'name' => $user->name]);
// and an event class MessageSent (ShouldBroadcast, broadcastOn(): new PresenceChannel("chat.$room"))
// carries public $message = ['id' => ..., 'user' => ..., 'text' => ...].
// Typing indicators are whispers (client events): they go browser to browser via the server.
import { useEffect, useRef, useState } from 'react';

export default function PresenceChannel({ room, me, echo = window.Echo }) {
  const [members, setMembers] = useState([]);
  const [messages, setMessages] = useState([]);
  const [typing, setTyping] = useState(null);
  const [error, setError] = useState(null);
  const channelRef = useRef(null);
  const typingTimer = useRef(null);

  useEffect(() => {
    const name = `chat.${room}`;
    const channel = echo
      .join(name) // presence-chat.{room}
      .here((users) => setMembers(users))
      .joining((user) => setMembers((list) => [...list.filter((u) => u.id !== user.id), user]))
      .leaving((user) => setMembers((list) => list.filter((u) => u.id !== user.id)))
      .error((err) => setError(`Could not join: ${err.status ?? ''} ${err.error ?? ''}`))
      .listen('MessageSent', (event) => setMessages((list) => [...list, event.message]))
      .listenForWhisper('typing', (event) => {
        setTyping(event.name);
        clearTimeout(typingTimer.current);
        typingTimer.current = setTimeout(() => setTyping(null), 2000);
      });
    channelRef.current = channel;
    return () => {
      clearTimeout(typingTimer.current);
      echo.leave(name); // unsubscribes: the others get `leaving`
    };
  }, [echo, room]);

  // Call from the input's onChange: tells the others you are typing (never echoed to you).
  const whisperTyping = () => channelRef.current?.whisper('typing', { name: me.name });

  return (
    <div className="presence-channel">
      {error && <p role="alert">{error}</p>}
      <aside>
        <h3>Online ({members.length})</h3>
        <ul>
          {members.map((user) => (
            <li key={user.id}>{user.name}</li>
          ))}
        </ul>
      </aside>
      <section>
        {messages.map((msg) => (
          <div key={msg.id}>
            <strong>{msg.user}:</strong> {msg.text}
          </div>
        ))}
        {typing && <em>{typing} is typing…</em>}
        <input onChange={whisperTyping} placeholder="Message…" aria-label="Message" />
      </section>
    </div>
  );
}
