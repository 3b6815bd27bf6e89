// What the example plugins room-auth, redact and stamp do, written the way a Node socket.io app would
// (middleware and handler code), so the plugins scenario compares like with like.
import { createHmac, timingSafeEqual } from "node:crypto";

/** Verifies an HS256 JWT and its expiry; returns the claims or throws with the reason. */
export function verify(token, secret) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) throw new Error("token is not a JWT (expected header.payload.signature)");
  const header = JSON.parse(Buffer.from(parts[0], "base64url"));
  if (header.alg !== "HS256") throw new Error(`token algorithm ${header.alg} is not accepted (HS256 only)`);
  const expected = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new Error("token signature does not match");
  }
  const claims = JSON.parse(Buffer.from(parts[1], "base64url"));
  if (claims.exp !== undefined && claims.exp <= Date.now() / 1000) throw new Error("token has expired");
  return claims;
}

/** May a socket holding `claims` join `room`? (company:, conversation:, user: rooms only) */
export function mayJoin(claims, room) {
  const colon = room.indexOf(":");
  const [kind, id] = colon < 0 ? [room, undefined] : [room.slice(0, colon), room.slice(colon + 1)];
  if (kind === "company") return id === claims.company;
  if (kind === "conversation") return claims.conversations?.includes(id) ?? false;
  if (kind === "user") return id === claims.sub;
  return false;
}

const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]*[A-Za-z0-9-]\.[A-Za-z0-9-]{2,}/g;
const CARD = /(?<![A-Za-z0-9])\d(?:[ -]?\d){12,18}(?![A-Za-z0-9])/g;

function luhn(number) {
  const digits = number.replace(/\D/g, "");
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

/** Masks card numbers (Luhn-valid) and e-mail addresses. */
export function redact(text) {
  return text.replace(CARD, (m) => (luhn(m) ? "[card]" : m)).replace(EMAIL, "[email]");
}

/** Redacts a string argument or an object's `text`, like the redact plugin (16 KiB max). */
export function redactArgs(args) {
  return args.map((arg) => {
    if (typeof arg === "string" && arg.length <= 16384) return redact(arg);
    if (arg && typeof arg === "object" && typeof arg.text === "string" && arg.text.length <= 16384) {
      return { ...arg, text: redact(arg.text) };
    }
    return arg;
  });
}

/** Stamps object arguments with the server's time, like the stamp plugin. */
export function stampArgs(args) {
  const now = Date.now();
  return args.map((arg) => (arg && typeof arg === "object" && !Array.isArray(arg) ? { ...arg, sentAt: now } : arg));
}
