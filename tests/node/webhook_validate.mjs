// Validate a captured webhook with the Node `pusher` SDK's WebHook.isValid().
//
// argv[2]: path of a JSON file {headers, body} as the test receiver captured the request
// (header names lower-cased, body the raw text). The app comes from PUSHER_APP_ID,
// PUSHER_APP_KEY and PUSHER_APP_SECRET. Prints {"valid": bool, "events": [...] | null}.
import { readFileSync } from 'node:fs';
import Pusher from 'pusher';

const { headers, body } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const sdk = new Pusher({
  appId: process.env.PUSHER_APP_ID,
  key: process.env.PUSHER_APP_KEY,
  secret: process.env.PUSHER_APP_SECRET,
});
const webhook = sdk.webhook({ headers, rawBody: body });
const valid = webhook.isValid();
const events = webhook.isBodyValid() ? webhook.getEvents() : null;
process.stdout.write(JSON.stringify({ valid, events }) + '\n');
