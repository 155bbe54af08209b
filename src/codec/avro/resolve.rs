//! Whether data written with one schema can be read with another, by the specification's schema-resolution rules,
//! decided once per writer from the two parsed schemas: every incompatibility, each with where it is.

use std::collections::HashSet;

use super::canonical::{Node, ParsedSchema};

/// One way a writer's data does not fit the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where, as a dotted path of field names from the root (`.` for the root).
    pub path: String,
    /// What does not fit.
    pub detail: String,
    /// True when only some records fail (a writer's enum symbol or union branch the reader lacks); false when no
    /// record of this writer can be read.
    pub per_record: bool,
}

impl std::fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = if self.per_record { " (records that use it fail)" } else { "" };
        write!(f, "{}: {}{scope}", self.path, self.detail)
    }
}

/// Every incompatibility of `writer` with `reader`; the writer is resolvable when none has `per_record == false`.
pub fn incompatibilities(writer: &ParsedSchema, reader: &ParsedSchema) -> Vec<Incompatibility> {
    let mut check = Check { writer, reader, out: Vec::new(), seen: HashSet::new() };
    check.node(&writer.root, &reader.root, ".");
    check.out
}

struct Check<'a> {
    writer: &'a ParsedSchema,
    reader: &'a ParsedSchema,
    out: Vec<Incompatibility>,
    /// Pairs of named types already compared, so recursive types end.
    seen: HashSet<(String, String)>,
}

/// A node's name for messages.
fn describe(node: &Node) -> String {
    match node {
        Node::Primitive(p) => (*p).to_owned(),
        Node::Record { name, .. } => format!("record {name}"),
        Node::Enum { name, .. } => format!("enum {name}"),
        Node::Fixed { name, size, .. } => format!("fixed {name} ({size} bytes)"),
        Node::Array(_) => "array".to_owned(),
        Node::Map(_) => "map".to_owned(),
        Node::Union(_) => "union".to_owned(),
        Node::Ref(name) => name.clone(),
    }
}

/// The unqualified part of a full name.
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Whether a writer's name is the reader's, or one of the reader's aliases (unqualified, as the specification says).
fn same_name(writer: &str, reader: &str, aliases: &[String]) -> bool {
    short(writer) == short(reader) || aliases.iter().any(|a| a == writer || short(a) == short(writer))
}

/// The primitive promotions the specification allows, writer → reader.
fn promotes(writer: &str, reader: &str) -> bool {
    writer == reader
        || matches!(
            (writer, reader),
            ("int", "long" | "float" | "double")
                | ("long", "float" | "double")
                | ("float", "double")
                | ("string", "bytes")
                | ("bytes", "string")
        )
}

impl<'a> Check<'a> {
    fn push(&mut self, path: &str, detail: String, per_record: bool) {
        self.out.push(Incompatibility { path: path.to_owned(), detail, per_record });
    }

    /// Whether a reader's union branch "matches" a writer's (non-union) schema, the test that picks the branch.
    fn matches(&self, w: &Node, r: &Node) -> bool {
        match (self.writer.deref(w), self.reader.deref(r)) {
            (Node::Primitive(a), Node::Primitive(b)) => promotes(a, b),
            (Node::Record { name: a, .. }, Node::Record { name: b, aliases, .. })
            | (Node::Enum { name: a, .. }, Node::Enum { name: b, aliases, .. }) => same_name(a, b, aliases),
            (Node::Fixed { name: a, size: sa, .. }, Node::Fixed { name: b, size: sb, aliases }) => {
                sa == sb && same_name(a, b, aliases)
            }
            (Node::Array(_), Node::Array(_)) | (Node::Map(_), Node::Map(_)) => true,
            _ => false,
        }
    }

    /// The first reader branch that matches `w`, preferring an exact primitive over a promotion as Java does.
    fn branch<'r>(&self, w: &Node, branches: &'r [Node]) -> Option<&'r Node> {
        let exact = |b: &&Node| matches!((self.writer.deref(w), self.reader.deref(b)), (Node::Primitive(a), Node::Primitive(c)) if a == c);
        branches.iter().find(exact).or_else(|| branches.iter().find(|b| self.matches(w, b)))
    }

    fn node(&mut self, w: &'a Node, r: &'a Node, path: &str) {
        let (w, r) = (self.writer.deref(w), self.reader.deref(r));
        match (w, r) {
            (Node::Union(wb), _) => {
                let mut readable = 0;
                for b in wb {
                    let target = match r {
                        Node::Union(rb) => self.branch(b, rb),
                        _ => self.matches(b, r).then_some(r),
                    };
                    match target {
                        Some(t) => {
                            readable += 1;
                            self.node(b, t, path);
                        }
                        None => self.push(
                            path,
                            format!(
                                "the writer's union branch {} has no match in the reader's {}",
                                describe(self.writer.deref(b)),
                                describe(r)
                            ),
                            true,
                        ),
                    }
                }
                if readable == 0 && !wb.is_empty() {
                    self.push(path, format!("no branch of the writer's union can be read as {}", describe(r)), false);
                }
            }
            (_, Node::Union(rb)) => match self.branch(w, rb) {
                Some(t) => self.node(w, t, path),
                None => self.push(
                    path,
                    format!("the writer's {} matches no branch of the reader's union", describe(w)),
                    false,
                ),
            },
            (Node::Primitive(a), Node::Primitive(b)) if promotes(a, b) => {}
            (Node::Record { name: wn, fields: wf, .. }, Node::Record { name: rn, aliases, fields: rf }) => {
                if !same_name(wn, rn, aliases) {
                    self.push(path, format!("the writer's record {wn} is not the reader's {rn}"), false);
                    return;
                }
                if !self.seen.insert((wn.clone(), rn.clone())) {
                    return;
                }
                for field in rf {
                    let sub = if path == "." { field.name.clone() } else { format!("{path}.{}", field.name) };
                    let found = wf.iter().find(|f| f.name == field.name || field.aliases.contains(&f.name));
                    match found {
                        Some(wfield) => self.node(&wfield.schema, &field.schema, &sub),
                        None if field.has_default => {}
                        None => self.push(
                            &sub,
                            "the writer has no such field and the reader's has no default".into(),
                            false,
                        ),
                    }
                }
            }
            (Node::Enum { name: wn, symbols: ws, .. }, Node::Enum { name: rn, aliases, symbols: rs, default }) => {
                if !same_name(wn, rn, aliases) {
                    self.push(path, format!("the writer's enum {wn} is not the reader's {rn}"), false);
                } else if default.is_none() {
                    for s in ws.iter().filter(|s| !rs.contains(s)) {
                        self.push(
                            path,
                            format!("the writer's symbol `{s}` is not the reader's and {rn} has no default"),
                            true,
                        );
                    }
                }
            }
            (Node::Fixed { .. }, Node::Fixed { .. }) if self.matches(w, r) => {}
            (Node::Array(wi), Node::Array(ri)) => self.node(wi, ri, &format!("{path}[]")),
            (Node::Map(wv), Node::Map(rv)) => self.node(wv, rv, &format!("{path}{{}}")),
            _ => self.push(path, format!("the writer's {} cannot be read as {}", describe(w), describe(r)), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> ParsedSchema {
        ParsedSchema::parse(&format!(r#"{{"type":"record","name":"n.R","fields":[{fields}]}}"#)).unwrap()
    }

    fn issues(writer: &str, reader: &str) -> Vec<String> {
        incompatibilities(&record(writer), &record(reader)).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_schema_resolves_against_itself() {
        let reader = ParsedSchema::parse(include_str!("../../../schemas/simulation_result.avsc")).unwrap();
        assert!(incompatibilities(&reader, &reader).is_empty());
    }

    #[test]
    fn added_writer_fields_are_ignored_and_missing_ones_need_a_reader_default() {
        assert!(
            issues(r#"{"name":"a","type":"long"},{"name":"new","type":"string"}"#, r#"{"name":"a","type":"long"}"#)
                .is_empty()
        );
        assert!(
            issues(
                r#"{"name":"a","type":"long"}"#,
                r#"{"name":"a","type":"long"},{"name":"b","type":["null","long"],"default":null}"#
            )
            .is_empty()
        );
        assert_eq!(
            issues(r#"{"name":"a","type":"long"}"#, r#"{"name":"a","type":"long"},{"name":"b","type":"long"}"#),
            ["b: the writer has no such field and the reader's has no default"]
        );
    }

    #[test]
    fn new_enum_symbols_need_a_reader_default_and_fail_only_their_records_without_one() {
        let w = r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["a","b","c"]}}"#;
        assert!(
            issues(w, r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"],"default":"a"}}"#).is_empty()
        );
        let found = incompatibilities(
            &record(w),
            &record(r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"]}}"#),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].per_record && found[0].detail.contains("`c`"), "{found:?}");
    }

    #[test]
    fn unions_widen_and_primitives_promote() {
        assert!(issues(r#"{"name":"a","type":"long"}"#, r#"{"name":"a","type":["null","long"]}"#).is_empty());
        assert!(issues(r#"{"name":"a","type":"int"}"#, r#"{"name":"a","type":"double"}"#).is_empty());
        let wider = incompatibilities(
            &record(r#"{"name":"a","type":["null","long","string"]}"#),
            &record(r#"{"name":"a","type":["null","long"]}"#),
        );
        assert_eq!(wider.len(), 1);
        assert!(wider[0].per_record, "{wider:?}");
    }

    #[test]
    fn a_changed_type_is_reported_with_its_path() {
        assert_eq!(
            issues(
                r#"{"name":"a","type":"string"},{"name":"b","type":"boolean"}"#,
                r#"{"name":"a","type":"long"},{"name":"b","type":"long"}"#
            ),
            ["a: the writer's string cannot be read as long", "b: the writer's boolean cannot be read as long"]
        );
    }
}
