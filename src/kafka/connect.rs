//! The first contact with the broker: a wrong password or an untrusted certificate ends a command at once, with
//! an error that says which, instead of librdkafka's endless reconnecting behind a generic timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{KafkaConfig, drain_events};

/// How long a command tries to reach the broker before giving up: a broker that is still starting gets time,
/// a refused login or certificate ends the wait at the first attempt.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(20);
/// One metadata attempt: short, so a security failure reported meanwhile is seen within about a second.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Why the broker could not be used: what the user must fix differs for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// SASL: the broker refused the credentials or the mechanism.
    Authentication(String),
    /// TLS: the handshake failed, most often because the broker's certificate is not trusted.
    Tls(String),
}

impl ConnectFailure {
    /// The failure librdkafka reported as this global error, if it is one the user must fix in the configuration.
    fn classify(error: &KafkaError, reason: &str) -> Option<Self> {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(ConnectFailure::Authentication(reason.to_owned()))
            }
            Some(RDKafkaErrorCode::SSL) => Some(ConnectFailure::Tls(reason.to_owned())),
            _ => None,
        }
    }

    /// The message for the user: what failed, librdkafka's reason, and which properties to check.
    pub fn message(&self, brokers: &str) -> String {
        match self {
            ConnectFailure::Authentication(reason) => format!(
                "Kafka at {brokers} refused authentication: {reason}; check sasl.mechanisms, sasl.username and \
                 sasl.password (or the OAUTHBEARER settings)"
            ),
            ConnectFailure::Tls(reason) => {
                let hint = if reason.contains("certificate") {
                    "the broker's certificate is not trusted or does not match its name; check ssl.ca.location \
                     (the CA that signed the broker's certificate) and the broker address"
                } else {
                    "check security.protocol and the ssl.* properties"
                };
                format!("TLS with Kafka at {brokers} failed: {reason}; {hint}")
            }
        }
    }
}

/// A client context that keeps the first authentication or TLS failure librdkafka reports, so the waiting code
/// can stop; every error is still logged as librdkafka's default context does.
#[derive(Clone, Default)]
pub struct SecurityContext {
    first: Arc<Mutex<Option<ConnectFailure>>>,
}

impl SecurityContext {
    /// The first security failure reported so far.
    pub fn failure(&self) -> Option<ConnectFailure> {
        self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ClientContext for SecurityContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(failure) = ConnectFailure::classify(&error, reason) {
            self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert(failure);
        }
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for SecurityContext {}

impl KafkaConfig {
    /// Checks that the broker answers a metadata request with these settings, within [`CONNECT_DEADLINE`]; a
    /// refused login or an untrusted certificate fails at once with a message naming it. Blocks: call it from a
    /// blocking context, or use [`Self::check_connection`].
    pub fn check_connection_blocking(&self) -> anyhow::Result<()> {
        let context = SecurityContext::default();
        let client: BaseConsumer<SecurityContext> = self
            .client_config()
            .set("allow.auto.create.topics", "false")
            .set("enable.auto.commit", "false")
            .create_with_context(context.clone())
            .map_err(|err| anyhow::anyhow!("cannot create a Kafka client for {}: {err}", self.brokers))?;
        let started = Instant::now();
        loop {
            let attempt = client.fetch_metadata(None, ATTEMPT);
            // Security failures arrive as error events, handled only while the client is polled.
            drain_events(&client, Duration::from_millis(50));
            if let Some(failure) = context.failure() {
                anyhow::bail!(failure.message(&self.brokers));
            }
            match attempt {
                Ok(_) => return Ok(()),
                Err(err) if started.elapsed() >= CONNECT_DEADLINE => anyhow::bail!(
                    "cannot reach Kafka at {} within {} s: {err}; check the address, security.protocol and that \
                     the broker runs",
                    self.brokers,
                    CONNECT_DEADLINE.as_secs()
                ),
                Err(_) => {}
            }
        }
    }

    /// [`Self::check_connection_blocking`] off the async threads.
    pub async fn check_connection(&self) -> anyhow::Result<()> {
        let kafka = self.clone();
        tokio::task::spawn_blocking(move || kafka.check_connection_blocking())
            .await
            .map_err(|err| anyhow::anyhow!("the Kafka connection check stopped: {err}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_and_an_untrusted_certificate_are_told_apart_and_named() {
        let auth = ConnectFailure::classify(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL SCRAM-SHA-512 mechanism handshake failed",
        )
        .unwrap();
        assert!(auth.message("k:9093").contains("refused authentication"), "{auth:?}");
        let tls = ConnectFailure::classify(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        let message = tls.message("k:9093");
        assert!(message.contains("certificate") && message.contains("ssl.ca.location"), "{message}");
        assert_eq!(ConnectFailure::classify(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "down"), None);
    }
}
