//! `JsonBody<T>`: a JSON request body whose errors name the field at fault.
//!
//! poem-openapi's `Json<T>` reports a bad field only by its type name. This payload declares the
//! same schema (T's) but parses with serde, tracking the path, and reads at most
//! `T::MAX_BODY_BYTES`, so every refusal is a 4xx with `field` set.

use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;

/// The largest body an endpoint accepts.
pub trait BodyLimit {
    const MAX_BODY_BYTES: usize;
}

pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(ct)
            if ct.type_() == "application"
                && (ct.subtype() == "json" || ct.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned + BodyLimit> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let limit = T::MAX_BODY_BYTES;
        let declared = request
            .header(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::too_large(limit).into());
        }
        let bytes = body
            .take()?
            .into_bytes_limit(limit)
            .await
            .map_err(|e| match e {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::too_large(limit),
                other => ApiError::bad_request("invalid_body", other.to_string(), None),
            })?;
        parse(&bytes).map(JsonBody).map_err(Into::into)
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: Type + DeserializeOwned + BodyLimit);

/// For an optional request field (`#[serde(default, deserialize_with = "present")]`): absent
/// is `None`, a value is checked as `T`, and `null` is refused like any value of the wrong type,
/// as the spec (which marks no request field nullable) says.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Parses JSON, naming the field of the first error (`to`, `options.max_attempts`, ...).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty; a JSON object is required",
            None,
        ));
    }
    // serde would read a JSON array into a struct by position; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(e) => invalid_json(&e),
                Ok(_) => ApiError::validation("body", "must be a JSON object"),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => {
            return match de.end() {
                Ok(()) => Ok(value),
                Err(e) => Err(invalid_json(&e)),
            };
        }
        Err(err) => err,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = strip_position(&inner.to_string());
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return Err(invalid_json(&inner));
    }
    // A missing field is reported at the path of its object, with its name in the message;
    // every other error (unknown field included) at the path of the field itself.
    // So is an unknown field inside a tagged union (serde buffers the variant's content).
    let named = backticked(&message).filter(|name| {
        message.starts_with("missing field")
            || (message.starts_with("unknown field") && path.rsplit('.').next() != Some(*name))
    });
    let field = match (path.as_str(), named) {
        (".", Some(name)) => name.to_owned(),
        (p, Some(name)) => format!("{p}.{name}"),
        (".", None) => "body".to_owned(),
        (p, None) => p.to_owned(),
    };
    Err(ApiError::validation(&field, message))
}

fn invalid_json(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "invalid_json",
        format!(
            "the request body is not valid JSON: {}",
            strip_position(&e.to_string())
        ),
        None,
    )
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// serde_json ends messages with " at line 1 column 17"; the field already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn field_of(json: &str) -> (u16, Option<String>) {
        let e = parse::<Outer>(json.as_bytes()).unwrap_err();
        let resp = poem::IntoResponse::into_response(e);
        let status = resp.status().as_u16();
        let body: serde_json::Value =
            futures::executor::block_on(resp.into_body().into_json()).unwrap();
        (status, body["field"].as_str().map(str::to_owned))
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"name": 3}"#), (422, Some("name".into())));
        assert_eq!(field_of(r#"{}"#), (422, Some("name".into())));
        assert_eq!(
            field_of(r#"{"name":"a","nmae":1}"#),
            (422, Some("nmae".into()))
        );
        assert_eq!(
            field_of(r#"{"name":"a","inner":{"n":-1}}"#),
            (422, Some("inner.n".into()))
        );
        assert_eq!(
            field_of(r#"{"name":"a","inner":{}}"#),
            (422, Some("inner.n".into()))
        );
        assert_eq!(field_of(r#"[1]"#), (422, Some("body".into())));
        assert_eq!(field_of(r#"{"name": "a""#), (400, None));
        assert_eq!(field_of(r#"{"name":"a"} trailing"#), (400, None));
        assert_eq!(field_of("  "), (400, None));
    }
}

/// A JSON response of `T`'s declared schema, written straight from `T`'s serde `Serialize`.
///
/// poem-openapi's `Json<T>` builds a `serde_json::Value` tree of the whole answer first
/// (`ToJSON`, a map per object) and then writes that: for a batch of 1,000 jobs that was a
/// third of the API's CPU (perf). Types answered this way derive both and must write the same
/// JSON (`models::tests` compares them for every shape).
pub struct JsonOut<T>(pub T);

impl<T: Type> Payload for JsonOut<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Serialize + Send> poem::IntoResponse for JsonOut<T> {
    fn into_response(self) -> poem::Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => poem::Response::builder()
                .content_type(<Self as Payload>::CONTENT_TYPE)
                .body(body),
            Err(e) => ApiError::internal(&format!("cannot write the answer: {e}")).into_response(),
        }
    }
}

impl<T: Type + Serialize + Send> poem_openapi::ApiResponse for JsonOut<T> {
    fn meta() -> poem_openapi::registry::MetaResponses {
        use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses};
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: <Self as Payload>::CONTENT_TYPE,
                    schema: <Self as Payload>::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// RFC 3339 as poem-openapi writes a `DateTime<Utc>` (`+00:00`, sub-seconds as needed), for
/// the serde side of types answered with [`JsonOut`].
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.to_rfc3339())
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
    }
}
