//! The canonical form and fingerprint against the Avro project's shared test vectors and the specification's rules.

use super::*;

/// Inputs, canonical forms and fingerprints from Apache Avro's shared test data (`schema-tests.txt`), which
/// every implementation of the specification is checked against.
const VECTORS: &[(&str, &str, Option<i64>)] = &[
    (r#""null""#, r#""null""#, Some(7195948357588979594)),
    (r#"{"type":"null"}"#, r#""null""#, None),
    (r#""boolean""#, r#""boolean""#, Some(-6970731678124411036)),
    (r#""int""#, r#""int""#, Some(8247732601305521295)),
    (r#"{"type":"long"}"#, r#""long""#, Some(-3434872931120570953)),
    (r#""float""#, r#""float""#, Some(5583340709985441680)),
    (r#""double""#, r#""double""#, Some(-8181574048448539266)),
    (r#""bytes""#, r#""bytes""#, Some(5746618253357095269)),
    (r#"{"type":"string"}"#, r#""string""#, Some(-8142146995180207161)),
    ("[  ]", "[]", Some(-1241056759729112623)),
    (r#"[ "int"  ]"#, r#"["int"]"#, Some(-5232228896498058493)),
    (r#"[ "int" , {"type":"boolean"} ]"#, r#"["int","boolean"]"#, Some(5392556393470105090)),
    (
        r#"{"fields":[], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}"#,
        r#"{"name":"x.y.foo","type":"record","fields":[]}"#,
        Some(5916914534497305771),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}"#,
        r#"{"name":"a.b.foo","type":"record","fields":[]}"#,
        Some(-4616218487480524110),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}"#,
        Some(7843277075252814651),
    ),
    (
        r#"{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},
            {"order":"descending","name":"f2","doc":"Hello","type":"int"}], "type":"record", "name":"foo" }"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}"#,
        Some(-4860222112080293046),
    ),
    (
        r#"{"type":"enum", "name":"foo", "symbols":["A1"]}"#,
        r#"{"name":"foo","type":"enum","symbols":["A1"]}"#,
        Some(-6342190197741309591),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}"#,
        r#"{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}"#,
        Some(-4448647247586288245),
    ),
    (
        r#"{"name":"foo","type":"fixed","size":15}"#,
        r#"{"name":"foo","type":"fixed","size":15}"#,
        Some(1756455273707447556),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}"#,
        r#"{"name":"x.y.z.foo","type":"fixed","size":32}"#,
        Some(-3064184465700546786),
    ),
    (r#"{ "items":{"type":"null"}, "type":"array"}"#, r#"{"type":"array","items":"null"}"#, Some(-589620603366471059)),
    (r#"{ "values":"string", "type":"map"}"#, r#"{"type":"map","values":"string"}"#, Some(-8732877298790414990)),
    (
        r#"{"name":"PigValue","type":"record",
            "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}"#,
        r#"{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}"#,
        Some(-1759257747318642341),
    ),
];

#[test]
fn the_canonical_forms_and_fingerprints_of_the_shared_avro_test_vectors_are_reproduced() {
    for (input, canonical, fingerprint) in VECTORS {
        let schema = ParsedSchema::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(schema.canonical_form(), *canonical, "{input}");
        if let Some(fp) = fingerprint {
            assert_eq!(schema.fingerprint() as i64, *fp, "{input}");
        }
    }
}

#[test]
fn a_logical_type_is_written_as_its_primitive() {
    let schema = ParsedSchema::parse(
        r#"{"type":"record","name":"r","fields":[{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
    )
    .unwrap();
    assert_eq!(schema.canonical_form(), r#"{"name":"r","type":"record","fields":[{"name":"at","type":"long"}]}"#);
}

#[test]
fn a_named_type_is_written_once_then_referred_to_by_full_name() {
    let schema = ParsedSchema::parse(
        r#"{"type":"record","name":"r","namespace":"n","fields":[
            {"name":"a","type":{"type":"enum","name":"E","symbols":["x"],"default":"x"}},
            {"name":"b","type":["null","E"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        schema.canonical_form(),
        r#"{"name":"n.r","type":"record","fields":[{"name":"a","type":{"name":"n.E","type":"enum","symbols":["x"]}},{"name":"b","type":["null","n.E"]}]}"#
    );
}

#[test]
fn escaped_characters_become_themselves() {
    let schema = ParsedSchema::parse(r#"{"type":"enum","name":"\u0066oo","symbols":["\u00e9"]}"#).unwrap();
    assert_eq!(schema.canonical_form(), r#"{"name":"foo","type":"enum","symbols":["é"]}"#);
}

#[test]
fn schemas_the_specification_forbids_are_refused() {
    for bad in [
        "{",
        "42",
        r#"{"type":"record","name":"r"}"#,
        r#"{"type":"record","name":"r","fields":[{"name":"a","type":"Nope"}]}"#,
        r#"["int", {"type":"enum","name":"E","symbols":["a"]}, {"type":"enum","name":"E","symbols":["b"]}]"#,
        r#"{"type":"enum","name":"E","symbols":["a"],"default":"b"}"#,
        r#"{"type":"fixed","name":"F"}"#,
    ] {
        assert!(ParsedSchema::parse(bad).is_err(), "{bad}");
    }
}
