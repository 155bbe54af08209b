//! A Kafka client we did not write, for interoperability checks: confluent-kafka from PyPI (its own librdkafka
//! build) in the venv `scripts/stack up` makes, found through `COSTSIM_TEST_PYTHON` (`scripts/stack env` exports
//! it). The driver is `tests/python/kafka_client.py`.

use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kafka_client.py");

/// The venv's python; the test fails, telling how to get one, when it is not set up.
pub fn python() -> String {
    std::env::var("COSTSIM_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "COSTSIM_TEST_PYTHON is not set: run the tests with scripts/test, or \
             `eval \"$(scripts/stack env)\"` after `scripts/stack up` (which makes the venv)"
        )
    })
}

/// What confluent-kafka reported for a produce: deliveries, failures and the first errors.
#[derive(Debug, serde::Deserialize)]
pub struct Produced {
    pub delivered: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

fn config_json(config: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        config.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned()))).collect();
    serde_json::Value::Object(map).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// Produces keyed records with confluent-kafka and these librdkafka properties; waits for every delivery.
pub async fn produce(config: &[(&str, &str)], topic: &str, records: &[(Vec<u8>, Vec<u8>)]) -> Produced {
    let mut child = tokio::process::Command::new(python())
        .args([CLIENT, "produce", &config_json(config), topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python runs");
    let mut input = String::new();
    for (key, value) in records {
        input.push_str(&format!("{} {}\n", hex(key), hex(value)));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("confluent-kafka's producer printed no summary ({e}): {stdout}{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// Reads `count` records of a topic from its beginning with confluent-kafka; `Err` with its stderr when fewer
/// arrived within `seconds`.
pub async fn consume(
    config: &[(&str, &str)],
    topic: &str,
    count: usize,
    seconds: u64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let out = tokio::process::Command::new(python())
        .args([CLIENT, "consume", &config_json(config), topic, &count.to_string(), &seconds.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("the venv's python runs");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (unhex(k), unhex(v)))
        .collect::<Vec<_>>();
    if out.status.success() {
        Ok(records)
    } else {
        Err(format!("{} of {count} records: {}", records.len(), String::from_utf8_lossy(&out.stderr)))
    }
}
