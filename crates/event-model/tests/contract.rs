//! `docs/events.md` and `docs/events.schema.json` agree with each other and with the parser:
//! every example is valid under the schema and accepted by `parse_event`, every type has an
//! example, and the schema rejects what the parser rejects for the common cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use event_model::event::EVENT_TYPES;
use event_model::{Limits, parse_event};
use serde_json::Value;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn examples() -> Vec<Value> {
    let text = std::fs::read_to_string(docs().join("events.md")).unwrap();
    text.split("```json")
        .skip(1)
        .map(|block| {
            let json = block.split("```").next().unwrap();
            serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("example is not JSON: {e}\n{json}"))
        })
        .collect()
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(docs().join("events.schema.json")).unwrap())
            .unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

#[test]
fn every_example_is_valid_under_the_schema_and_the_parser() {
    let validator = validator();
    let now = "2026-11-25T00:00:00Z".parse().unwrap();
    let mut types = BTreeSet::new();
    for example in examples() {
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{example}: {errors:?}");
        let (event, _) = parse_event(
            &serde_json::to_vec(&example).unwrap(),
            &Limits::default(),
            now,
        )
        .unwrap_or_else(|r| panic!("{example}: {r}"));
        types.insert(event.type_name());
    }
    let all: BTreeSet<&str> = EVENT_TYPES.iter().copied().collect();
    assert_eq!(types, all, "every type has an example in docs/events.md");
}

#[test]
fn the_schema_rejects_what_the_parser_rejects() {
    let validator = validator();
    let now = "2026-11-25T00:00:00Z".parse().unwrap();
    let base = examples()
        .into_iter()
        .find(|e| e["type"] == "post.created")
        .unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "no event_id",
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("event_id"))),
        ),
        (
            "unknown type",
            Box::new(|v| v["type"] = "post.liked".into()),
        ),
        (
            "no offset",
            Box::new(|v| v["occurred_at"] = "2026-03-02T09:06:00".into()),
        ),
        (
            "no text",
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("text"))),
        ),
        ("text not a string", Box::new(|v| v["text"] = 5.into())),
        (
            "unsafe company",
            Box::new(|v| v["conversation"]["owner_company_id"] = "../x".into()),
        ),
        (
            "direct without companies",
            Box::new(|v| {
                drop(
                    v["conversation"]
                        .as_object_mut()
                        .unwrap()
                        .remove("member_company_ids"),
                )
            }),
        ),
    ];
    for (name, mutate) in mutations {
        let mut bad = base.clone();
        mutate(&mut bad);
        assert!(!validator.is_valid(&bad), "schema accepted: {name}");
        assert!(
            parse_event(&serde_json::to_vec(&bad).unwrap(), &Limits::default(), now).is_err(),
            "parser accepted: {name}"
        );
    }
    let mut extra = base;
    extra["new_field_from_the_future"] = serde_json::json!({"x": 1});
    assert!(validator.is_valid(&extra), "unknown fields are allowed");
}
