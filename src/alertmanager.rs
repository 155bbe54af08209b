//! Alertmanager (API v2): where alerts go, how one delivery is made and classified, and the retry schedule. The
//! outbox drainer that uses them is [`drainer`].
//!
//! # Delivery guarantee
//! Every row of `costsim_alert_queue` is POSTed to Alertmanager **at least once** while it is pending and
//! Alertmanager answers 2xx within `ALERTMANAGER_TIMEOUT` before the row's `max_attempts` run out; rows of one alert
//! (one label set) are delivered in the order they were queued. A row is marked `sent` only after a 2xx answer.
//! A crash between the answer and the mark, or a claim that outlives its lease, sends the row again, which
//! Alertmanager absorbs (the same labels update the same alert). It depends on the decision that caused an alert
//! committing the row (`store::breaker::apply`), and on the drainer running as the single leader of lock 7002,
//! though two drainers by mistake still never hold one row at once (claims are leased row by row).

pub mod drainer;

use std::time::Duration;

use url::Url;

pub use drainer::{DrainError, DrainOutcome, Drainer};

/// The path of the alerts endpoint under Alertmanager's base URL.
pub const ALERTS_PATH: &str = "/api/v2/alerts";
/// Longest pause between two attempts of one row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest delivery timeout accepted.
const MAX_TIMEOUT_SECONDS: u64 = 300;
/// The longest re-send interval accepted (an hour: Alertmanager would long have forgotten the first alert).
const MAX_RESEND_SECONDS: u64 = 3600;

/// Why the alert settings are refused at start.
#[derive(Debug, thiserror::Error)]
pub enum AlertConfigError {
    /// Alerts are on and there is nowhere to send them.
    #[error(
        "ALERTMANAGER_URL is not set, so alerts would never be delivered: set ALERTMANAGER_URL (or \
         --alertmanager-url) to Alertmanager's address, or pass --alerts off (COSTSIM_ALERTS=off) to run without \
         delivering alerts (they then stay queued, pending, in costsim_alert_queue)"
    )]
    MissingUrl,
    /// The URL does not parse or is not http(s); the URL itself is not repeated, as it may hold a password.
    #[error("ALERTMANAGER_URL is not a valid http(s) URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// A duration setting is out of its range.
    #[error("{setting} must be between 1 and {max} seconds, not {value}")]
    OutOfRange {
        /// The setting's variable.
        setting: &'static str,
        /// The largest value accepted.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// The HTTP client cannot be built (TLS setup).
    #[error("cannot build the HTTP client for Alertmanager: {0}")]
    Client(#[source] reqwest::Error),
}

/// Whether `run` delivers alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertsMode {
    /// Drain the alert queue to Alertmanager (needs ALERTMANAGER_URL).
    On,
    /// Deliver nothing: alerts stay pending in the queue, and nothing is marked sent.
    Off,
}

/// The alert settings of `run`.
#[derive(Clone, clap::Args)]
pub struct AlertArgs {
    /// Alertmanager's base URL, e.g. http://127.0.0.1:9093 (a URL ending in /api/v2/alerts is accepted too);
    /// required unless `--alerts off`.
    #[arg(long = "alertmanager-url", env = "ALERTMANAGER_URL", value_name = "URL", hide_env_values = true)]
    pub alertmanager_url: Option<String>,
    /// Seconds one delivery to Alertmanager may take, connection included.
    #[arg(long = "alertmanager-timeout", env = "ALERTMANAGER_TIMEOUT", value_name = "SECONDS", default_value_t = 10)]
    pub alertmanager_timeout_seconds: u64,
    /// `on` delivers alerts to Alertmanager; `off` leaves them queued, pending, and must be chosen explicitly when
    /// there is no ALERTMANAGER_URL.
    #[arg(long = "alerts", env = "COSTSIM_ALERTS", value_name = "MODE", value_enum, default_value_t = AlertsMode::On)]
    pub alerts_mode: AlertsMode,
    /// Seconds between re-sends of an alert that is still firing (an open or half-open breaker, an active drift
    /// warning); each re-send ends 4 intervals later unless re-sent again. Keep it under Alertmanager's
    /// resolve_timeout (5 min by default), which holds the first alert of an incident until its first re-send.
    #[arg(
        long = "alert-resend-seconds",
        env = "COSTSIM_ALERT_RESEND_SECONDS",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub alert_resend_seconds: u64,
}

// The URL may carry basic-auth credentials, so Debug shows it as the logs do, password hidden.
impl std::fmt::Debug for AlertArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.alertmanager_url.as_deref().map(|u| match Url::parse(u) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some("***"));
                }
                parsed.to_string()
            }
            Err(_) => "<unparseable URL>".to_owned(),
        });
        f.debug_struct("AlertArgs")
            .field("alertmanager_url", &url)
            .field("alertmanager_timeout_seconds", &self.alertmanager_timeout_seconds)
            .field("alerts_mode", &self.alerts_mode)
            .field("alert_resend_seconds", &self.alert_resend_seconds)
            .finish()
    }
}

/// Validated delivery settings: where, how long one delivery may take, and how often firing alerts are re-sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The alerts endpoint.
    pub endpoint: Endpoint,
    /// Longest time one delivery may take.
    pub timeout: Duration,
    /// Time between re-sends of a firing alert.
    pub resend_interval: Duration,
}

impl AlertArgs {
    /// The delivery settings, `None` when alerts are off, or why they are refused.
    pub fn delivery(&self) -> Result<Option<Delivery>, AlertConfigError> {
        if self.alerts_mode == AlertsMode::Off {
            return Ok(None);
        }
        let url = self
            .alertmanager_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or(AlertConfigError::MissingUrl)?;
        let check = |setting: &'static str, value: u64, max: u64| match value {
            1.. if value <= max => Ok(Duration::from_secs(value)),
            _ => Err(AlertConfigError::OutOfRange { setting, max, value }),
        };
        let timeout = check("ALERTMANAGER_TIMEOUT", self.alertmanager_timeout_seconds, MAX_TIMEOUT_SECONDS)?;
        let resend_interval = check("COSTSIM_ALERT_RESEND_SECONDS", self.alert_resend_seconds, MAX_RESEND_SECONDS)?;
        Ok(Some(Delivery { endpoint: Endpoint::parse(url)?, timeout, resend_interval }))
    }
}

/// Alertmanager's `POST /api/v2/alerts` endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint(Url);

// Debug is Display: the password stays hidden wherever the endpoint is printed.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

impl Endpoint {
    /// The endpoint of an Alertmanager base URL, with or without a trailing slash, and with or without the
    /// `/api/v2/alerts` suffix already (the older system's two senders disagreed on it, docs/DOMAIN.md, *11.22
    /// Alertmanager URL handling*).
    pub fn parse(url: &str) -> Result<Self, AlertConfigError> {
        let invalid = |reason: String| AlertConfigError::InvalidUrl { reason };
        let mut parsed = Url::parse(url.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("the scheme is `{}`, not http or https", parsed.scheme())));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it names no host".to_owned()));
        }
        let base = parsed.path().trim_end_matches('/');
        let base = base.strip_suffix(ALERTS_PATH).unwrap_or(base).trim_end_matches('/').to_owned();
        parsed.set_path(&format!("{base}{ALERTS_PATH}"));
        parsed.set_query(None);
        parsed.set_fragment(None);
        Ok(Endpoint(parsed))
    }

    /// The URL to POST to.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// Alertmanager's readiness URL (`{base}/-/ready`) on the same base, for `/health`.
    pub fn ready_url(&self) -> Url {
        let mut url = self.0.clone();
        let base = url.path().strip_suffix(ALERTS_PATH).unwrap_or("").to_owned();
        url.set_path(&format!("{base}/-/ready"));
        url
    }
}

/// The endpoint with any password hidden, for logs.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        write!(f, "{shown}")
    }
}

/// Why one delivery failed, as the row's `last_error` and the metric's `error_type` record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// `timeout`, `http_<code>` or `connection`.
    pub error_type: String,
    /// `Timeout: …`, `HTTP <code>: <first 200 characters of the body>`, or the first 500 characters of the error.
    pub message: String,
}

impl SendFailure {
    /// A timeout, with the error's text.
    pub fn timeout(detail: &str) -> Self {
        SendFailure { error_type: "timeout".to_owned(), message: truncate(&format!("Timeout: {detail}"), 500) }
    }

    /// A non-2xx answer, with the start of its body.
    pub fn http(status: u16, body: &str) -> Self {
        SendFailure {
            error_type: format!("http_{status}"),
            message: format!("HTTP {status}: {}", truncate(body.trim(), 200)),
        }
    }

    /// Anything else (refused, reset, DNS, TLS): the start of the error's text.
    pub fn connection(detail: &str) -> Self {
        SendFailure { error_type: "connection".to_owned(), message: truncate(detail, 500) }
    }
}

/// POSTs one payload (a JSON array of alerts) and classifies the outcome; any 2xx is a success.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    payload: &serde_json::Value,
    timeout: Duration,
) -> Result<(), SendFailure> {
    let classify = |err: reqwest::Error| {
        // The error would name the URL, which may hold a password.
        let err = err.without_url();
        let detail = error_chain(&err);
        if err.is_timeout() { SendFailure::timeout(&detail) } else { SendFailure::connection(&detail) }
    };
    let response = client.post(endpoint.url().clone()).timeout(timeout).json(payload).send().await.map_err(classify)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(SendFailure::http(status.as_u16(), &body))
}

/// The HTTP client deliveries share (connection pool, rustls with the system's roots).
pub fn client() -> Result<reqwest::Client, AlertConfigError> {
    reqwest::Client::builder()
        .user_agent(concat!("costsim-breaker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(AlertConfigError::Client)
}

/// The delay before the next attempt of a row that has now failed `failures_before + 1` times: `min(2^failures_before,
/// 300)` seconds (1, 2, 4, …, 256, then 300), times a jitter factor between 0.8 and 1.2 drawn from `jitter` in
/// `[0, 1)`, never above [`MAX_BACKOFF`].
pub fn retry_delay(failures_before: u32, jitter: f64) -> Duration {
    let cap = MAX_BACKOFF.as_secs_f64();
    let base = 2f64.powi(failures_before.min(16) as i32).min(cap);
    Duration::from_secs_f64((base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))).min(cap))
}

/// An error and its sources, joined by `: ` (a source already quoted by its parent is not repeated).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text = format!("{text}: {shown}");
        }
        source = cause.source();
    }
    text
}

/// The first `max` characters of `text`.
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alertmanager_password_never_reaches_the_debug_output() {
        let args = AlertArgs {
            alertmanager_url: Some("https://ops:hunter2@am.example:9093".into()),
            alertmanager_timeout_seconds: 10,
            alerts_mode: AlertsMode::On,
            alert_resend_seconds: 60,
        };
        let delivery = args.delivery().unwrap().unwrap();
        for shown in [format!("{args:?}"), format!("{delivery:?}"), format!("{}", delivery.endpoint)] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("ops:***@am.example"), "{shown}");
        }
    }

    fn endpoint(url: &str) -> String {
        Endpoint::parse(url).unwrap().url().to_string()
    }

    #[test]
    fn the_alerts_path_is_added_once_with_or_without_suffix_and_slash() {
        for url in [
            "http://am:9093",
            "http://am:9093/",
            "http://am:9093/api/v2/alerts",
            "http://am:9093/api/v2/alerts/",
            " http://am:9093// ",
        ] {
            assert_eq!(endpoint(url), "http://am:9093/api/v2/alerts", "{url}");
        }
        assert_eq!(endpoint("https://ops.example/alertmanager/"), "https://ops.example/alertmanager/api/v2/alerts");
    }

    #[test]
    fn the_readiness_url_sits_on_the_same_base() {
        let ready = |url: &str| Endpoint::parse(url).unwrap().ready_url().to_string();
        assert_eq!(ready("http://am:9093/api/v2/alerts"), "http://am:9093/-/ready");
        assert_eq!(ready("https://ops.example/alertmanager/"), "https://ops.example/alertmanager/-/ready");
    }

    #[test]
    fn urls_that_are_not_http_are_refused_without_echoing_them() {
        let err = Endpoint::parse("ftp://user:secret@am:21").unwrap_err().to_string();
        assert!(err.contains("ftp") && !err.contains("secret"), "{err}");
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn a_password_in_the_url_is_hidden_when_shown() {
        let shown = Endpoint::parse("http://bot:s3cret@am:9093").unwrap().to_string();
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }

    fn args(url: Option<&str>, mode: AlertsMode) -> AlertArgs {
        AlertArgs {
            alertmanager_url: url.map(str::to_owned),
            alertmanager_timeout_seconds: 10,
            alerts_mode: mode,
            alert_resend_seconds: 60,
        }
    }

    #[test]
    fn alerts_on_without_a_url_are_refused_and_the_message_names_the_way_out() {
        for url in [None, Some(""), Some("  ")] {
            let err = args(url, AlertsMode::On).delivery().unwrap_err().to_string();
            assert!(err.contains("ALERTMANAGER_URL") && err.contains("--alerts off"), "{err}");
        }
    }

    #[test]
    fn alerts_off_need_no_url_and_deliver_nothing() {
        assert!(args(None, AlertsMode::Off).delivery().unwrap().is_none());
        assert!(args(Some("http://am:9093"), AlertsMode::Off).delivery().unwrap().is_none());
    }

    #[test]
    fn durations_out_of_range_are_refused() {
        let zero_timeout = AlertArgs { alertmanager_timeout_seconds: 0, ..args(Some("http://am"), AlertsMode::On) };
        assert!(zero_timeout.delivery().unwrap_err().to_string().contains("ALERTMANAGER_TIMEOUT"));
        let zero_resend = AlertArgs { alert_resend_seconds: 0, ..args(Some("http://am"), AlertsMode::On) };
        assert!(zero_resend.delivery().unwrap_err().to_string().contains("COSTSIM_ALERT_RESEND_SECONDS"));
        let huge_resend = AlertArgs { alert_resend_seconds: u64::MAX, ..args(Some("http://am"), AlertsMode::On) };
        assert!(huge_resend.delivery().unwrap_err().to_string().contains("between 1 and 3600"));
        let fine = args(Some("http://am"), AlertsMode::On).delivery().unwrap().unwrap();
        assert_eq!((fine.timeout, fine.resend_interval), (Duration::from_secs(10), Duration::from_secs(60)));
    }

    #[test]
    fn the_retry_delay_doubles_from_one_second_and_is_capped_at_five_minutes() {
        let middle: Vec<f64> = (0..12).map(|n| retry_delay(n, 0.5).as_secs_f64()).collect();
        assert_eq!(middle, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]);
        assert_eq!(retry_delay(u32::MAX, 0.5), MAX_BACKOFF);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        assert_eq!(retry_delay(3, 0.0).as_secs_f64(), 6.4);
        assert!((retry_delay(3, 0.999_999).as_secs_f64() - 9.6).abs() < 1e-3);
        assert_eq!(retry_delay(9, 0.999), MAX_BACKOFF);
        assert_eq!(retry_delay(9, 0.0).as_secs_f64(), 240.0);
    }

    #[test]
    fn failures_are_classified_with_bounded_messages() {
        let http = SendFailure::http(503, &"x".repeat(1000));
        assert_eq!(http.error_type, "http_503");
        assert_eq!(http.message.len(), "HTTP 503: ".len() + 200);
        let timeout = SendFailure::timeout("operation timed out");
        assert_eq!(
            (timeout.error_type.as_str(), timeout.message.as_str()),
            ("timeout", "Timeout: operation timed out")
        );
        assert_eq!(SendFailure::connection(&"é".repeat(600)).message.chars().count(), 500);
    }
}
