//! [`Secret`]: a string that must never reach a log line, an error message, a metric or `Debug`
//! output (header values, SASL passwords, signing keys).

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it, so every
/// place that hands the value to the outside world is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (an HTTP header, librdkafka).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        let nested = format!("{:?}", vec![("Authorization", s)]);
        assert!(!nested.contains("hunter2"), "{nested}");
    }
}
