//! Stamps broadcasts with a trusted time: every object argument of an outgoing broadcast gets a `sentAt`
//! field (milliseconds since the Unix epoch, from the gateway's clock), replacing any value a client put
//! there. Runs once per broadcast, so every recipient sees the same stamp. Setting `field` renames it.

use ioplex_guest::{Broadcast, BroadcastAction, EventBody, Plugin, host};
use serde_json::Value;

/// Sets `field` to `now` in every object argument; false when no argument is an object.
pub fn stamp(args: &mut [Value], field: &str, now: u64) -> bool {
    let mut stamped = false;
    for arg in args {
        if let Value::Object(map) = arg {
            map.insert(field.to_owned(), Value::from(now));
            stamped = true;
        }
    }
    stamped
}

struct Stamp;

impl Plugin for Stamp {
    fn transform_broadcast(broadcast: Broadcast) -> Result<BroadcastAction, String> {
        let mut args: Vec<Value> = broadcast.body.args()?;
        let field = host::setting("field").unwrap_or_else(|| "sentAt".into());
        if !stamp(&mut args, &field, host::now_ms()) {
            return Ok(BroadcastAction::Pass);
        }
        Ok(BroadcastAction::Rewrite(EventBody {
            name: broadcast.body.name,
            args_json: serde_json::to_string(&args).map_err(|e| e.to_string())?,
            attachments: broadcast.body.attachments,
        }))
    }
}

ioplex_guest::export!(Stamp: transform_broadcast);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::stamp;

    #[test]
    fn stamps_object_arguments_only_and_overrides_client_values() {
        let mut args = vec![json!({"text": "hi", "sentAt": 1}), json!("plain"), json!(3)];
        assert!(stamp(&mut args, "sentAt", 42));
        assert_eq!(
            args,
            vec![
                json!({"text": "hi", "sentAt": 42}),
                json!("plain"),
                json!(3)
            ]
        );
        assert!(!stamp(&mut [json!("x")], "sentAt", 42));
    }
}
