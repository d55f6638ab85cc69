//! Helpers shared by every integration test: the real Kafka broker and its clients ([`kafka`]),
//! and a scriptable HTTP receiver standing in for customers' webhooks ([`http`]).
//!
//! Not every test module uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod http;
pub mod kafka;
