//! Creating the retry tier topics and the dead-letter topic at start-up, so a broker that does not
//! auto-create topics (the usual production setting) still gets every tier before anything is
//! parked. Idempotent: topics that exist are left as they are.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A topic that could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The admin client could not be built.
    #[error("retry topics: admin client: {0}")]
    Client(#[source] KafkaError),
    /// The create request failed as a whole (broker unreachable, timeout).
    #[error("retry topics: create request failed: {0}")]
    Request(#[source] KafkaError),
    /// The broker refused one topic.
    #[error("retry topics: creating {topic:?} failed: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's reason.
        code: RDKafkaErrorCode,
    },
}

/// Creates `topics` with `partitions` partitions and `replication` replicas where they do not
/// exist yet. Waits up to `timeout` for the broker.
pub async fn ensure_topics(
    base: &ClientConfig,
    topics: &[String],
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<(), TopicsError> {
    let admin: AdminClient<DefaultClientContext> = base.create().map_err(TopicsError::Client)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(TopicsError::Request)?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicsError::Topic { topic, code }),
        }
    }
    Ok(())
}
