//! Kafka adapter: connection settings, topic administration, and the confirmed-delivery producer.

use std::time::Duration;

use anyhow::Context as _;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::kafka_properties::PropertiesFile;
use crate::config::{self, KAFKA_CONFIG_ENV, Source, masked};

mod connect;
pub use connect::{CONNECT_DEADLINE, ConnectFailure, SecurityContext};

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
    /// Replication factor of topics this tool creates [default: the broker's default.replication.factor].
    #[arg(long, env = "COSTSIM_REPLICATION_FACTOR", value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of topics this tool creates [default: the broker's].
    #[arg(long, env = "COSTSIM_MIN_INSYNC_REPLICAS", value_parser = clap::value_parser!(i32).range(1..))]
    pub min_insync_replicas: Option<i32>,
    /// librdkafka properties from a file in Java properties format, as Kafka's own `--command-config` (a Java
    /// client's `sasl.jaas.config` for PLAIN or SCRAM is understood); COSTSIM_KAFKA_<PROPERTY> variables and `-X`
    /// override it.
    #[arg(long = "kafka-config", env = KAFKA_CONFIG_ENV, value_name = "FILE", value_parser = PropertiesFile::read)]
    pub kafka_config: Option<PropertiesFile>,
    /// Extra librdkafka settings as key=value (repeatable), e.g. security.protocol=SASL_SSL; they override every
    /// other source of Kafka properties.
    #[arg(long = "kafka-option", short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

// Properties may carry credentials (sasl.password, ssl.key.password, an OAuth client secret): Debug hides the value
// of every property whose name says it is a secret.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(String, String, Source)> = self
            .properties()
            .into_iter()
            .map(|(k, v, source)| (masked(&k, &v), k, source))
            .map(|(v, k, s)| (k, v, s))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("results_topic", &self.results_topic)
            .field("state_topic", &self.state_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("group_id", &self.group_id)
            .field("results_partitions", &self.results_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("properties", &properties)
            .finish()
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Whether a command may create the topics it needs: managed clusters often forbid it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TopicCreation {
    /// Create no topic: check that the topics exist (and that the state topic is compacted) and refuse to start
    /// otherwise.
    #[arg(long = "no-create-topics", env = "COSTSIM_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
}

/// Topic names for an error message: `a`, `b`.
fn quoted(topics: &[String]) -> String {
    topics.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
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
    /// A client configuration with the brokers and the user's properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value, _) in self.properties() {
            config.set(key, value);
        }
        config
    }

    /// The user's librdkafka properties in order of precedence, each once with where it came from: the
    /// `--config` file's `[kafka]` table, then the `--kafka-config` file, then `COSTSIM_KAFKA_*`, then `-X`.
    pub fn properties(&self) -> Vec<(String, String, Source)> {
        let layers = config::layers();
        let from_file = self.kafka_config.iter().flat_map(|f| f.entries.iter().cloned());
        let layered = layers
            .file_kafka()
            .iter()
            .cloned()
            .chain(from_file)
            .map(|(k, v)| (k, v, Source::File))
            .chain(layers.env_kafka().into_iter().map(|(k, v)| (k, v, Source::Env)))
            .chain(self.options.iter().cloned().map(|(k, v)| (k, v, Source::Flag)));
        let mut merged: Vec<(String, String, Source)> = Vec::new();
        for (key, value, source) in layered {
            match merged.iter_mut().find(|(k, _, _)| *k == key) {
                Some(slot) => *slot = (key, value, source),
                None => merged.push((key, value, source)),
            }
        }
        merged
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
        self.check_connection().await?;
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("cannot create a Kafka admin client")?;
        let min_insync_replicas = self.min_insync_replicas.map(|n| n.to_string());
        let topics: Vec<NewTopic> =
            roles.iter().map(|role| self.new_topic(*role, min_insync_replicas.as_deref())).collect();
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

    /// Creates the topics of these roles when `creation` allows it, else checks that they exist as we need them
    /// (see [`Self::verify_topics`]).
    pub async fn prepare_topics(&self, roles: &[TopicRole], creation: &TopicCreation) -> anyhow::Result<()> {
        if creation.no_create_topics { self.verify_topics(roles).await } else { self.ensure_topics(roles).await }
    }

    /// Checks, creating nothing, that the topics of these roles exist and that the state topic is compacted
    /// (subscribers rebuild every breaker's state from it); the error names each topic at fault and what to do.
    pub async fn verify_topics(&self, roles: &[TopicRole]) -> anyhow::Result<()> {
        let missing = self.missing_roles(roles).await?;
        if !missing.is_empty() {
            anyhow::bail!(
                "topic creation is off (--no-create-topics) and the broker at {} has no topic {}; create {} with the \
                 settings in the README's topic table, or let costsim-breaker create them",
                self.brokers,
                quoted(&missing),
                if missing.len() == 1 { "it" } else { "them" },
            );
        }
        if roles.contains(&TopicRole::State) {
            let policy = self.topic_config(&self.state_topic, "cleanup.policy").await?;
            let compacted = policy.as_deref().is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"));
            anyhow::ensure!(
                compacted,
                "the state topic `{}` has cleanup.policy={}, not compact: subscribers could lose the latest state of a \
                 breaker; set cleanup.policy=compact on it (kafka-configs --alter --add-config cleanup.policy=compact)",
                self.state_topic,
                policy.as_deref().unwrap_or("<not set>"),
            );
        }
        Ok(())
    }

    /// Checks, creating nothing, that the topics of these roles exist; the error names the missing ones.
    pub async fn require_topics(&self, roles: &[TopicRole]) -> anyhow::Result<()> {
        let missing = self.missing_roles(roles).await?;
        anyhow::ensure!(missing.is_empty(), "the broker at {} has no topic {}", self.brokers, quoted(&missing));
        Ok(())
    }

    /// The topics of these roles the broker does not have, asked off the async threads (metadata requests block).
    async fn missing_roles(&self, roles: &[TopicRole]) -> anyhow::Result<Vec<String>> {
        self.check_connection().await?;
        let names: Vec<String> = roles.iter().map(|role| self.topic(*role).to_owned()).collect();
        let kafka = self.clone();
        tokio::task::spawn_blocking(move || kafka.missing_topics(&names)).await.context("the topic check stopped")?
    }

    /// The topics among `names` that the broker does not have; an error when the broker cannot be asked.
    fn missing_topics(&self, names: &[String]) -> anyhow::Result<Vec<String>> {
        let client = self.metadata_client().context("cannot create a Kafka client")?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .with_context(|| format!("cannot read the topics of the broker at {}", self.brokers))?;
        Ok(names
            .iter()
            .filter(|name| {
                !metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == name.as_str() && t.error().is_none() && !t.partitions().is_empty())
            })
            .cloned()
            .collect())
    }

    /// How many partitions `topic` has, as the broker's metadata says (asked off the async threads).
    pub async fn partition_count(&self, topic: &str) -> anyhow::Result<usize> {
        let (kafka, name) = (self.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let client = kafka.metadata_client().context("cannot create a Kafka client")?;
            let metadata = client
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .with_context(|| format!("cannot read the metadata of topic `{name}`"))?;
            let partitions = metadata.topics().iter().filter(|t| t.name() == name).map(|t| t.partitions().len()).sum();
            anyhow::ensure!(partitions > 0, "the broker at {} reports no partition of topic `{name}`", kafka.brokers);
            Ok(partitions)
        })
        .await
        .context("the metadata request stopped")?
    }

    /// One topic-level setting as the broker reports it (DescribeConfigs), `None` when it has no value.
    async fn topic_config(&self, topic: &str, key: &str) -> anyhow::Result<Option<String>> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("cannot create a Kafka admin client")?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await
            .with_context(|| format!("cannot read the settings of topic `{topic}`"))?;
        let resource = results
            .into_iter()
            .next()
            .context("the broker answered no settings")?
            .map_err(|code| anyhow::anyhow!("the broker refused to describe topic `{topic}`: {code}"))?;
        Ok(resource.get(key).and_then(|entry| entry.value.clone()))
    }

    /// Whether the broker has every one of these topics, with partitions; blocks on metadata requests.
    fn all_exist(&self, names: &[String]) -> bool {
        self.missing_topics(names).is_ok_and(|missing| missing.is_empty())
    }

    /// How a topic of this role is created: partitions and topic-level settings.
    fn new_topic<'a>(&'a self, role: TopicRole, min_insync_replicas: Option<&'a str>) -> NewTopic<'a> {
        let (partitions, settings): (i32, &[(&str, &str)]) = match role {
            TopicRole::Results => {
                // Explicit, so brokers that apply retention only to a declared policy (tansu) apply it too.
                (self.results_partitions, &[("cleanup.policy", "delete"), ("retention.ms", "604800000")])
            }
            TopicRole::State => (1, &[("cleanup.policy", "compact")]),
            TopicRole::DeadLetter => (1, &[("retention.ms", "2592000000")]),
        };
        // -1 asks the broker for its default.replication.factor (Apache Kafka 2.4 and later).
        let replication = TopicReplication::Fixed(self.replication_factor.unwrap_or(-1));
        let topic = NewTopic::new(self.topic(role), partitions, replication);
        let topic = settings.iter().fold(topic, |topic, (key, value)| topic.set(key, value));
        match min_insync_replicas {
            Some(n) => topic.set("min.insync.replicas", n),
            None => topic,
        }
    }

    /// A client for metadata and watermark requests only: a consumer that never subscribes or commits, so the
    /// broker is never asked to create a topic it names (a producer-type client would ask). Nothing polls it for
    /// messages: call [`drain_events`] after each request.
    pub fn metadata_client(&self) -> Result<BaseConsumer, KafkaError> {
        self.client_config().set("allow.auto.create.topics", "false").set("enable.auto.commit", "false").create()
    }

    /// An idempotent producer that waits for all in-sync replicas, for records that must not be lost or doubled.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.producer_config().create().with_context(|| format!("cannot create a Kafka producer for {}", self.brokers))
    }

    /// The dead-letter producer: acknowledged by every in-sync replica like [`Self::producer`], but not
    /// idempotent, with one request in flight so order holds. A retried send may write a dead letter twice, which
    /// `dlq replay` tolerates (provenance is idempotent on `event_id`); tansu 0.6's SQLite storage, in turn, has
    /// panicked in its idempotent-producer check under bursts of dead letters and then answered nothing.
    pub fn dead_letter_producer(&self) -> anyhow::Result<FutureProducer> {
        let mut config = self.producer_config();
        if self.client_config().get("enable.idempotence").is_none() {
            config.set("enable.idempotence", "false").set("max.in.flight.requests.per.connection", "1");
        }
        config.create().with_context(|| format!("cannot create the dead-letter producer for {}", self.brokers))
    }

    /// The producer's settings: the user's properties, and ours where the user set none.
    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        // The user's properties win: ours only fill what they left unset. (Copying the user's settings through
        // `ClientConfig::config_map` instead would copy rdkafka's placeholder for every password.)
        for (key, value) in
            [("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5"), ("message.timeout.ms", "30000")]
        {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        config
    }
}

/// Handles the log and error events queued on a client that nothing polls for messages (see
/// [`KafkaConfig::metadata_client`]), so its queue cannot grow while the broker is down; blocks at most `budget`.
pub fn drain_events<C: rdkafka::consumer::ConsumerContext>(client: &BaseConsumer<C>, budget: Duration) {
    let until = std::time::Instant::now() + budget;
    // A poll handles every queued event until its timeout; it returns early only on an error event.
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let _ = client.poll(left);
    }
}

/// What is kept of a record copied to another topic (a dead letter, a replay).
#[derive(Debug, Clone, Copy)]
pub struct RecordCopy<'a> {
    /// The original key.
    pub key: Option<&'a [u8]>,
    /// The original value.
    pub payload: &'a [u8],
    /// The original timestamp, in milliseconds since the epoch.
    pub timestamp: Option<i64>,
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
        self.enqueue(FutureRecord::to(topic).key(key).payload(payload)).await
    }

    /// Enqueues a copy of a record (its key, value and timestamp) with these headers; returns once librdkafka has
    /// accepted it.
    pub async fn send_copy(
        &mut self,
        topic: &str,
        copy: RecordCopy<'_>,
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(copy.payload).headers(headers);
        if let Some(key) = copy.key {
            record = record.key(key);
        }
        if let Some(timestamp) = copy.timestamp {
            record = record.timestamp(timestamp);
        }
        self.enqueue(record).await
    }

    async fn enqueue<'a>(&mut self, mut record: FutureRecord<'a, [u8], [u8]>) -> Result<(), KafkaError> {
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
    fn librdkafka_is_built_with_tls_every_sasl_mechanism_we_document_and_every_codec() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        let features: Vec<&str> = features.split(',').collect();
        // sasl_oauthbearer + oidc: OAUTHBEARER with librdkafka's own OIDC token fetch (needs libcurl).
        for wanted in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer", "oidc", "gzip", "snappy", "lz4", "zstd"] {
            assert!(features.contains(&wanted), "librdkafka lacks {wanted}: {features:?}");
        }
        assert_eq!(features.contains(&"sasl_gssapi"), cfg!(feature = "gssapi"), "GSSAPI only with the feature");
    }

    fn config_with(options: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "kafka:9093".into(),
            results_topic: DEFAULT_RESULTS_TOPIC.into(),
            state_topic: DEFAULT_STATE_TOPIC.into(),
            dlq_topic: DEFAULT_DLQ_TOPIC.into(),
            group_id: DEFAULT_GROUP_ID.into(),
            results_partitions: 6,
            replication_factor: Some(1),
            min_insync_replicas: None,
            kafka_config: None,
            options: options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn the_producer_keeps_the_users_secrets_and_settings_and_fills_in_ours() {
        let config = config_with(&[("sasl.password", "pw-1"), ("acks", "1")]).producer_config();
        assert_eq!(config.get("sasl.password"), Some("pw-1"), "the password itself, not a placeholder");
        assert_eq!(config.get("acks"), Some("1"), "the user's setting wins");
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("bootstrap.servers"), Some("kafka:9093"));
    }

    #[test]
    fn secret_kafka_options_never_reach_the_debug_output() {
        let config = config_with(&[
            ("sasl.password", "pw-1"),
            ("ssl.key.password", "pw-2"),
            ("sasl.oauthbearer.client.secret", "pw-3"),
            ("sasl.username", "costsim"),
        ]);
        let shown = format!("{config:?}");
        for secret in ["pw-1", "pw-2", "pw-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"sasl.username\", \"costsim\""), "other options stay visible: {shown}");
    }
}
