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
//! - Every property has a description: the discriminator (`kind`) of each union variant, which
//!   poem-openapi generates, and the few fields of types declared outside the API (`jobs::*`)
//!   that carry no doc comment get theirs here.
//!
//! - Every schema has an `example`: the API's own objects get theirs from `#[oai(example)]`;
//!   here the ones poem-openapi generates or that are declared outside the API: the union
//!   variants (their kind's example with the `kind` tag), the unions (their first variant's),
//!   the results of `jobs::*` and the enums.
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
    describe_foreign_fields(&mut doc);
    flatten_variants(&mut doc);
    describe_discriminators(&mut doc);
    close_request_objects(&mut doc);
    bound_hash_text(&mut doc);
    name_time_zones(&mut doc);
    forbid_nul_in_email_bodies(&mut doc);
    add_examples(&mut doc);
    describe_plain_responses(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

/// What the `200` answer of each operation that returns a plain payload carries. poem-openapi
/// describes responses only for `ApiResponse` enums; without this those answers would have an
/// empty description (and generated SDKs an empty docstring).
const OK_RESPONSES: [(&str, &str); 19] = [
    ("healthz", "The process is up."),
    (
        "list_jobs",
        "One page of the matching jobs and the cursor of the next page.",
    ),
    (
        "count_jobs",
        "How many jobs match the filter, in all, by status and by kind.",
    ),
    (
        "retry_jobs",
        "How many jobs matched and how many were queued again (none on a dry run).",
    ),
    ("get_job", "The job as it is now."),
    ("cancel_job", "The job, now `cancelled`."),
    ("list_job_events", "The job's events, oldest first."),
    (
        "retry_job",
        "The job, `queued` again with a fresh attempt count.",
    ),
    (
        "wait_job",
        "The job: finished, or as it is when the timeout ran out.",
    ),
    ("list_keys", "Every key, newest first; never a token."),
    ("revoke_key", "The key, now revoked."),
    ("list_queues", "The controls of every kind's queue."),
    ("pause_queue", "The queue, now paused."),
    ("set_queue_rate_limit", "The queue with its new rate limit."),
    ("resume_queue", "The queue, no longer paused."),
    (
        "list_schedules",
        "Every schedule with its job and its next tick.",
    ),
    ("pause_schedule", "The schedule, now paused."),
    ("resume_schedule", "The schedule, running again."),
    (
        "get_stats",
        "Per kind: jobs per status, the oldest queued job's age, throughput and run times.",
    ),
];

/// Gives the `200` answers in [`OK_RESPONSES`] their description where poem-openapi left none.
fn describe_plain_responses(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let Some(id) = op.get("operationId").and_then(Value::as_str) else {
            continue;
        };
        let Some((_, text)) = OK_RESPONSES.iter().find(|(op_id, _)| *op_id == id) else {
            continue;
        };
        let text = *text;
        if let Some(ok) = op
            .pointer_mut("/responses/200")
            .and_then(Value::as_object_mut)
            && ok
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            ok.insert("description".into(), json!(text));
        }
    }
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

/// Descriptions of properties whose types are declared outside `api` and have no doc comment
/// there (schema, property, description).
const FOREIGN_FIELDS: &[(&str, &str, &str)] = &[(
    "HashResult",
    "algorithm",
    "The SHA-2 function that was applied.",
)];

/// Gives the properties of `FOREIGN_FIELDS` their description (a reference is wrapped as
/// `allOf: [{$ref}]`: siblings of a `$ref` are ignored). Runs before `flatten_variants`, which
/// copies them into the union variants.
fn describe_foreign_fields(doc: &mut Value) {
    for (schema, property, description) in FOREIGN_FIELDS {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        let Some(Value::Object(prop)) = doc.pointer_mut(&pointer) else {
            continue;
        };
        if prop.contains_key("description") {
            continue;
        }
        if let Some(reference) = prop.remove("$ref") {
            prop.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
        prop.insert("description".into(), json!(description));
    }
}

/// The discriminator property of each variant of a tagged union (`kind`, generated by
/// poem-openapi) says what it is. Runs after `flatten_variants`, so that it is a property of
/// the variant itself.
fn describe_discriminators(doc: &mut Value) {
    let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    let mut targets = Vec::new();
    for (union, schema) in schemas.iter() {
        let Some(property) = schema
            .pointer("/discriminator/propertyName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(variants) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        for variant in variants {
            if let Some(name) = variant
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(schema_name)
            {
                targets.push((union.clone(), name.to_owned(), property.to_owned()));
            }
        }
    }
    for (union, variant, property) in targets {
        let Some(Value::Object(prop)) = schemas
            .get_mut(&variant)
            .and_then(|v| v.get_mut("properties"))
            .and_then(|p| p.get_mut(&property))
        else {
            continue;
        };
        if prop.contains_key("description") {
            continue;
        }
        let value = prop
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
            .and_then(Value::as_str)
            .map(|v| format!(", always `{v}` here"))
            .unwrap_or_default();
        prop.insert(
            "description".into(),
            json!(format!(
                "The job kind{value}; selects this variant of `{union}`."
            )),
        );
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

/// Examples of the schemas whose types cannot carry `#[oai(example)]` (declared outside the
/// API, or unions): they match the examples of `api::models::Job` and `api::requests`.
fn foreign_examples() -> [(&'static str, Value); 4] {
    [
        ("HashData", json!("data1")),
        (
            "HashResult",
            json!({
                "algorithm": "sha256",
                "digest_hex": "411c1c5b0d7d5a9e08d469f1b8b31e810d78c4c3cf7dcecfa510a45d73c84037",
                "bytes_hashed": 5000,
            }),
        ),
        (
            "EmailResult",
            json!({
                "message_id": "<019bc0fd-89c0-7a3e-9c41-5d2f8e6b1a07@jobq>",
                "server_response": "250 2.0.0 Ok: queued as 4F2A1",
            }),
        ),
        ("LongRunningResult", json!({"steps_completed": 5})),
    ]
}

/// The member an enum's example shows, where the first one is not the most telling.
const ENUM_EXAMPLES: &[(&str, &str)] = &[
    ("EventType", "succeeded"),
    ("HashAlgorithm", "sha256"),
    ("JobKind", "hash"),
    ("JobStatus", "queued"),
    ("TimeZone", "Europe/Berlin"),
];

/// Gives every schema without an example one (see the module's documentation). Runs last:
/// the variants are flat objects by then.
fn add_examples(doc: &mut Value) {
    let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    fn set(schemas: &mut Map<String, Value>, name: &str, example: Value) {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.entry("example").or_insert(example);
        }
    }
    for (name, example) in foreign_examples() {
        set(schemas, name, example);
    }
    // Enums: the chosen member, or the first.
    let enums: Vec<(String, Value)> = schemas
        .iter()
        .filter_map(|(name, schema)| {
            let members = schema.get("enum")?.as_array()?;
            let chosen = ENUM_EXAMPLES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| json!(v))
                .filter(|v| members.contains(v));
            Some((name.clone(), chosen.or_else(|| members.first().cloned())?))
        })
        .collect();
    for (name, example) in enums {
        set(schemas, &name, example);
    }
    // Variants of a tagged union: `Union_Kind` is `Kind` with the tag.
    let mut variants = Vec::new();
    for (union, schema) in schemas.iter() {
        let (Some(tag), Some(Value::Object(mapping))) = (
            schema
                .pointer("/discriminator/propertyName")
                .and_then(Value::as_str),
            schema.pointer("/discriminator/mapping"),
        ) else {
            continue;
        };
        for (value, reference) in mapping {
            let Some(variant) = reference.as_str().and_then(schema_name) else {
                continue;
            };
            let Some(Value::Object(example)) = variant
                .strip_prefix(&format!("{union}_"))
                .and_then(|kind| schemas.get(kind))
                .and_then(|kind| kind.get("example"))
            else {
                continue;
            };
            let mut example = example.clone();
            example.insert(tag.to_owned(), Value::String(value.clone()));
            variants.push((variant.to_owned(), Value::Object(example)));
        }
    }
    for (name, example) in variants {
        set(schemas, &name, example);
    }
    // Unions: the example of their first variant.
    let unions: Vec<(String, Value)> = schemas
        .iter()
        .filter_map(|(name, schema)| {
            let first = schema.get("oneOf")?.as_array()?.first()?;
            let variant = schemas.get(schema_name(first.get("$ref")?.as_str()?)?)?;
            Some((name.clone(), variant.get("example")?.clone()))
        })
        .collect();
    for (name, example) in unions {
        set(schemas, &name, example);
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

/// What the spec tests share: the finished spec and a walk over its schema objects.
#[cfg(test)]
mod spec_walk {
    use serde_json::Value;

    /// The spec as served.
    pub fn served() -> Value {
        serde_json::from_str(&crate::api::spec_json()).expect("the spec is JSON")
    }

    /// Every object in `v` with its path below `at`, leaving out what stands under `example` or
    /// `examples` (data, not schemas).
    pub fn objects<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(map) => {
                out.push((at.to_owned(), v));
                for (key, child) in map {
                    if key != "example" && key != "examples" {
                        objects(child, &format!("{at}/{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    objects(item, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
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
        assert_eq!(
            s["Req_A"]["properties"]["kind"]["description"],
            "The job kind, always `a` here; selects this variant of `Req`."
        );
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
mod documented {
    //! Everything a reader of the finished spec meets is described.
    use serde_json::Value;

    use super::spec_walk;

    fn described(v: &Value) -> bool {
        v.get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty())
    }

    /// Every property of every schema in `v` (nested ones included), as `where.property`,
    /// that has no description.
    fn undescribed_properties(v: &Value, at: &str, out: &mut Vec<String>) {
        let mut nodes = Vec::new();
        spec_walk::objects(v, at, &mut nodes);
        for (at, node) in nodes {
            if let Some(Value::Object(props)) = node.get("properties") {
                for (name, prop) in props {
                    if !described(prop) {
                        out.push(format!("{at}.{name}"));
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn every_property_operation_parameter_and_response_has_a_description() {
        let spec = spec_walk::served();
        let mut missing = Vec::new();
        undescribed_properties(&spec["components"], "components", &mut missing);
        undescribed_properties(&spec["paths"], "paths", &mut missing);
        let paths = spec["paths"].as_object().expect("paths");
        assert!(!paths.is_empty());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let name = op["operationId"].as_str().unwrap_or(path);
                if op["summary"].as_str().is_none_or(|s| s.trim().is_empty()) {
                    missing.push(format!("{method} {path} ({name}): summary"));
                }
                if !described(op) {
                    missing.push(format!("{method} {path} ({name}): description"));
                }
                for param in op["parameters"].as_array().into_iter().flatten() {
                    if !described(param) {
                        missing.push(format!("{name}: parameter {}", param["name"]));
                    }
                }
                for (code, response) in op["responses"].as_object().into_iter().flatten() {
                    if !described(response) {
                        missing.push(format!("{name}: response {code}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}

#[cfg(test)]
mod agreement {
    //! The patterns in the spec are the ones the server's own checks implement.
    use serde_json::Value;

    use crate::domain::cron;
    use crate::jobs::email;

    async fn schemas() -> Value {
        super::spec_walk::served()["components"]["schemas"].clone()
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

#[cfg(test)]
mod examples {
    //! Every schema of the finished spec has an example, and every example (of a schema or a
    //! property) is valid against its schema: schemathesis sends the request examples, and
    //! generated clients and readers trust the response ones.
    use serde_json::{Map, Value};

    async fn spec() -> Value {
        super::spec_walk::served()
    }

    /// The errors of `value` against `schema` (the subset of JSON Schema the spec uses:
    /// `$ref`, `allOf`, `oneOf`, `not`, `type`, `enum`, `required`, `properties`,
    /// `additionalProperties: false`, `items`, `pattern`, lengths, item counts and bounds),
    /// each as `path: problem`.
    fn check(value: &Value, schema: &Value, schemas: &Map<String, Value>, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = super::schema_name(reference).expect("a component reference");
            let target = schemas
                .get(name)
                .unwrap_or_else(|| panic!("no schema {name}"));
            return check(value, target, schemas, at);
        }
        for member in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            errors.extend(check(value, member, schemas, at));
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let results: Vec<Vec<String>> = branches
                .iter()
                .map(|b| check(value, b, schemas, at))
                .collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            if valid != 1 {
                let mut msg = format!("matches {valid} of the {} oneOf branches", branches.len());
                for r in results.iter().filter(|r| !r.is_empty()) {
                    msg.push_str(&format!(" [{}]", r.join("; ")));
                }
                errors.push(format!("{at}: {msg}"));
            }
        }
        if let Some(not) = schema.get("not")
            && check(value, not, schemas, at).is_empty()
        {
            errors.push(format!("{at}: matches the `not` schema {not}"));
        }
        if let Some(members) = schema.get("enum").and_then(Value::as_array)
            && !members.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of the enum's members"));
        }
        let mut fail = |msg: String| errors.push(format!("{at}: {msg}"));
        let number = |key: &str| schema.get(key).and_then(Value::as_f64);
        let count = |key: &str| schema.get(key).and_then(Value::as_u64);
        let ty = schema.get("type").and_then(Value::as_str);
        let type_ok = match ty {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some(_) => false,
        };
        if !type_ok {
            fail(format!("{value} is not of type {}", ty.unwrap_or_default()));
            return errors;
        }
        // The keywords of each type apply to values of that type only (JSON Schema).
        if let Some(text) = value.as_str() {
            let chars = text.chars().count() as u64;
            if count("minLength").is_some_and(|n| chars < n)
                || count("maxLength").is_some_and(|n| chars > n)
            {
                fail(format!("{text:?}: length out of bounds"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !regex::Regex::new(pattern).unwrap().is_match(text)
            {
                fail(format!("{text:?} does not match {pattern:?}"));
            }
            let format = schema.get("format").and_then(Value::as_str);
            if format == Some("date-time") && chrono::DateTime::parse_from_rfc3339(text).is_err() {
                fail(format!("{text:?} is not an RFC 3339 time"));
            }
            if format == Some("uuid") && uuid::Uuid::parse_str(text).is_err() {
                fail(format!("{text:?} is not a UUID"));
            }
        }
        if let Some(n) = value.as_f64()
            && (number("minimum").is_some_and(|m| n < m)
                || number("maximum").is_some_and(|m| n > m))
        {
            fail(format!("{value} is out of bounds"));
        }
        if let Some(items) = value.as_array() {
            if count("minItems").is_some_and(|n| (items.len() as u64) < n)
                || count("maxItems").is_some_and(|n| (items.len() as u64) > n)
            {
                fail(format!("{} items: out of bounds", items.len()));
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    errors.extend(check(v, item, schemas, &format!("{at}[{i}]")));
                }
            }
        }
        if let Some(object) = value.as_object() {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    errors.push(format!("{at}: lacks the required property `{name}`"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, v) in object {
                match properties.and_then(|p| p.get(name)) {
                    Some(p) => errors.extend(check(v, p, schemas, &format!("{at}.{name}"))),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: has the unknown property `{name}`"));
                    }
                    None => {}
                }
            }
        }
        errors
    }

    /// Every `example` in `v` (schemas and properties), with the schema it belongs to.
    fn examples<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a Value, &'a Value)>) {
        let mut nodes = Vec::new();
        super::spec_walk::objects(v, at, &mut nodes);
        for (at, node) in nodes {
            if let Some(example) = node.get("example") {
                out.push((at, example, node));
            }
        }
    }

    #[tokio::test]
    async fn every_schema_has_an_example() {
        let spec = spec().await;
        let schemas = spec["components"]["schemas"].as_object().expect("schemas");
        let missing: Vec<&String> = schemas
            .iter()
            .filter(|(_, s)| s.get("example").is_none())
            .map(|(name, _)| name)
            .collect();
        assert!(
            missing.is_empty(),
            "schemas without an example: {missing:#?}"
        );
    }

    #[tokio::test]
    async fn every_example_is_valid_against_its_schema() {
        let spec = spec().await;
        let schemas = spec["components"]["schemas"].as_object().expect("schemas");
        let mut found = Vec::new();
        examples(&spec["components"], "#/components", &mut found);
        examples(&spec["paths"], "#/paths", &mut found);
        assert!(found.len() >= schemas.len(), "{} examples", found.len());
        let mut invalid = Vec::new();
        for (at, example, schema) in found {
            invalid.extend(check(example, schema, schemas, &at));
        }
        assert!(invalid.is_empty(), "invalid examples: {invalid:#?}");
    }

    #[test]
    fn the_checker_finds_what_is_wrong() {
        let schemas: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "K": {"type": "string", "enum": ["a", "b"]},
            "O": {"type": "object", "required": ["k"], "additionalProperties": false,
                "properties": {"k": {"$ref": "#/components/schemas/K"},
                    "n": {"type": "integer", "minimum": 1},
                    "s": {"type": "string", "pattern": "^x+$", "maxLength": 3}}}
        }))
        .unwrap();
        let o = serde_json::json!({"$ref": "#/components/schemas/O"});
        let errors = |v: Value| check(&v, &o, &schemas, "e");
        assert!(errors(serde_json::json!({"k": "a", "n": 2, "s": "xx"})).is_empty());
        assert_eq!(errors(serde_json::json!({"n": 2})).len(), 1, "required");
        assert_eq!(errors(serde_json::json!({"k": "c"})).len(), 1, "enum");
        assert_eq!(
            errors(serde_json::json!({"k": "a", "z": 1})).len(),
            1,
            "closed"
        );
        assert_eq!(
            errors(serde_json::json!({"k": "a", "n": 0})).len(),
            1,
            "minimum"
        );
        assert_eq!(
            errors(serde_json::json!({"k": "a", "n": 1.5})).len(),
            1,
            "integer"
        );
        assert_eq!(
            errors(serde_json::json!({"k": "a", "s": "xy"})).len(),
            1,
            "pattern"
        );
        assert_eq!(
            errors(serde_json::json!({"k": "a", "s": "xxxx"})).len(),
            1,
            "length"
        );
        assert_eq!(
            errors(serde_json::json!({"k": "a", "s": null})).len(),
            1,
            "null"
        );
        let not_nul = serde_json::json!({"type": "string", "not": {"pattern": "\\x00"}});
        assert!(check(&serde_json::json!("ok"), &not_nul, &schemas, "e").is_empty());
        assert_eq!(
            check(&serde_json::json!("a\u{0}"), &not_nul, &schemas, "e").len(),
            1
        );
    }
}
