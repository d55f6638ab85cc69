//! The user an event carries, in Amplitude's user format, for destinations whose "Send users"
//! toggle is on.
//!
//! Written as one JSON object with these keys, in this order, each copied as-is from the event
//! (strings, numbers and objects re-serialized by simd-json, never interpreted):
//!
//! | key               | from the event                                   | when              |
//! |-------------------|--------------------------------------------------|-------------------|
//! | `user_id`         | `user_id`                                        | present, non-null |
//! | `device_id`       | `device_id`                                      | present, non-null |
//! | `user_properties` | `user_properties` (`{}` when absent or null)     | always            |
//! | `time`            | `event_time`, else `time`                        | either present    |
//! | `event_time`      | `event_time`                                     | present           |
//!
//! `event_time` is repeated because Amplitude's own users template reads `input.event_time`.
//! Nothing is de-duplicated: every event with a user yields one user delivery. Identify messages
//! are forwarded as they are.

use crate::template::Input;
use simd_json::prelude::*;

/// Writes the user carried by `event` into `out` (appending). The caller checked that the event
/// has a `user_id` or `device_id` ([`crate::route::event_has_user`]).
pub fn write_user(event: Input<'_, '_>, out: &mut Vec<u8>) {
    let non_null = |k: &str| event.get(k).filter(|v| !v.is_null());
    let mut first = true;
    key(out, &mut first, "user_id", non_null("user_id"));
    key(out, &mut first, "device_id", non_null("device_id"));
    match non_null("user_properties") {
        Some(p) => key(out, &mut first, "user_properties", Some(p)),
        None => {
            open_key(out, &mut first, "user_properties");
            out.extend_from_slice(b"{}");
        }
    }
    let time = non_null("event_time").or_else(|| non_null("time"));
    key(out, &mut first, "time", time);
    key(out, &mut first, "event_time", non_null("event_time"));
    if first {
        out.push(b'{');
    }
    out.push(b'}');
}

fn open_key(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    out.push(if *first { b'{' } else { b',' });
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn key(out: &mut Vec<u8>, first: &mut bool, name: &str, value: Option<Input<'_, '_>>) {
    if let Some(v) = value {
        open_key(out, first, name);
        // Writing into a Vec cannot fail.
        let _ = v.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::write_user;

    fn user(json: &str) -> serde_json::Value {
        let mut b = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut b).unwrap();
        let mut out = Vec::new();
        write_user(tape.as_value(), &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn copies_the_user_fields_in_order() {
        let u = user(
            r#"{"event_type":"click","user_id":"u1","device_id":"d1","event_time":"2022-02-28 20:07:01.795",
                "user_properties":{"email":"a@b.c","n":[1,2.5,{"x":null}]},"event_properties":{"p":1}}"#,
        );
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"user_id":"u1","device_id":"d1","user_properties":{"email":"a@b.c","n":[1,2.5,{"x":null}]},"time":"2022-02-28 20:07:01.795","event_time":"2022-02-28 20:07:01.795"}"#
        );
    }

    #[test]
    fn missing_fields_are_omitted_and_properties_default_to_empty() {
        let u = user(r#"{"event_type":"x","device_id":"d","user_id":null,"time":1646107621000}"#);
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"device_id":"d","user_properties":{},"time":1646107621000}"#
        );
        let u = user(r#"{"event_type":"x","user_id":"u\"q"}"#);
        assert_eq!(u["user_id"], "u\"q", "strings are re-escaped");
    }
}
