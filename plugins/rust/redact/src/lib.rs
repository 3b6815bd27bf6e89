//! Masks card numbers and e-mail addresses in chat text, and drops events that are too large.
//!
//! Applies to events named `message` (setting `events`, comma-separated, to change): a string argument, or
//! the `text` field of an object argument, has every card number (13–19 digits, spaces or dashes allowed,
//! Luhn-valid) replaced by `[card]` and every e-mail address by `[email]`. Events whose JSON arguments are
//! longer than `max-bytes` (default 16384) are dropped: the sender's ack gets an error.

use ioplex_guest::{ClientEvent, EventAction, EventBody, Plugin, host};
use serde_json::Value;

const DEFAULT_MAX_BYTES: usize = 16 * 1024;

/// Returns `text` with card numbers and e-mail addresses masked, or `None` when nothing matched.
pub fn redact(text: &str) -> Option<String> {
    let cards = mask_cards(text);
    let source = cards.as_deref().unwrap_or(text);
    match mask_emails(source) {
        Some(masked) => Some(masked),
        None => cards,
    }
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Card numbers: a run of digits, single spaces or dashes between them, 13–19 digits, Luhn-valid.
fn mask_cards(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = Vec::with_capacity(19);
        let mut end = i;
        let mut j = i;
        while j < bytes.len() && digits.len() < 20 {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
                end = j;
            } else if (b == b' ' || b == b'-')
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
        }
        let followed_by_word = end < bytes.len() && bytes[end].is_ascii_alphanumeric();
        if (13..=19).contains(&digits.len()) && !followed_by_word && luhn_valid(&digits) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..start]);
            o.push_str("[card]");
            copied = end;
        }
        i = end.max(start + 1);
    }
    out.map(|mut o| {
        o.push_str(&text[copied..]);
        o
    })
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// E-mail addresses: `local@domain.tld`, found from each `@`.
fn mask_emails(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while let Some(offset) = text[at..].find('@') {
        let pos = at + offset;
        let mut start = pos;
        while start > copied && is_local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = pos + 1;
        while end < bytes.len() && is_domain(bytes[end]) {
            end += 1;
        }
        // The domain must hold a dot with a label on both sides; trailing dots end a sentence.
        while end > pos + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let domain = &text[pos + 1..end];
        let valid = start < pos
            && domain
                .rfind('.')
                .is_some_and(|dot| dot > 0 && dot + 2 <= domain.len());
        if valid {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..start]);
            o.push_str("[email]");
            copied = end;
            at = end;
        } else {
            at = pos + 1;
        }
    }
    out.map(|mut o| {
        o.push_str(&text[copied..]);
        o
    })
}

/// Masks the text of one argument in place; true when it changed.
fn redact_arg(arg: &mut Value) -> bool {
    let text = match arg {
        Value::String(s) => s,
        Value::Object(map) => match map.get_mut("text") {
            Some(Value::String(s)) => s,
            _ => return false,
        },
        _ => return false,
    };
    match redact(text) {
        Some(masked) => {
            *text = masked;
            true
        }
        None => false,
    }
}

struct Redact;

impl Plugin for Redact {
    fn transform_event(event: ClientEvent) -> Result<EventAction, String> {
        let max = host::setting("max-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        if event.body.args_json.len() > max {
            return Err(format!("event is larger than {max} bytes"));
        }
        let applies = match host::setting("events") {
            Some(list) => list.split(',').any(|e| e.trim() == event.body.name),
            None => event.body.name == "message",
        };
        if !applies {
            return Ok(EventAction::Pass);
        }
        let mut args: Vec<Value> = event.body.args()?;
        let mut changed = false;
        for arg in &mut args {
            changed |= redact_arg(arg);
        }
        if !changed {
            return Ok(EventAction::Pass);
        }
        Ok(EventAction::Rewrite(EventBody {
            name: event.body.name,
            args_json: serde_json::to_string(&args).map_err(|e| e.to_string())?,
            attachments: event.body.attachments,
        }))
    }
}

ioplex_guest::export!(Redact: transform_event);

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_card_numbers_in_any_common_spelling() {
        assert_eq!(
            redact("card 4111 1111 1111 1111 ok").unwrap(),
            "card [card] ok"
        );
        assert_eq!(redact("4111-1111-1111-1111").unwrap(), "[card]");
        assert_eq!(redact("x 5500005555555559.").unwrap(), "x [card].");
    }

    #[test]
    fn leaves_numbers_that_are_not_cards() {
        assert_eq!(redact("order 4111 1111 1111 1112"), None); // Luhn fails
        assert_eq!(redact("call 555 1234"), None);
        assert_eq!(redact("id A4111111111111111"), None);
    }

    #[test]
    fn masks_email_addresses() {
        assert_eq!(
            redact("mail jo.ann+x@mail.example.com.").unwrap(),
            "mail [email]."
        );
        assert_eq!(redact("a@b.co and c@d.org").unwrap(), "[email] and [email]");
        assert_eq!(redact("@home at 5"), None);
        assert_eq!(redact("me@localhost"), None);
    }

    #[test]
    fn masks_both_in_one_text() {
        assert_eq!(
            redact("pay 4111111111111111 to bob@x.io").unwrap(),
            "pay [card] to [email]"
        );
    }
}
