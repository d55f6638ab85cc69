//! The two cohort input formats, decoded and validated: [`Chunk`] (a piece of a computed cohort
//! change) and [`Membership`] (one user entering or leaving a cohort). `docs/cohorts.md` is the
//! specification; every rule enforced here is stated there. Unknown fields are ignored, so
//! producers can add fields without breaking hookpipe.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::minify;

/// Why a cohort input message was rejected. The message names the field and what is wrong, so it
/// can go to the dead-letter topic as the reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a field missing or of the wrong type.
    #[error("{what}: {source}")]
    Json {
        /// Which format was expected (`cohort change chunk`, `cohort membership event`).
        what: &'static str,
        /// serde_json's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A field is present and well typed but its value breaks a rule of the format.
    #[error("{what}: `{field}`: {problem}")]
    Invalid {
        /// Which format was expected.
        what: &'static str,
        /// The field, with its index inside lists (`entered[17].user_id`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

const CHUNK: &str = "cohort change chunk";
const MEMBERSHIP: &str = "cohort membership event";

#[cold]
fn invalid(
    what: &'static str,
    field: impl Into<String>,
    problem: impl Into<String>,
) -> DecodeError {
    DecodeError::Invalid {
        what,
        field: field.into(),
        problem: problem.into(),
    }
}

/// One user of a change: the Amplitude `user_id` and, when the cohort sync selected some, the
/// user's properties.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    /// The Amplitude user id (never empty).
    pub user_id: String,
    /// A JSON object, minified, numbers and strings exactly as the input wrote them; `None` when
    /// the input had no properties (absent or `null`).
    pub user_properties: Option<Box<str>>,
}

impl User {
    /// A user without properties.
    pub fn new(user_id: impl Into<String>) -> User {
        User {
            user_id: user_id.into(),
            user_properties: None,
        }
    }

    /// A user with properties given as JSON text; fails unless it is a JSON object.
    pub fn with_properties(
        user_id: impl Into<String>,
        properties_json: &str,
    ) -> Result<User, DecodeError> {
        let raw: Box<RawValue> =
            serde_json::from_str(properties_json).map_err(|source| DecodeError::Json {
                what: "user properties",
                source,
            })?;
        Ok(User {
            user_id: user_id.into(),
            user_properties: properties(&raw, "user properties", "user_properties")?,
        })
    }
}

/// What every batch of a change repeats: the cohort, when it was computed, and the change id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The cohort's identifier (`7khm89cz`), never empty.
    pub cohort_id: String,
    /// The cohort's display name.
    pub cohort_name: String,
    /// When the change was computed: unix seconds, as decimal digits (the payload sends a string).
    pub computed_time: String,
    /// The change's id, the first part of every message id; never empty, never contains `::`.
    pub change_id: String,
}

/// One chunk of a computed cohort change, validated: its user lists have exactly the lengths its
/// layout fields imply, so the batches it yields (see [`Chunk::batches`]) fit with the other
/// chunks' batches without ever seeing them.
///
/// Layout: the change's entering users, in change order, are cut into slices of `chunk_size`;
/// chunk `i` carries slice `i` (possibly empty), and likewise for the exiting users. So chunk `i`
/// holds entering users `i*chunk_size ..` and `chunk_count = max(1, ceil(max(entered_count,
/// exited_count) / chunk_size))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    header: Header,
    chunk_index: u32,
    chunk_count: u32,
    chunk_size: u64,
    entered_count: u64,
    exited_count: u64,
    entered: Vec<User>,
    exited: Vec<User>,
}

/// How many of `total` users a chunk at `index` with `size` carries.
fn slice_len(total: u64, size: u64, index: u32) -> u64 {
    total.saturating_sub(u64::from(index) * size).min(size)
}

impl Chunk {
    /// A whole change in one chunk (how a closed aggregation window is emitted).
    pub fn single(
        header: Header,
        entered: Vec<User>,
        exited: Vec<User>,
    ) -> Result<Chunk, DecodeError> {
        let e = entered.len() as u64;
        let x = exited.len() as u64;
        Chunk::new(header, 0, 1, e.max(x).max(1), e, x, entered, exited)
    }

    /// A whole change in one chunk, trusted: for changes hookpipe builds itself (closed windows),
    /// whose ids it already checked when decoding.
    pub(super) fn single_trusted(header: Header, entered: Vec<User>, exited: Vec<User>) -> Chunk {
        let e = entered.len() as u64;
        let x = exited.len() as u64;
        Chunk {
            header,
            chunk_index: 0,
            chunk_count: 1,
            chunk_size: e.max(x).max(1),
            entered_count: e,
            exited_count: x,
            entered,
            exited,
        }
    }

    /// Builds a chunk and checks every layout rule; the error names the first rule broken.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        header: Header,
        chunk_index: u32,
        chunk_count: u32,
        chunk_size: u64,
        entered_count: u64,
        exited_count: u64,
        entered: Vec<User>,
        exited: Vec<User>,
    ) -> Result<Chunk, DecodeError> {
        check_header(&header)?;
        if chunk_size == 0 {
            return Err(invalid(CHUNK, "chunk_size", "must be at least 1"));
        }
        let expected_count = entered_count.max(exited_count).div_ceil(chunk_size).max(1);
        if u64::from(chunk_count) != expected_count {
            return Err(invalid(
                CHUNK,
                "chunk_count",
                format!(
                    "is {chunk_count}, but entered_count {entered_count}, exited_count \
                     {exited_count} and chunk_size {chunk_size} make {expected_count} chunks"
                ),
            ));
        }
        if chunk_index >= chunk_count {
            return Err(invalid(
                CHUNK,
                "chunk_index",
                format!("is {chunk_index}, but chunk_count is {chunk_count}"),
            ));
        }
        for (field, users, total) in [
            ("entered", &entered, entered_count),
            ("exited", &exited, exited_count),
        ] {
            let want = slice_len(total, chunk_size, chunk_index);
            if users.len() as u64 != want {
                return Err(invalid(
                    CHUNK,
                    field,
                    format!(
                        "has {} users, but chunk {chunk_index} of a change with {field}_count \
                         {total} and chunk_size {chunk_size} must have {want}",
                        users.len()
                    ),
                ));
            }
            for (i, user) in users.iter().enumerate() {
                if user.user_id.is_empty() {
                    return Err(invalid(CHUNK, format!("{field}[{i}].user_id"), "is empty"));
                }
            }
        }
        Ok(Chunk {
            header,
            chunk_index,
            chunk_count,
            chunk_size,
            entered_count,
            exited_count,
            entered,
            exited,
        })
    }

    /// Decodes and validates one Kafka message of a cohort change topic.
    pub fn decode(bytes: &[u8]) -> Result<Chunk, DecodeError> {
        let raw: RawChunk<'_> =
            serde_json::from_slice(bytes).map_err(|source| DecodeError::Json {
                what: CHUNK,
                source,
            })?;
        let header = Header {
            cohort_id: raw.cohort_id,
            cohort_name: raw.cohort_name,
            computed_time: computed_time(raw.computed_time)?,
            change_id: raw.change_id,
        };
        let entered = users(raw.entered, "entered")?;
        let exited = users(raw.exited, "exited")?;
        let chunk_count = raw.chunk_count.unwrap_or(1);
        let chunk_index = raw.chunk_index.unwrap_or(0);
        let (entered_count, exited_count, chunk_size) = if chunk_count == 1 {
            // A one-chunk change may leave the layout fields out; given ones must still agree.
            let e = raw.entered_count.unwrap_or(entered.len() as u64);
            let x = raw.exited_count.unwrap_or(exited.len() as u64);
            (e, x, raw.chunk_size.unwrap_or(e.max(x).max(1)))
        } else {
            let need = |v: Option<u64>, field: &str| {
                v.ok_or_else(|| {
                    invalid(
                        CHUNK,
                        field,
                        format!("is required when chunk_count is {chunk_count}"),
                    )
                })
            };
            (
                need(raw.entered_count, "entered_count")?,
                need(raw.exited_count, "exited_count")?,
                need(raw.chunk_size, "chunk_size")?,
            )
        };
        Chunk::new(
            header,
            chunk_index,
            chunk_count,
            chunk_size,
            entered_count,
            exited_count,
            entered,
            exited,
        )
    }

    /// The cohort and change this chunk belongs to.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// This chunk's position in its change, from 0.
    pub fn chunk_index(&self) -> u32 {
        self.chunk_index
    }

    /// How many chunks the change has.
    pub fn chunk_count(&self) -> u32 {
        self.chunk_count
    }

    /// How many entering (and exiting) users every chunk but the last non-empty one carries.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Entering users in the whole change.
    pub fn entered_count(&self) -> u64 {
        self.entered_count
    }

    /// Exiting users in the whole change.
    pub fn exited_count(&self) -> u64 {
        self.exited_count
    }

    /// This chunk's entering users, in change order.
    pub fn entered(&self) -> &[User] {
        &self.entered
    }

    /// This chunk's exiting users, in change order.
    pub fn exited(&self) -> &[User] {
        &self.exited
    }
}

fn check_header(h: &Header) -> Result<(), DecodeError> {
    if h.cohort_id.is_empty() {
        return Err(invalid(CHUNK, "cohort_id", "is empty"));
    }
    if h.change_id.is_empty() {
        return Err(invalid(CHUNK, "change_id", "is empty"));
    }
    if h.change_id.contains("::") {
        return Err(invalid(
            CHUNK,
            "change_id",
            "contains `::`, which separates the parts of a message id",
        ));
    }
    if h.computed_time.is_empty()
        || h.computed_time.len() > 20
        || !h.computed_time.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(
            CHUNK,
            "computed_time",
            format!("{:?} is not unix seconds", h.computed_time),
        ));
    }
    Ok(())
}

/// One user entering or leaving one cohort, from a cohort membership topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The cohort's identifier, never empty.
    pub cohort_id: String,
    /// The cohort's display name.
    pub cohort_name: String,
    /// The user, with the properties the sync selected.
    pub user: User,
    /// `true`: the user entered the cohort; `false`: the user left it.
    pub in_cohort: bool,
    /// When it happened, unix milliseconds; orders a user's events within a window.
    pub time: i64,
}

impl Membership {
    /// Decodes and validates one Kafka message of a cohort membership topic.
    pub fn decode(bytes: &[u8]) -> Result<Membership, DecodeError> {
        let raw: RawMembership<'_> =
            serde_json::from_slice(bytes).map_err(|source| DecodeError::Json {
                what: MEMBERSHIP,
                source,
            })?;
        if raw.cohort_id.is_empty() {
            return Err(invalid(MEMBERSHIP, "cohort_id", "is empty"));
        }
        if raw.user_id.is_empty() {
            return Err(invalid(MEMBERSHIP, "user_id", "is empty"));
        }
        let user_properties = match raw.user_properties {
            Some(p) => properties(p, MEMBERSHIP, "user_properties")?,
            None => None,
        };
        Ok(Membership {
            cohort_id: raw.cohort_id,
            cohort_name: raw.cohort_name,
            user: User {
                user_id: raw.user_id,
                user_properties,
            },
            in_cohort: raw.in_cohort,
            time: raw.time,
        })
    }
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    cohort_id: String,
    cohort_name: String,
    #[serde(borrow)]
    computed_time: &'a RawValue,
    change_id: String,
    chunk_index: Option<u32>,
    chunk_count: Option<u32>,
    chunk_size: Option<u64>,
    entered_count: Option<u64>,
    exited_count: Option<u64>,
    #[serde(default, borrow)]
    entered: Vec<RawUser<'a>>,
    #[serde(default, borrow)]
    exited: Vec<RawUser<'a>>,
}

#[derive(Deserialize)]
struct RawUser<'a> {
    user_id: String,
    #[serde(default, borrow)]
    user_properties: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMembership<'a> {
    cohort_id: String,
    cohort_name: String,
    user_id: String,
    #[serde(default, borrow)]
    user_properties: Option<&'a RawValue>,
    in_cohort: bool,
    time: i64,
}

/// `computed_time` as Amplitude sends it (a string of digits) or as a plain JSON integer; the
/// digits themselves are checked with the rest of the header.
fn computed_time(raw: &RawValue) -> Result<String, DecodeError> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|source| DecodeError::Json {
            what: CHUNK,
            source,
        })
    } else if text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err(invalid(
            CHUNK,
            "computed_time",
            format!("{text} is not unix seconds (a string of digits or an integer)"),
        ))
    }
}

fn users(raw: Vec<RawUser<'_>>, field: &str) -> Result<Vec<User>, DecodeError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, u)| {
            let user_properties = match u.user_properties {
                Some(p) => properties(p, CHUNK, &format!("{field}[{i}].user_properties"))?,
                None => None,
            };
            Ok(User {
                user_id: u.user_id,
                user_properties,
            })
        })
        .collect()
}

/// A `user_properties` value: an object (kept minified and verbatim), or `null` (no properties).
fn properties(
    raw: &RawValue,
    what: &'static str,
    field: &str,
) -> Result<Option<Box<str>>, DecodeError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => Ok(Some(minify(text).into_boxed_str())),
        Some(b'n') => Ok(None),
        _ => Err(invalid(what, field, "is not a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> Result<Chunk, DecodeError> {
        Chunk::decode(json.as_bytes())
    }

    #[test]
    fn decodes_a_one_chunk_change_without_layout_fields() {
        let c = chunk(
            r#"{"cohort_id":"7khm89cz","cohort_name":"My Test Cohort","computed_time":"1692206763",
                "change_id":"9baaa88f","entered":[{"user_id":"a","user_properties":{ "x" : 1.50 }},
                {"user_id":"b","user_properties":null}],"exited":[{"user_id":"c"}],"extra":true}"#,
        )
        .unwrap();
        assert_eq!(c.header().cohort_name, "My Test Cohort");
        assert_eq!(c.chunk_index(), 0);
        assert_eq!(c.chunk_count(), 1);
        assert_eq!(c.chunk_size(), 2);
        assert_eq!((c.entered_count(), c.exited_count()), (2, 1));
        assert_eq!(
            c.entered()[0].user_properties.as_deref(),
            Some(r#"{"x":1.50}"#)
        );
        assert_eq!(c.entered()[1].user_properties, None);
        assert_eq!(c.exited(), &[User::new("c")]);
    }

    #[test]
    fn computed_time_may_be_an_integer_but_not_a_non_digit_string() {
        let ok = chunk(
            r#"{"cohort_id":"c","cohort_name":"n","computed_time":1700000000,"change_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(ok.header().computed_time, "1700000000");
        let err =
            chunk(r#"{"cohort_id":"c","cohort_name":"n","computed_time":"17e8","change_id":"x"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("`computed_time`"), "{err}");
    }

    #[test]
    fn a_chunk_of_many_needs_its_layout_and_the_right_lengths() {
        let base = r#""cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":"x""#;
        let err = chunk(&format!(r#"{{{base},"chunk_index":1,"chunk_count":3}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`entered_count`: is required"), "{err}");

        // 5 entering, 2 exiting, chunks of 2: 3 chunks; chunk 1 has 2 entering and 0 exiting.
        let layout = r#""chunk_count":3,"chunk_size":2,"entered_count":5,"exited_count":2"#;
        let ok = chunk(&format!(
            r#"{{{base},{layout},"chunk_index":1,"entered":[{{"user_id":"e2"}},{{"user_id":"e3"}}]}}"#
        ))
        .unwrap();
        assert_eq!(ok.entered().len(), 2);
        let err = chunk(&format!(
            r#"{{{base},{layout},"chunk_index":2,"entered":[{{"user_id":"e4"}}],"exited":[{{"user_id":"x"}}]}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`exited`: has 1 users") && err.contains("must have 0"),
            "{err}"
        );
        let err = chunk(&format!(
            r#"{{{base},"chunk_count":4,"chunk_size":2,"entered_count":5,"exited_count":2,"chunk_index":0}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`chunk_count`: is 4") && err.contains("make 3 chunks"),
            "{err}"
        );
        let err = chunk(&format!(r#"{{{base},{layout},"chunk_index":3}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`chunk_index`: is 3"), "{err}");
    }

    #[test]
    fn rejects_bad_ids_and_properties_naming_the_field() {
        let cases = [
            (
                r#"{"cohort_id":"","cohort_name":"n","computed_time":"1","change_id":"x"}"#,
                "`cohort_id`: is empty",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":""}"#,
                "`change_id`: is empty",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":"a::b"}"#,
                "`change_id`: contains `::`",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":"x","exited":[{"user_id":"u"},{"user_id":""}]}"#,
                "`exited[1].user_id`: is empty",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":"x","entered":[{"user_id":"u","user_properties":[1]}]}"#,
                "`entered[0].user_properties`: is not a JSON object",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","computed_time":"1","change_id":"x","entered_count":3}"#,
                "`entered`: has 0 users",
            ),
            (
                r#"{"cohort_name":"n","computed_time":"1","change_id":"x"}"#,
                "missing field `cohort_id`",
            ),
            (r#"not json"#, "cohort change chunk: expected ident"),
        ];
        for (json, want) in cases {
            let err = chunk(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn decodes_membership_events() {
        let m = Membership::decode(
            br#"{"cohort_id":"c","cohort_name":"n","user_id":"u","user_properties":{"a": [1, 2]},"in_cohort":false,"time":1700000000123}"#,
        )
        .unwrap();
        assert_eq!(m.user.user_properties.as_deref(), Some(r#"{"a":[1,2]}"#));
        assert!(!m.in_cohort);
        assert_eq!(m.time, 1_700_000_000_123);
        for (json, want) in [
            (
                r#"{"cohort_id":"c","cohort_name":"n","user_id":"","in_cohort":true,"time":1}"#,
                "`user_id`: is empty",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","user_id":"u","in_cohort":"yes","time":1}"#,
                "invalid type",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","user_id":"u","in_cohort":true}"#,
                "missing field `time`",
            ),
            (
                r#"{"cohort_id":"c","cohort_name":"n","user_id":"u","in_cohort":true,"time":1,"user_properties":"p"}"#,
                "`user_properties`: is not a JSON object",
            ),
        ] {
            let err = Membership::decode(json.as_bytes()).unwrap_err().to_string();
            assert!(
                err.starts_with("cohort membership event: ") && err.contains(want),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn user_with_properties_checks_the_object() {
        let u = User::with_properties("u", "{ \"k\" : \"v\" }").unwrap();
        assert_eq!(u.user_properties.as_deref(), Some(r#"{"k":"v"}"#));
        assert!(User::with_properties("u", "3").is_err());
        assert!(User::with_properties("u", "{").is_err());
    }
}
