//! Creating the retry tier topics and the dead-letter topic at start-up, so a broker that does not
//! auto-create topics (the usual production setting) still gets every tier before anything is
//! parked. Idempotent: topics that exist are left as they are. Also learns each tier topic's
//! partition count, which the parker's placement needs.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
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
    /// A tier topic's partition count could not be learned.
    #[error("retry topics: partitions of {topic:?}: {problem}")]
    Metadata {
        /// The topic.
        topic: String,
        /// What the broker said (or that it did not answer).
        problem: String,
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

/// The partition count of each of `topics`, from the broker's metadata (read with `producer`'s
/// client). A topic that is missing or not ready yet (just created) is asked again until
/// `timeout`; then it is an error, since records parked in a topic that does not exist would wait
/// for it forever.
pub async fn partition_counts(
    producer: &rdkafka::producer::FutureProducer,
    topics: &[String],
    timeout: Duration,
) -> Result<HashMap<String, i32>, TopicsError> {
    let producer = producer.clone();
    let topics = topics.to_vec();
    // librdkafka's metadata request blocks: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        let mut counts = HashMap::new();
        for topic in &topics {
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let problem = match producer
                    .client()
                    .fetch_metadata(Some(topic), left.max(Duration::from_millis(100)))
                {
                    Ok(m) => match m.topics().iter().find(|t| t.name() == topic) {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            let n = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                            counts.insert(topic.clone(), n);
                            break;
                        }
                        Some(t) => match t.error() {
                            Some(e) => format!("{:?}", RDKafkaErrorCode::from(e)),
                            None => "no partitions".to_string(),
                        },
                        None => "not in the metadata".to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                if std::time::Instant::now() >= deadline {
                    return Err(TopicsError::Metadata {
                        topic: topic.clone(),
                        problem,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(counts)
    })
    .await
    .map_err(|e| TopicsError::Metadata {
        topic: String::new(),
        problem: e.to_string(),
    })?
}
