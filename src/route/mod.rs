//! Routing: what a decoded message is (an event or an identify update, checked against what its
//! topic requires), and which destinations get which payloads of it.
//!
//! - An events-topic message must be a JSON object with a non-empty string `event_type`. Each
//!   destination whose "Send events" toggle is on gets it when the type is in its `event_types`
//!   (or the list is empty) and its filter expression evaluates to true; the kind is
//!   `experiments.exposure` for `$exposure` events, `events.track` otherwise. Each destination
//!   whose "Send users" toggle is on also gets the user the event carries (`events.identify`),
//!   when the event has a `user_id` or `device_id`.
//! - An identify-topic message must be a JSON object with a non-empty string `user_id` or
//!   `device_id`; every destination with "Send users" on gets it (`events.identify`).
//!
//! A filter that fails to evaluate (a missing field, a non-boolean result) does not match; it is
//! counted per destination (`hookpipe_filter_errors_total`).

use crate::config::Destination;
use crate::deliver::Kind;
use crate::telemetry::DestinationMetrics;
use crate::template::{Input, RenderState};
use simd_json::prelude::*;

/// What an input topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Amplitude export-format events.
    Events,
    /// Identify (user) updates.
    Identify,
    /// Computed cohort change chunks: batched by [`crate::cohort`], not routed here.
    CohortChanges,
    /// Per-user cohort membership events: aggregated into windows by [`crate::cohort`], not
    /// routed here.
    CohortMemberships,
}

/// Which payload of a message a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// The event itself (as-is or through the events template).
    Event,
    /// A user: the identify message, or the user an event carries (as-is or through the users
    /// template).
    User,
}

impl Payload {
    /// A stable name, part of the delivery id and of dead-letter records.
    pub fn as_str(self) -> &'static str {
        match self {
            Payload::Event => "event",
            Payload::User => "user",
        }
    }
}

/// One delivery to make: destination index (in the config's enabled destinations), payload
/// and the kind header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index into the enabled destinations.
    pub destination: usize,
    /// Which payload.
    pub payload: Payload,
    /// What the request carries (the `x-hookpipe-type` header).
    pub kind: Kind,
}

/// Why a message cannot be routed; it goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not valid JSON.
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// An event without a non-empty string `event_type`.
    #[error("event without a non-empty string event_type")]
    MissingEventType,
    /// An identify update without a non-empty string `user_id` or `device_id`.
    #[error("identify update without a non-empty string user_id or device_id")]
    MissingUser,
}

impl Malformed {
    /// A short fixed reason, for metrics and the dead-letter `hookpipe.reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::InvalidJson(_) => "invalid_json",
            Malformed::NotAnObject => "not_an_object",
            Malformed::MissingEventType => "missing_event_type",
            Malformed::MissingUser => "missing_user",
        }
    }
}

fn non_empty_str<'i>(v: &Input<'_, 'i>, key: &str) -> Option<&'i str> {
    v.get(key)
        .and_then(|x| x.into_string())
        .filter(|s| !s.is_empty())
}

/// Whether a decoded event carries a user (a non-null `user_id` or `device_id`).
pub fn event_has_user(event: &Input<'_, '_>) -> bool {
    ["user_id", "device_id"]
        .iter()
        .any(|k| event.get(*k).is_some_and(|v| !v.is_null()))
}

/// Checks `message` against what its topic requires and appends the deliveries it causes to
/// `routes` (cleared first). `metrics[i]` belongs to `destinations[i]`.
pub fn plan(
    kind: TopicKind,
    message: Input<'_, '_>,
    destinations: &[std::sync::Arc<Destination>],
    metrics: &[DestinationMetrics],
    state: &mut RenderState,
    routes: &mut Vec<Route>,
) -> Result<(), Malformed> {
    routes.clear();
    if !message.is_object() {
        return Err(Malformed::NotAnObject);
    }
    match kind {
        TopicKind::Events => {
            let event_type =
                non_empty_str(&message, "event_type").ok_or(Malformed::MissingEventType)?;
            let event_kind = if event_type == "$exposure" {
                Kind::Exposure
            } else {
                Kind::Track
            };
            let has_user = event_has_user(&message);
            for (i, d) in destinations.iter().enumerate() {
                if let Some(events) = &d.events {
                    let pass = events.accepts_type(event_type)
                        && match &events.filter {
                            None => true,
                            Some(f) => match f.eval(state, message) {
                                Ok(b) => b,
                                Err(e) => {
                                    metrics[i].filter_error(&e);
                                    false
                                }
                            },
                        };
                    if pass {
                        routes.push(Route {
                            destination: i,
                            payload: Payload::Event,
                            kind: event_kind,
                        });
                    }
                }
                if d.users.is_some() && has_user {
                    routes.push(Route {
                        destination: i,
                        payload: Payload::User,
                        kind: Kind::Identify,
                    });
                }
            }
        }
        TopicKind::Identify => {
            if non_empty_str(&message, "user_id").is_none()
                && non_empty_str(&message, "device_id").is_none()
            {
                return Err(Malformed::MissingUser);
            }
            for (i, d) in destinations.iter().enumerate() {
                if d.users.is_some() {
                    routes.push(Route {
                        destination: i,
                        payload: Payload::User,
                        kind: Kind::Identify,
                    });
                }
            }
        }
        // The worker hands cohort input to the cohort stage before planning; nothing to route.
        TopicKind::CohortChanges | TopicKind::CohortMemberships => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Config};
    use crate::telemetry::Telemetry;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[topics]
events = ["ev"]
identify = ["id"]
dead_letter = "dlq"
[[destinations]]
name = "all"
url = "http://127.0.0.1:1/"
[destinations.events]
[[destinations]]
name = "purchases"
url = "http://127.0.0.1:1/"
[destinations.events]
event_types = ["purchase", "$exposure"]
[destinations.users]
[[destinations]]
name = "users-only"
url = "http://127.0.0.1:1/"
[destinations.users]
"#;
        load_str(text, Path::new("."), &|_| None).unwrap()
    }

    fn routes(kind: TopicKind, json: &str) -> Result<Vec<(String, Payload, Kind)>, Malformed> {
        let c = config();
        let t = Telemetry::new();
        let metrics: Vec<_> = c
            .destinations
            .iter()
            .map(|d| t.destination(&d.name))
            .collect();
        let mut bytes = json.as_bytes().to_vec();
        let tape =
            simd_json::to_tape(&mut bytes).map_err(|e| Malformed::InvalidJson(e.to_string()))?;
        let mut out = Vec::new();
        plan(
            kind,
            tape.as_value(),
            &c.destinations,
            &metrics,
            &mut RenderState::default(),
            &mut out,
        )?;
        Ok(out
            .into_iter()
            .map(|r| {
                (
                    c.destinations[r.destination].name.clone(),
                    r.payload,
                    r.kind,
                )
            })
            .collect())
    }

    #[test]
    fn events_go_by_type_and_carry_their_user() {
        let r = routes(TopicKind::Events, r#"{"event_type":"click","user_id":"u"}"#).unwrap();
        assert_eq!(
            r,
            vec![
                ("all".into(), Payload::Event, Kind::Track),
                ("purchases".into(), Payload::User, Kind::Identify),
                ("users-only".into(), Payload::User, Kind::Identify),
            ]
        );
        let r = routes(
            TopicKind::Events,
            r#"{"event_type":"purchase","device_id":"d"}"#,
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert!(r.contains(&("purchases".into(), Payload::Event, Kind::Track)));
    }

    #[test]
    fn exposure_events_have_their_own_kind() {
        let r = routes(TopicKind::Events, r#"{"event_type":"$exposure"}"#).unwrap();
        assert_eq!(
            r,
            vec![
                ("all".into(), Payload::Event, Kind::Exposure),
                ("purchases".into(), Payload::Event, Kind::Exposure),
            ],
            "no user deliveries without user_id or device_id"
        );
    }

    #[test]
    fn identify_goes_to_users_toggles_only() {
        let r = routes(
            TopicKind::Identify,
            r#"{"user_id":"u","user_properties":{}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                ("purchases".into(), Payload::User, Kind::Identify),
                ("users-only".into(), Payload::User, Kind::Identify),
            ]
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        assert_eq!(
            routes(TopicKind::Events, "[1]"),
            Err(Malformed::NotAnObject)
        );
        assert_eq!(
            routes(TopicKind::Events, r#"{"user_id":"u"}"#),
            Err(Malformed::MissingEventType)
        );
        assert_eq!(
            routes(TopicKind::Events, r#"{"event_type":""}"#),
            Err(Malformed::MissingEventType)
        );
        assert_eq!(
            routes(TopicKind::Events, r#"{"event_type":7}"#),
            Err(Malformed::MissingEventType)
        );
        assert_eq!(
            routes(TopicKind::Identify, r#"{"user_id":""}"#),
            Err(Malformed::MissingUser)
        );
        assert!(matches!(
            routes(TopicKind::Events, "{nope"),
            Err(Malformed::InvalidJson(_))
        ));
    }
}
