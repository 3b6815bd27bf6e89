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

// Settings do not change during an instance's life (a new manifest is a new version with new
// instances), so they are read once. The JavaScript engine runs interpreted inside the component:
// cheap string scans come before any regular expression.
let config = null;
function settings() {
  if (config === null) {
    const words = listSetting('words', DEFAULT_WORDS).map((w) => w.toLowerCase());
    config = {
      words,
      events: listSetting('events', ['message']),
      maxLinks: Number(setting('max-links') ?? '3'),
    };
  }
  return config;
}


function isWordChar(c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c === '_';
}

// A scan with indexOf rather than a regular expression: the interpreter runs it several times faster.
function maskText(text) {
  const { words } = settings();
  const lower = text.toLowerCase();
  const hits = [];
  for (const w of words) {
    for (let at = lower.indexOf(w); at !== -1; at = lower.indexOf(w, at + w.length)) {
      const end = at + w.length;
      if ((at > 0 && isWordChar(lower[at - 1])) || (end < lower.length && isWordChar(lower[end]))) continue;
      hits.push([at, end]);
    }
  }
  if (hits.length === 0) return text;
  hits.sort((a, b) => a[0] - b[0]);
  let out = '';
  let copied = 0;
  for (const [at, end] of hits) {
    if (at < copied) continue;
    out += text.slice(copied, at + 1) + '*'.repeat(end - at - 1);
    copied = end;
  }
  return out + text.slice(copied);
}

function countLinks(text) {
  let count = 0;
  for (let at = text.indexOf('://'); at !== -1; at = text.indexOf('://', at + 3)) {
    const scheme = text.slice(Math.max(0, at - 5), at).toLowerCase();
    if (scheme.endsWith('http') || scheme.endsWith('https')) count++;
  }
  return count;
}

export const authorizeJoin = {
  authorizeJoin(request) {
    if (maskText(request.room) !== request.room) throw `room name "${request.room}" is not allowed`;
  },
};

export const transformEvent = {
  transformEvent(event) {
    const { events, maxLinks } = settings();
    if (!events.includes(event.body.name)) return { tag: 'pass' };
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
