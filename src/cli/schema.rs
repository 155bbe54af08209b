//! `schema`: the specification's fingerprint and Parsing Canonical Form of a schema file, and whether a writer
//! schema resolves against the reader; and the writer-schema settings of the commands that read the results topic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::codec::{ParsedSchema, SchemaKind, WriterSchemas, incompatibilities};

/// Where the commands that read simulation results from Kafka find writer schemas besides `schemas/`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchemaArgs {
    /// A directory of writer schemas (`*.avsc`) of simulation results, known by their fingerprints: records they
    /// wrote are resolved against `schemas/simulation_result.avsc` by Avro's rules (a schema that cannot be is
    /// kept too, so its records are dead-lettered as `incompatible_schema` with the reason).
    #[arg(long = "schema-dir", env = "COSTSIM_SCHEMA_DIR", value_name = "DIR")]
    pub schema_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registry: crate::registry::RegistryConfig,
}

impl SchemaArgs {
    /// The registry client, if one is configured.
    pub fn registry(&self) -> anyhow::Result<Option<crate::registry::Registry>> {
        Ok(self.registry.client()?)
    }

    /// The writer schemas, each checked against the reader once; says in the log what each turned out to be.
    pub fn writers(&self) -> anyhow::Result<WriterSchemas> {
        let (writers, added) = WriterSchemas::load(self.schema_dir.as_deref())
            .with_context(|| format!("cannot load the writer schemas of {}", describe(self.schema_dir.as_deref())))?;
        for a in added {
            let fingerprint = format!("{:016x}", a.fingerprint);
            if a.resolvable() {
                let per_record: Vec<String> = a.incompatibilities.iter().map(ToString::to_string).collect();
                tracing::info!(origin = %a.origin, fingerprint, per_record_failures = ?per_record,
                    "Writer schema resolves against the reader.");
            } else {
                let all: Vec<String> = a.incompatibilities.iter().map(ToString::to_string).collect();
                tracing::warn!(origin = %a.origin, fingerprint, incompatibilities = ?all,
                    "Writer schema cannot be resolved against the reader; its records will be dead-lettered.");
            }
        }
        Ok(writers)
    }
}

fn describe(dir: Option<&Path>) -> String {
    dir.map_or_else(|| "schemas/".to_owned(), |d| d.display().to_string())
}

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaCommandArgs {
    /// What to do.
    #[command(subcommand)]
    command: SchemaCommand,
}

/// The `schema` subcommands.
#[derive(Debug, clap::Subcommand)]
enum SchemaCommand {
    /// Print the CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, as the specification defines
    /// both: the number in hex, then the 8 bytes of a single-object header (little-endian) in hex.
    Fingerprint {
        /// An Avro schema file (`.avsc`).
        file: PathBuf,
    },
    /// Print the schema's Parsing Canonical Form.
    Canonical {
        /// An Avro schema file (`.avsc`).
        file: PathBuf,
    },
    /// Check that a writer schema resolves against the reader (`schemas/simulation_result.avsc`): prints each
    /// incompatibility and exits non-zero when records of it cannot be read.
    Check {
        /// The writer's schema file.
        writer: PathBuf,
    },
}

/// Runs `schema`.
pub fn run(args: SchemaCommandArgs) -> anyhow::Result<ExitCode> {
    let read = |path: &Path| -> anyhow::Result<ParsedSchema> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        ParsedSchema::parse(&text).with_context(|| format!("{} is not an Avro schema", path.display()))
    };
    match args.command {
        SchemaCommand::Fingerprint { file } => {
            let fp = read(&file)?.fingerprint();
            let header: String = fp.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
            println!("{fp:016x} {header}");
        }
        SchemaCommand::Canonical { file } => println!("{}", read(&file)?.canonical_form()),
        SchemaCommand::Check { writer } => {
            let parsed = read(&writer)?;
            let reader = ParsedSchema::parse(SchemaKind::SimulationResult.text()).expect("the reader schema parses");
            let found = incompatibilities(&parsed, &reader);
            for i in &found {
                println!("{}: {i}", if i.per_record { "some records" } else { "incompatible" });
            }
            let fatal = found.iter().filter(|i| !i.per_record).count();
            if fatal > 0 {
                eprintln!(
                    "{} cannot be resolved against schemas/simulation_result.avsc: {fatal} incompatibilities",
                    writer.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{} ({:016x}) resolves against schemas/simulation_result.avsc{}",
                writer.display(),
                parsed.fingerprint(),
                if found.is_empty() { "" } else { ", except records that use what is listed above" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
