//! A Confluent-compatible Schema Registry, for records in Confluent's wire format (byte 0, a 4-byte big-endian
//! schema id, the Avro body): the writer schema of an id is fetched once with `GET /schemas/ids/{id}` and added to
//! the [`WriterSchemas`], which keeps it for the life of the process (an id never changes its schema).

use std::path::PathBuf;
use std::time::Duration;

use crate::codec::WriterSchemas;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the registry is and how to reach it; every field is a flag and an environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryConfig {
    /// URL of a Confluent-compatible Schema Registry, for records framed as byte 0 + a 4-byte schema id; without
    /// it such records are dead-lettered as `unknown_schema_id`. Basic auth may be in the URL
    /// (`https://user:password@host`) or in COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO.
    #[arg(
        long = "schema-registry-url",
        env = "COSTSIM_SCHEMA_REGISTRY_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub schema_registry_url: Option<url::Url>,
    /// `USER:PASSWORD` for the registry's basic auth, as Confluent's clients take it (`basic.auth.user.info`);
    /// best set in the environment or the configuration file.
    #[arg(
        long = "schema-registry-basic-auth-user-info",
        env = "COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub schema_registry_basic_auth_user_info: Option<String>,
    /// A PEM file of CA certificates the registry's TLS certificate is checked against, besides the system's.
    #[arg(long = "schema-registry-ca-file", env = "COSTSIM_SCHEMA_REGISTRY_CA_FILE", value_name = "FILE")]
    pub schema_registry_ca_file: Option<PathBuf>,
}

/// Why the registry gave no schema.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The settings are unusable (a CA file that cannot be read, user info without a colon).
    #[error("schema registry settings: {0}")]
    Config(String),
    /// The registry has no schema of this id: a permanent answer.
    #[error("the schema registry has no schema with id {id}")]
    NotFound {
        /// The id.
        id: u32,
    },
    /// The registry could not be reached or failed: worth retrying.
    #[error("schema registry at {url}: {detail}")]
    Unavailable {
        /// The registry (without credentials).
        url: String,
        /// What failed.
        detail: String,
    },
    /// The registry answered with something that is not an Avro schema of this id.
    #[error("schema id {id} from the registry: {detail}")]
    Invalid {
        /// The id.
        id: u32,
        /// Why.
        detail: String,
    },
}

/// A registry client: a base URL, credentials, and a connection pool.
#[derive(Debug, Clone)]
pub struct Registry {
    base: url::Url,
    auth: Option<(String, Option<String>)>,
    client: reqwest::Client,
}

impl RegistryConfig {
    /// The client, or `None` when no registry is configured.
    pub fn client(&self) -> Result<Option<Registry>, RegistryError> {
        let Some(url) = &self.schema_registry_url else { return Ok(None) };
        let mut base = url.clone();
        let mut auth =
            (!url.username().is_empty()).then(|| (url.username().to_owned(), url.password().map(str::to_owned)));
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if let Some(info) = &self.schema_registry_basic_auth_user_info {
            let (user, password) = info.split_once(':').ok_or_else(|| {
                RegistryError::Config("COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be USER:PASSWORD".into())
            })?;
            auth = Some((user.to_owned(), Some(password.to_owned())));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("costsim-breaker/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT);
        if let Some(path) = &self.schema_registry_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| RegistryError::Config(format!("cannot read {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistryError::Config(format!("{}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| RegistryError::Config(e.to_string()))?;
        Ok(Some(Registry { base, auth, client }))
    }
}

impl Registry {
    /// The base URL with these path segments appended, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn unavailable(&self, detail: impl std::fmt::Display) -> RegistryError {
        RegistryError::Unavailable { url: self.base.to_string(), detail: detail.to_string() }
    }

    fn request(&self, method: reqwest::Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let request =
            self.client.request(method, self.url(segments)).header("Accept", "application/vnd.schemaregistry.v1+json");
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, password.as_ref()),
            None => request,
        }
    }

    /// The schema text of an id, by `GET /schemas/ids/{id}`.
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            schema: String,
            #[serde(rename = "schemaType")]
            schema_type: Option<String>,
        }
        let response = self
            .request(reqwest::Method::GET, &["schemas", "ids", &id.to_string()])
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(RegistryError::NotFound { id }),
            status => return Err(self.unavailable(format!("HTTP {status}"))),
        }
        let answer: Answer = response.json().await.map_err(|e| RegistryError::Invalid { id, detail: e.to_string() })?;
        match answer.schema_type.as_deref() {
            None | Some("AVRO") => Ok(answer.schema),
            Some(other) => Err(RegistryError::Invalid { id, detail: format!("a {other} schema, not Avro") }),
        }
    }

    /// Registers a schema under a subject (`POST /subjects/{subject}/versions`) and returns its id; registering
    /// the same schema again returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            id: u32,
        }
        let response = self
            .request(reqwest::Method::POST, &["subjects", subject, "versions"])
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(serde_json::json!({ "schema": schema }).to_string())
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(self.unavailable(format!("registering under {subject}: HTTP {status} {body}")));
        }
        let answer: Answer =
            response.json().await.map_err(|e| self.unavailable(format!("registering under {subject}: {e}")))?;
        Ok(answer.id)
    }

    /// Makes sure every id is in `writers`: fetches the missing ones. An id the registry does not have, or whose
    /// schema is not one, is left to the decoder, which dead-letters its records with the reason; a registry that
    /// cannot be reached is an error (the caller retries).
    pub async fn fetch_missing(&self, writers: &WriterSchemas, ids: Vec<u32>) -> Result<(), RegistryError> {
        for id in ids {
            if writers.knows_id(id) {
                continue;
            }
            match self.schema(id).await {
                Ok(text) => match writers.add_registered(id, &text) {
                    Ok(added) => {
                        let issues: Vec<String> = added.incompatibilities.iter().map(ToString::to_string).collect();
                        tracing::info!(id, fingerprint = format!("{:016x}", added.fingerprint),
                            resolvable = added.resolvable(), incompatibilities = ?issues,
                            "Fetched a writer schema from the registry.");
                    }
                    Err(err) => writers.reject_id(id, err.to_string()),
                },
                Err(RegistryError::NotFound { .. }) => {}
                Err(RegistryError::Invalid { detail, .. }) => writers.reject_id(id, detail),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, user_info: Option<&str>) -> RegistryConfig {
        RegistryConfig {
            schema_registry_url: Some(url.parse().unwrap()),
            schema_registry_basic_auth_user_info: user_info.map(str::to_owned),
            schema_registry_ca_file: None,
        }
    }

    #[test]
    fn no_url_means_no_registry() {
        assert!(RegistryConfig::default().client().unwrap().is_none());
    }

    #[test]
    fn credentials_come_from_the_url_or_the_user_info_and_never_stay_in_the_url() {
        let registry = config("https://alice:pw@registry.example/base/", None).client().unwrap().unwrap();
        assert_eq!(registry.auth, Some(("alice".to_owned(), Some("pw".to_owned()))));
        assert_eq!(registry.url(&["schemas", "ids", "7"]).as_str(), "https://registry.example/base/schemas/ids/7");
        let registry = config("https://alice:pw@registry.example", Some("bob:s3:cret")).client().unwrap().unwrap();
        assert_eq!(registry.auth, Some(("bob".to_owned(), Some("s3:cret".to_owned()))));
        assert!(!registry.unavailable("x").to_string().contains("pw"));
    }

    #[test]
    fn user_info_without_a_colon_and_an_unreadable_ca_file_are_refused() {
        assert!(matches!(config("http://r", Some("bob")).client(), Err(RegistryError::Config(_))));
        let mut bad_ca = config("http://r", None);
        bad_ca.schema_registry_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(bad_ca.client(), Err(RegistryError::Config(m)) if m.contains("/nonexistent/ca.pem")));
    }

    #[test]
    fn a_subject_is_one_path_segment() {
        let registry = config("http://registry.example", None).client().unwrap().unwrap();
        let url = registry.url(&["subjects", "costsim.breaker-state-value", "versions"]);
        assert_eq!(url.as_str(), "http://registry.example/subjects/costsim.breaker-state-value/versions");
        assert_eq!(registry.url(&["subjects", "a/b c"]).as_str(), "http://registry.example/subjects/a%2Fb%20c");
    }
}
