//! Signing, so receivers can tell our requests from forgeries.
//!
//! - [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id` (the delivery id),
//!   `webhook-timestamp` (unix seconds when the try is sent) and `webhook-signature`, which holds
//!   `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` once per configured secret,
//!   space-separated, so a receiver verifying with either the old or the new secret accepts the
//!   request while secrets rotate. Secrets are written `whsec_<base64 key>`; the key is the
//!   base64-decoded part after the prefix.
//! - `X-Amplitude-Signature: <base64 HMAC-SHA256(key, body)>`, with the key of the *first*
//!   (newest) secret, for receivers built like Amplitude's webhook handlers, which recognise
//!   Amplitude requests by that header. It signs the body only (no id or timestamp), so it does not
//!   protect against replays; prefer the Standard Webhooks headers.
//!
//! Each secret is keyed once when the client is built; signing a try clones the keyed state.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing secret that cannot be used. Never carries the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret does not start with `whsec_`.
    #[error("signing secret #{index}: must start with \"whsec_\"")]
    MissingPrefix {
        /// 1-based position in the destination's list of secrets.
        index: usize,
    },
    /// The part after `whsec_` is not standard base64 (with padding).
    #[error("signing secret #{index}: the part after \"whsec_\" is not valid base64")]
    NotBase64 {
        /// 1-based position in the destination's list of secrets.
        index: usize,
    },
    /// The decoded key is empty.
    #[error("signing secret #{index}: the key is empty")]
    Empty {
        /// 1-based position in the destination's list of secrets.
        index: usize,
    },
}

/// The keyed HMAC states of a destination's secrets, newest first. Never printed.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ {} secret(s), redacted }}", self.keys.len())
    }
}

impl Signer {
    /// Keys every secret; `Ok(None)` when there is none (no signing).
    pub fn new(secrets: &[String]) -> Result<Option<Signer>, SigningError> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let index = i + 1;
            let encoded = secret
                .trim()
                .strip_prefix(SECRET_PREFIX)
                .ok_or(SigningError::MissingPrefix { index })?;
            let key = STANDARD
                .decode(encoded)
                .map_err(|_| SigningError::NotBase64 { index })?;
            if key.is_empty() {
                return Err(SigningError::Empty { index });
            }
            keys.push(HmacSha256::new_from_slice(&key).map_err(|_| SigningError::Empty { index })?);
        }
        Ok(Some(Signer { keys }))
    }

    /// The `webhook-signature` value: `v1,<sig>` per secret, space-separated.
    pub fn standard_signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mut out = String::with_capacity(self.keys.len() * 48);
        for (i, key) in self.keys.iter().enumerate() {
            let mut mac = key.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.as_bytes());
            mac.update(b".");
            mac.update(body);
            if i > 0 {
                out.push(' ');
            }
            out.push_str("v1,");
            STANDARD.encode_string(mac.finalize().into_bytes(), &mut out);
        }
        out
    }

    /// The `X-Amplitude-Signature` value: base64 HMAC-SHA256 of the body with the first secret.
    pub fn amplitude_signature(&self, body: &[u8]) -> String {
        let mut mac = self.keys[0].clone();
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secrets_no_signer() {
        assert!(Signer::new(&[]).unwrap().is_none());
    }

    #[test]
    fn bad_secrets_are_named_by_position_not_content() {
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let err = Signer::new(&[good.clone(), "sk_live_abc".into()]).unwrap_err();
        assert_eq!(err, SigningError::MissingPrefix { index: 2 });
        assert!(!err.to_string().contains("sk_live"));
        let err = Signer::new(&["whsec_not base64!".into()]).unwrap_err();
        assert_eq!(err, SigningError::NotBase64 { index: 1 });
        let err = Signer::new(&["whsec_".into()]).unwrap_err();
        assert_eq!(err, SigningError::Empty { index: 1 });
    }

    /// The example from the Standard Webhooks specification (`spec/standard-webhooks.md`).
    #[test]
    fn standard_webhooks_spec_example() {
        let signer = Signer::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()])
            .unwrap()
            .unwrap();
        let sig = signer.standard_signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_signature_per_secret_in_order() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let b = format!("{SECRET_PREFIX}{}", STANDARD.encode(b"another key"));
        let both = Signer::new(&[b.clone(), a.clone()]).unwrap().unwrap();
        let only_a = Signer::new(&[a]).unwrap().unwrap();
        let only_b = Signer::new(&[b]).unwrap().unwrap();
        let sig = both.standard_signature("id", 7, b"body");
        let want = format!(
            "{} {}",
            only_b.standard_signature("id", 7, b"body"),
            only_a.standard_signature("id", 7, b"body")
        );
        assert_eq!(sig, want);
        assert_eq!(
            both.amplitude_signature(b"body"),
            only_b.amplitude_signature(b"body")
        );
        assert_ne!(
            both.amplitude_signature(b"body"),
            only_a.amplitude_signature(b"body")
        );
    }

    #[test]
    fn debug_never_prints_keys() {
        let s = Signer::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()])
            .unwrap()
            .unwrap();
        assert_eq!(format!("{s:?}"), "Signer { 1 secret(s), redacted }");
    }
}
