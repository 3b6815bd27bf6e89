// ioplex plugin: masks listed words in chat messages, rejects link spam, and refuses rooms whose
// names hold a listed word.
//
// Exports the `authorize-join` and `transform-event` hooks of ioplex:plugin@0.1.0 (world moderator
// in wit/).
// Settings (plugin manifest [settings]):
//   words      comma-separated words to mask (default: a short built-in list)
//   events     comma-separated event names it applies to (default: message)
//   max-links  more links than this in one message rejects it (default: 3)
import { log, setting } from 'ioplex:plugin/host@0.1.0';

const DEFAULT_WORDS = ['darn', 'heck', 'frak'];

function listSetting(key, fallback) {
  const value = setting(key);
  if (value === undefined || value === null) return fallback;
  return value.split(',').map((w) => w.trim()).filter((w) => w.length > 0);
}

function escape(word) {
  return word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Settings do not change during an instance's life: build the pattern once.
let pattern = null;
function wordPattern() {
  if (pattern === null) {
    const words = listSetting('words', DEFAULT_WORDS);
    pattern = words.length ? new RegExp(`\\b(${words.map(escape).join('|')})\\b`, 'gi') : /$^/;
  }
  return pattern;
}

function maskText(text) {
  return text.replace(wordPattern(), (w) => w[0] + '*'.repeat(w.length - 1));
}

function countLinks(text) {
  const m = text.match(/https?:\/\/\S+/gi);
  return m ? m.length : 0;
}

export const authorizeJoin = {
  authorizeJoin(request) {
    const pattern = wordPattern();
    pattern.lastIndex = 0;
    if (pattern.test(request.room)) throw `room name "${request.room}" is not allowed`;
  },
};

export const transformEvent = {
  transformEvent(event) {
    const events = listSetting('events', ['message']);
    if (!events.includes(event.body.name)) return { tag: 'pass' };
    const maxLinks = Number(setting('max-links') ?? '3');
    const args = JSON.parse(event.body.argsJson);
    let changed = false;
    for (let i = 0; i < args.length; i++) {
      const arg = args[i];
      const holder = typeof arg === 'string' ? args : arg && typeof arg.text === 'string' ? arg : null;
      if (holder === null) continue;
      const key = holder === args ? i : 'text';
      const text = holder[key];
      if (countLinks(text) > maxLinks) {
        log('info', `rejected a message with more than ${maxLinks} links from ${event.socket.id}`);
        throw `messages may hold at most ${maxLinks} links`;
      }
      const masked = maskText(text);
      if (masked !== text) {
        holder[key] = masked;
        changed = true;
      }
    }
    if (!changed) return { tag: 'pass' };
    return {
      tag: 'rewrite',
      val: { name: event.body.name, argsJson: JSON.stringify(args), attachments: event.body.attachments },
    };
  },
};
