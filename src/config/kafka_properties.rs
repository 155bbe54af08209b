//! Kafka client properties from a file in Java properties format (`--kafka-config`, as Kafka's own
//! `--command-config`), with the two things a Java client's file holds that librdkafka names differently.

use std::path::{Path, PathBuf};

/// The properties of a `--kafka-config` file, read when the flag is parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct PropertiesFile {
    /// The file.
    pub path: PathBuf,
    /// Its properties, sorted by name, with `sasl.jaas.config` already translated.
    pub entries: Vec<(String, String)>,
}

// Values may be passwords: Debug shows the names only.
impl std::fmt::Debug for PropertiesFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("PropertiesFile").field("path", &self.path).field("properties", &names).finish()
    }
}

impl PropertiesFile {
    /// Reads and checks the file: clap's value parser of `--kafka-config`.
    pub fn read(path: &str) -> Result<PropertiesFile, String> {
        let path = PathBuf::from(path);
        let file = std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let map = java_properties::read(std::io::BufReader::new(file))
            .map_err(|e| format!("{} is not a Java properties file: {e}", path.display()))?;
        let mut entries: Vec<(String, String)> = map.into_iter().collect();
        entries.sort();
        let entries = translate(&path, entries)?;
        Ok(PropertiesFile { path, entries })
    }
}

/// librdkafka has no `sasl.jaas.config`: a PLAIN or SCRAM login module's `username` and `password` become
/// `sasl.username` and `sasl.password`, so a Java client's file works as it is. JKS trust stores have no
/// librdkafka equivalent; they are refused with what to use instead.
fn translate(path: &Path, entries: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match key.as_str() {
            "sasl.jaas.config" => {
                let module = value.split_whitespace().next().unwrap_or_default();
                if !(module.ends_with(".PlainLoginModule") || module.ends_with(".ScramLoginModule")) {
                    return Err(format!(
                        "{}: sasl.jaas.config with `{module}` has no librdkafka equivalent; set librdkafka's own \
                         properties instead (for OAUTHBEARER: sasl.oauthbearer.method=oidc, \
                         sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret, sasl.oauthbearer.token.endpoint.url)",
                        path.display()
                    ));
                }
                for (option, property) in [("username", "sasl.username"), ("password", "sasl.password")] {
                    let Some(found) = jaas_option(&value, option) else {
                        return Err(format!("{}: sasl.jaas.config has no {option}=\"...\"", path.display()));
                    };
                    out.push((property.to_owned(), found));
                }
            }
            "ssl.truststore.location" | "ssl.truststore.password" | "ssl.truststore.type" => {
                return Err(format!(
                    "{}: {key} is a Java trust store, which librdkafka cannot read; give the CA certificate as PEM \
                     with ssl.ca.location (keytool -exportcert -rfc converts a JKS entry)",
                    path.display()
                ));
            }
            "bootstrap.servers" => return Err(bootstrap_refused(&path.display().to_string())),
            _ => out.push((key, value)),
        }
    }
    Ok(out)
}

/// Why `bootstrap.servers` is refused in a properties layer (`where` names it): the brokers have their own
/// setting, and its flag must keep winning over files and the environment.
pub fn bootstrap_refused(place: &str) -> String {
    format!(
        "{place}: bootstrap.servers is not taken from Kafka properties; set the brokers with KAFKA_BROKERS, --brokers \
         or kafka_brokers in the configuration file"
    )
}

/// The quoted value of `option="..."` in a JAAS configuration line.
fn jaas_option(config: &str, option: &str) -> Option<String> {
    let mut rest = config;
    while let Some(at) = rest.find(option) {
        let before_ok = at == 0 || rest[..at].ends_with(|c: char| c.is_whitespace());
        let after = rest[at + option.len()..].trim_start();
        if before_ok && let Some(after) = after.strip_prefix('=') {
            let after = after.trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = after.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?),
                    '"' => return Some(value),
                    c => value.push(c),
                }
            }
            return None;
        }
        rest = &rest[at + option.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (crate::config::tests::TempFile, Result<PropertiesFile, String>) {
        let tmp = crate::config::tests::TempFile::with("properties", text);
        let read = PropertiesFile::read(tmp.path().to_str().unwrap());
        (tmp, read)
    }

    #[test]
    fn a_java_clients_command_config_reads_as_librdkafka_properties() {
        let (_tmp, read) = file(
            "# from kafka-console-producer --command-config\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism = SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  \
               username=\"costsim\" password=\"s3cr=et\";\n",
        );
        let read = read.unwrap();
        assert_eq!(
            read.entries,
            [
                ("sasl.username", "costsim"),
                ("sasl.password", "s3cr=et"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("security.protocol", "SASL_SSL"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(!format!("{read:?}").contains("s3cr"), "Debug shows no value");
    }

    #[test]
    fn a_jks_trust_store_is_refused_with_what_to_use_instead() {
        let (_tmp, read) = file("ssl.truststore.location=/etc/kafka/truststore.jks\n");
        let err = read.unwrap_err();
        assert!(err.contains("ssl.ca.location"), "{err}");
    }

    #[test]
    fn a_jaas_login_module_librdkafka_cannot_use_is_refused_by_name() {
        let (_tmp, read) = file("sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required;\n");
        assert!(read.unwrap_err().contains("Krb5LoginModule"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = PropertiesFile::read("/nonexistent/client.properties").unwrap_err();
        assert!(err.contains("/nonexistent/client.properties"), "{err}");
    }
}
