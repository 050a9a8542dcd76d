//! The last touches on poem-openapi's document, for what its derives cannot say, so that the
//! spec states exactly what the server accepts and generators read it cleanly:
//!
//! - A described reference is written `allOf: [{$ref}], description` (poem-openapi puts the
//!   description in a second `allOf` member, which openapi-python-client refuses).
//! - The variants of a tagged union (`JobRequest_EnqueueEmail`: `allOf` of the kind's object and
//!   the `kind` tag) become one object, so that it can be closed (below).
//! - Every object a request carries is closed (`additionalProperties: false`): the server
//!   refuses unknown fields, so that a misspelt option is an error, not silently ignored.
//! - The text branch of `HashData` gets its length bound (a union variant takes no validator).
//! - An email's `body` states that it holds no NUL character as `not: {pattern: "\x00"}`
//!   (a `^[^\x00]*$` pattern on a 256 Ki-character string defeats schemathesis' generator).
//!
//! Also: the method table behind `405` answers' `Allow` header.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

/// Applies the touches to poem-openapi's document (JSON text); returns pretty JSON.
pub fn finish(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    collapse_described_refs(&mut doc);
    flatten_variants(&mut doc);
    close_request_objects(&mut doc);
    bound_hash_text(&mut doc);
    name_time_zones(&mut doc);
    forbid_nul_in_email_bodies(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

fn collapse_described_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(all)) = map.get("allOf")
                && all.len() == 2
                && all[0].get("$ref").is_some()
                && all[1]
                    .as_object()
                    .is_some_and(|m| m.keys().all(|k| k == "description"))
            {
                let description = all[1]["description"].clone();
                let reference = all[0].clone();
                map.insert("allOf".into(), json!([reference]));
                map.insert("description".into(), description);
            }
            map.values_mut().for_each(collapse_described_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(collapse_described_refs),
        _ => {}
    }
}

fn schema_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/components/schemas/")
}

/// `allOf: [{$ref: X}, {type: object, ...}]` components become one object.
fn flatten_variants(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let mut merged = Vec::new();
    for (name, schema) in &schemas {
        let Some(all) = schema.get("allOf").and_then(Value::as_array) else {
            continue;
        };
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut description = None;
        let mut ok = !all.is_empty();
        // The tag (the inline member) first, then the kind's own fields.
        let (inline, refs): (Vec<&Value>, Vec<&Value>) =
            all.iter().partition(|m| m.get("$ref").is_none());
        for member in inline.into_iter().chain(refs) {
            let part = match member.get("$ref").and_then(Value::as_str) {
                Some(r) => match schema_name(r).and_then(|n| schemas.get(n)) {
                    Some(target) => {
                        description = description.or_else(|| target.get("description").cloned());
                        target
                    }
                    None => {
                        ok = false;
                        break;
                    }
                },
                None => member,
            };
            if part.get("type").and_then(Value::as_str) != Some("object") {
                ok = false;
                break;
            }
            if let Some(p) = part.get("properties").and_then(Value::as_object) {
                properties.extend(p.clone());
            }
            if let Some(r) = part.get("required").and_then(Value::as_array) {
                required.extend(r.iter().cloned());
            }
        }
        if !ok {
            continue;
        }
        let mut object = Map::new();
        object.insert("type".into(), json!("object"));
        if let Some(d) = description.or_else(|| schema.get("description").cloned()) {
            object.insert("description".into(), d);
        }
        object.insert("required".into(), Value::Array(required));
        object.insert("properties".into(), Value::Object(properties));
        merged.push((name.clone(), Value::Object(object)));
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in merged {
            schemas.insert(name, schema);
        }
    }
}

/// Names of the component schemas reachable from `v`.
fn referenced(v: &Value, schemas: &Map<String, Value>, seen: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(schema_name)
                && seen.insert(name.to_owned())
                && let Some(target) = schemas.get(name)
            {
                referenced(target, schemas, seen);
            }
            for (k, child) in map {
                // A discriminator's mapping names the variants already listed in `oneOf`.
                if k != "discriminator" {
                    referenced(child, schemas, seen);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| referenced(i, schemas, seen)),
        _ => {}
    }
}

fn close_request_objects(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for item in paths.values().filter_map(Value::as_object) {
            for op in item.values() {
                if let Some(body) = op.get("requestBody") {
                    referenced(body, &schemas, &mut names);
                }
            }
        }
    }
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in names {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name)
            && schema.get("type").and_then(Value::as_str) == Some("object")
            && schema.contains_key("properties")
        {
            schema
                .entry("additionalProperties")
                .or_insert(Value::Bool(false));
        }
    }
}

/// `HashData` is a string or an object (poem-openapi types every union `object`), and its
/// text branch has a length bound.
fn bound_hash_text(doc: &mut Value) {
    if let Some(Value::Object(union)) = doc.pointer_mut("/components/schemas/HashData") {
        union.remove("type");
    }
    if let Some(Value::Array(branches)) = doc.pointer_mut("/components/schemas/HashData/oneOf") {
        for branch in branches {
            if branch.get("type").and_then(Value::as_str) == Some("string")
                && let Some(map) = branch.as_object_mut()
            {
                map.insert("maxLength".into(), json!(crate::jobs::hash::MAX_TEXT_CHARS));
                map.insert(
                    "description".into(),
                    json!("Text, hashed as its UTF-8 bytes."),
                );
            }
        }
    }
}

fn forbid_nul_in_email_bodies(doc: &mut Value) {
    let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    for schema in schemas.values_mut() {
        let Some(Value::Object(props)) = schema.get_mut("properties") else {
            continue;
        };
        if !(props.contains_key("to") && props.contains_key("subject")) {
            continue;
        }
        if let Some(Value::Object(body)) = props.get_mut("body") {
            body.insert("not".into(), json!({"pattern": "\\x00"}));
        }
    }
}

/// Generators name enum members after their values; `Etc/GMT+1` and `Etc/GMT-1` would both
/// become `ETCGMT1`. `x-enum-varnames` gives every zone a distinct, readable name
/// (`EUROPE_BERLIN`, `ETC_GMT_PLUS_1`, `ETC_GMT_MINUS_1`).
fn name_time_zones(doc: &mut Value) {
    let Some(Value::Object(schema)) = doc.pointer_mut("/components/schemas/TimeZone") else {
        return;
    };
    let Some(Value::Array(values)) = schema.get("enum") else {
        return;
    };
    let names: Vec<Value> = values
        .iter()
        .filter_map(Value::as_str)
        .map(|zone| Value::String(zone_var_name(zone)))
        .collect();
    schema.insert("x-enum-varnames".into(), Value::Array(names));
}

fn zone_var_name(zone: &str) -> String {
    let mut out = String::new();
    for c in zone.chars() {
        match c {
            '+' => out.push_str("_PLUS_"),
            '-' if zone.contains("GMT") => out.push_str("_MINUS_"),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_uppercase()),
            _ => out.push('_'),
        }
    }
    let mut collapsed = String::new();
    for c in out.chars() {
        if !(c == '_' && collapsed.ends_with('_')) {
            collapsed.push(c);
        }
    }
    collapsed.trim_matches('_').to_owned()
}

/// The methods each path of a document allows, for the `Allow` header of a 405.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    /// Path templates split into segments (`{id}` matches any one segment), with methods.
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl Methods {
    pub fn from_spec(spec: &str, extra: &[(&str, &str)]) -> Self {
        let doc: Value = serde_json::from_str(spec).unwrap_or_default();
        let mut table: HashMap<String, BTreeSet<String>> = HashMap::new();
        if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in paths {
                let methods = item
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                table.insert(path.clone(), methods);
            }
        }
        for (path, method) in extra {
            table
                .entry((*path).to_owned())
                .or_default()
                .insert((*method).to_owned());
        }
        let routes = table
            .into_iter()
            .map(|(path, methods)| {
                let mut methods: Vec<String> = methods.into_iter().collect();
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".to_owned());
                }
                (segments(&path), methods)
            })
            .collect();
        Self { routes }
    }

    /// The methods of the route `path` belongs to (the one with the most literal segments,
    /// as the router prefers), e.g. `GET, HEAD`.
    pub fn allowed(&self, path: &str) -> Option<String> {
        let parts = segments(path);
        self.routes
            .iter()
            .filter(|(template, _)| {
                template.len() == parts.len()
                    && template
                        .iter()
                        .zip(&parts)
                        .all(|(t, p)| t.starts_with('{') || t == p)
            })
            .max_by_key(|(template, _)| template.iter().filter(|t| !t.starts_with('{')).count())
            .map(|(_, methods)| methods.join(", "))
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_zone_gets_a_distinct_member_name() {
        let names: BTreeSet<String> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| zone_var_name(tz.name()))
            .collect();
        assert_eq!(names.len(), chrono_tz::TZ_VARIANTS.len());
        assert_eq!(zone_var_name("Etc/GMT+1"), "ETC_GMT_PLUS_1");
        assert_eq!(zone_var_name("Etc/GMT-1"), "ETC_GMT_MINUS_1");
        assert_eq!(
            zone_var_name("America/Port-au-Prince"),
            "AMERICA_PORT_AU_PRINCE"
        );
    }

    #[test]
    fn allowed_methods_follow_the_most_literal_route() {
        let spec = json!({"paths": {
            "/v1/jobs/{id}": {"get": {}},
            "/v1/jobs/email": {"post": {}},
            "/v1/jobs": {"get": {}},
        }})
        .to_string();
        let m = Methods::from_spec(&spec, &[("/metrics", "GET")]);
        assert_eq!(m.allowed("/v1/jobs/email").as_deref(), Some("POST"));
        assert_eq!(m.allowed("/v1/jobs/0190").as_deref(), Some("GET, HEAD"));
        assert_eq!(m.allowed("/metrics").as_deref(), Some("GET, HEAD"));
        assert_eq!(m.allowed("/nope"), None);
    }

    #[test]
    fn variants_are_flattened_and_request_objects_closed() {
        let spec = json!({
            "paths": {"/b": {"post": {"requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Batch"}}}}}}},
            "components": {"schemas": {
                "Batch": {"type": "object", "properties": {"jobs": {"type": "array",
                    "items": {"$ref": "#/components/schemas/Req"}}}},
                "Req": {"type": "object", "oneOf": [{"$ref": "#/components/schemas/Req_A"}],
                    "discriminator": {"propertyName": "kind"}},
                "Req_A": {"allOf": [{"$ref": "#/components/schemas/A"},
                    {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["a"]}}}]},
                "A": {"type": "object", "description": "An A.", "required": ["x"],
                    "properties": {"x": {"allOf": [{"$ref": "#/components/schemas/X"}, {"description": "the x"}]}}},
                "X": {"type": "string", "enum": ["y"]},
                "Out": {"type": "object", "properties": {"n": {"type": "integer"}}}
            }}
        })
        .to_string();
        let doc: Value = serde_json::from_str(&finish(&spec)).unwrap();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["Req_A"]["required"], json!(["kind", "x"]));
        assert_eq!(s["Req_A"]["description"], "An A.");
        assert_eq!(s["Req_A"]["additionalProperties"], false);
        assert_eq!(s["Batch"]["additionalProperties"], false);
        assert!(
            s["Out"].get("additionalProperties").is_none(),
            "responses stay open"
        );
        assert_eq!(
            s["A"]["properties"]["x"],
            json!({"allOf": [{"$ref": "#/components/schemas/X"}], "description": "the x"})
        );
    }
}

#[cfg(test)]
mod agreement {
    //! The patterns in the spec are the ones the server's own checks implement.
    use serde_json::Value;

    use crate::domain::cron;
    use crate::jobs::email;

    async fn schemas() -> Value {
        let spec: Value = serde_json::from_str(&crate::api::spec_json()).unwrap();
        spec["components"]["schemas"].clone()
    }

    #[tokio::test]
    async fn cron_expressions() {
        let s = schemas().await;
        let pattern = s["CreateSchedule"]["properties"]["cron"]["pattern"]
            .as_str()
            .unwrap();
        assert_eq!(pattern, cron::PATTERN);
    }

    #[tokio::test]
    async fn recipients_and_subjects() {
        let s = schemas().await;
        let to = s["EnqueueEmail"]["properties"]["to"]["pattern"]
            .as_str()
            .unwrap();
        assert_eq!(to, email::TO_PATTERN);
        let subject = s["EnqueueEmail"]["properties"]["subject"]["pattern"]
            .as_str()
            .unwrap();
        assert_eq!(subject, email::SUBJECT_PATTERN);
        let re = regex::Regex::new(to).unwrap();
        for sample in [
            "a@b",
            "ada@example.com",
            "first.last+tag@mail.example.org",
            "x_y!#$%&'*+/=?^`{|}~-@0-9.io",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@[127.0.0.1]",
            "\"a b\"@example.com",
            "a@b@c",
            " a@b",
            "a@b ",
            "a@",
            "@b",
            "ab",
            "a@bb-b.c-c",
            &format!("a@{}.com", "x".repeat(63)),
            &format!("a@{}.com", "x".repeat(64)),
        ] {
            assert_eq!(
                re.is_match(sample),
                email::valid_address(sample),
                "{sample:?}"
            );
        }
    }
}
