//! Kafka adapter: connection settings, topic administration, and the confirmed-delivery producer.

use std::time::Duration;

use anyhow::Context as _;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Default name of the topic simulation results arrive on.
pub const DEFAULT_RESULTS_TOPIC: &str = "costsim.simulation-results";
/// Default name of the compacted topic breaker state changes are published to.
pub const DEFAULT_STATE_TOPIC: &str = "costsim.breaker-state";
/// Default name of the dead-letter topic for undecodable or invalid results.
pub const DEFAULT_DLQ_TOPIC: &str = "costsim.simulation-results.dlq";
/// Default consumer group of the processor.
pub const DEFAULT_GROUP_ID: &str = "costsim-breaker";

/// How to reach Kafka and which topics to use; shared by every subcommand.
#[derive(Clone, clap::Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long = "brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic of simulation results.
    #[arg(long, env = "COSTSIM_RESULTS_TOPIC", default_value = DEFAULT_RESULTS_TOPIC)]
    pub results_topic: String,
    /// Compacted topic of breaker state changes.
    #[arg(long, env = "COSTSIM_STATE_TOPIC", default_value = DEFAULT_STATE_TOPIC)]
    pub state_topic: String,
    /// Dead-letter topic for records that cannot be decoded or are invalid.
    #[arg(long, env = "COSTSIM_DLQ_TOPIC", default_value = DEFAULT_DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Consumer group of the processor.
    #[arg(long, env = "COSTSIM_GROUP_ID", default_value = DEFAULT_GROUP_ID)]
    pub group_id: String,
    /// Partitions of the results topic when this tool creates it.
    #[arg(long, env = "COSTSIM_RESULTS_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
    pub results_partitions: i32,
    /// Replication factor of topics this tool creates (1 for a single local broker).
    #[arg(long, env = "COSTSIM_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: i32,
    /// Extra librdkafka settings as key=value (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-option", short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

// `-X` may carry credentials (sasl.password, ssl.key.password, an OAuth client secret): Debug hides the value of
// every option whose name says it is a secret.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<(&str, &str)> = self
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_option(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("results_topic", &self.results_topic)
            .field("state_topic", &self.state_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("group_id", &self.group_id)
            .field("results_partitions", &self.results_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("options", &options)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret (passwords, keys, client secrets, JAAS configs).
fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "sasl.jaas", "sasl.oauthbearer.config", "ssl.key"].iter().any(|s| key.contains(s))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Which of our topics, for creating it with the right settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// Simulation results: partitioned, kept for replays and backfills.
    Results,
    /// Breaker state: compacted, one partition so every subscriber sees one order.
    State,
    /// Dead letters: one partition, kept a month for inspection.
    DeadLetter,
}

impl KafkaConfig {
    /// A client configuration with the brokers and the user's extra options.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    /// The topic name for a role.
    pub fn topic(&self, role: TopicRole) -> &str {
        match role {
            TopicRole::Results => &self.results_topic,
            TopicRole::State => &self.state_topic,
            TopicRole::DeadLetter => &self.dlq_topic,
        }
    }

    /// Creates the topics of these roles that do not exist yet; existing topics are left as they are. A broker
    /// that cannot create topics (librdkafka's mock cluster has no CreateTopics, and an admin request to it waits
    /// for a controller until it times out; an ACL may deny it) is fine when every topic exists already: metadata
    /// is asked at the same time, and whichever answer settles the question first wins.
    pub async fn ensure_topics(&self, roles: &[TopicRole]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("cannot create a Kafka admin client")?;
        let topics: Vec<NewTopic> = roles.iter().map(|role| self.new_topic(*role)).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let create = async {
            match admin.create_topics(&topics, &options).await {
                Ok(results) => results.into_iter().find_map(|result| match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                    Err((topic, code)) => Some(format!(
                        "the broker at {} refused to create topic `{topic}`: {code} ({code:?})",
                        self.brokers
                    )),
                }),
                Err(err) => Some(format!("cannot reach Kafka at {} to create topics: {err}", self.brokers)),
            }
        };
        // A plain thread, not the blocking pool: a runtime waits for its blocking tasks when it shuts down, and a
        // metadata request about a topic tansu does not have yet runs into its timeout.
        let (tx, exist) = tokio::sync::oneshot::channel();
        let (kafka, names) = (self.clone(), roles.iter().map(|role| self.topic(*role).to_owned()).collect::<Vec<_>>());
        std::thread::spawn(move || {
            let _ = tx.send(kafka.all_exist(&names));
        });
        tokio::pin!(create, exist);
        tokio::select! {
            refused = &mut create => match refused {
                None => Ok(()),
                Some(refused) => {
                    anyhow::ensure!(exist.await.unwrap_or(false), refused);
                    Ok(())
                }
            },
            all = &mut exist => match all {
                Ok(true) => Ok(()),
                _ => match create.await {
                    None => Ok(()),
                    Some(refused) => anyhow::bail!(refused),
                },
            },
        }
    }

    /// Whether the broker has every one of these topics, with partitions; blocks on metadata requests.
    fn all_exist(&self, names: &[String]) -> bool {
        let Ok(client) = self.metadata_client() else { return false };
        names.iter().all(|name| {
            client.fetch_metadata(Some(name), Duration::from_secs(10)).is_ok_and(|m| {
                m.topics().iter().any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            })
        })
    }

    /// How a topic of this role is created: partitions and topic-level settings.
    fn new_topic(&self, role: TopicRole) -> NewTopic<'_> {
        let (partitions, settings): (i32, &[(&str, &str)]) = match role {
            TopicRole::Results => {
                // Explicit, so brokers that apply retention only to a declared policy (tansu) apply it too.
                (self.results_partitions, &[("cleanup.policy", "delete"), ("retention.ms", "604800000")])
            }
            TopicRole::State => (1, &[("cleanup.policy", "compact")]),
            TopicRole::DeadLetter => (1, &[("retention.ms", "2592000000")]),
        };
        let topic = NewTopic::new(self.topic(role), partitions, TopicReplication::Fixed(self.replication_factor));
        settings.iter().fold(topic, |topic, (key, value)| topic.set(key, value))
    }

    /// A client for metadata and watermark requests only: a consumer that never subscribes or commits, so the
    /// broker is never asked to create a topic it names (a producer-type client would ask). Nothing polls it for
    /// messages: call [`drain_events`] after each request.
    pub fn metadata_client(&self) -> Result<BaseConsumer, KafkaError> {
        self.client_config().set("allow.auto.create.topics", "false").set("enable.auto.commit", "false").create()
    }

    /// An idempotent producer that waits for all in-sync replicas, for records that must not be lost or doubled.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        let mut config = ClientConfig::new();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        // The user's options come last so they can override ours.
        for (key, value) in self.client_config().config_map() {
            config.set(key, value);
        }
        config.create().with_context(|| format!("cannot create a Kafka producer for {}", self.brokers))
    }
}

/// Handles the log and error events queued on a client that nothing polls for messages (see
/// [`KafkaConfig::metadata_client`]), so its queue cannot grow while the broker is down; blocks at most `budget`.
pub fn drain_events(client: &BaseConsumer, budget: Duration) {
    let until = std::time::Instant::now() + budget;
    // A poll handles every queued event until its timeout; it returns early only on an error event.
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let _ = client.poll(left);
    }
}

/// Counts of a batch of sends whose deliveries were all awaited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Records the broker acknowledged.
    pub ok: u64,
    /// Records that failed for good (after librdkafka's own retries).
    pub failed: u64,
}

/// Sends records and keeps every delivery future until it resolves, so no record is forgotten; when librdkafka's
/// queue is full it waits for the oldest deliveries instead of dropping or spinning.
pub struct ConfirmedSender<'p> {
    producer: &'p FutureProducer,
    in_flight: FuturesUnordered<DeliveryFuture>,
    counts: Delivered,
    first_error: Option<String>,
}

impl<'p> ConfirmedSender<'p> {
    /// Starts a batch on a producer.
    pub fn new(producer: &'p FutureProducer) -> Self {
        ConfirmedSender {
            producer,
            in_flight: FuturesUnordered::new(),
            counts: Delivered::default(),
            first_error: None,
        }
    }

    /// Enqueues one record; returns once librdkafka has accepted it (not yet delivered).
    pub async fn send(&mut self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), KafkaError> {
        self.send_with_headers(topic, Some(key), payload, None).await
    }

    /// Enqueues one record with optional key and headers; returns once librdkafka has accepted it.
    pub async fn send_with_headers(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    self.settle_ready();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    if !self.settle_one().await {
                        // Nothing of ours is in flight, yet the queue is full: let librdkafka make progress.
                        self.producer.poll(Duration::from_millis(10));
                    }
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// Deliveries acknowledged or failed so far.
    pub fn counts(&self) -> Delivered {
        self.counts
    }

    /// Waits for every outstanding delivery and returns the totals and the first failure's message.
    pub async fn finish(mut self) -> (Delivered, Option<String>) {
        while self.settle_one().await {}
        (self.counts, self.first_error)
    }

    /// Counts the deliveries that already completed, without waiting, so counts stay current and the set of
    /// futures stays small.
    fn settle_ready(&mut self) {
        while let Some(Some(outcome)) = self.in_flight.next().now_or_never() {
            self.count(outcome);
        }
    }

    async fn settle_one(&mut self) -> bool {
        let Some(outcome) = self.in_flight.next().await else { return false };
        self.count(outcome);
        true
    }

    fn count(&mut self, outcome: <DeliveryFuture as std::future::Future>::Output) {
        match outcome {
            Ok(Ok(_)) => self.counts.ok += 1,
            Ok(Err((err, _))) => self.fail(err.to_string()),
            Err(_canceled) => self.fail("the producer was dropped before the delivery report".into()),
        }
    }

    fn fail(&mut self, message: String) {
        self.counts.failed += 1;
        self.first_error.get_or_insert(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_kafka_options_never_reach_the_debug_output() {
        let config = KafkaConfig {
            brokers: "kafka:9093".into(),
            results_topic: DEFAULT_RESULTS_TOPIC.into(),
            state_topic: DEFAULT_STATE_TOPIC.into(),
            dlq_topic: DEFAULT_DLQ_TOPIC.into(),
            group_id: DEFAULT_GROUP_ID.into(),
            results_partitions: 6,
            replication_factor: 1,
            options: [
                ("sasl.password", "pw-1"),
                ("ssl.key.password", "pw-2"),
                ("sasl.oauthbearer.client.secret", "pw-3"),
                ("sasl.username", "costsim"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        };
        let shown = format!("{config:?}");
        for secret in ["pw-1", "pw-2", "pw-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"sasl.username\", \"costsim\""), "other options stay visible: {shown}");
    }
}
