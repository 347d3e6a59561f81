//! Every reply the API tests see is held to the OpenAPI document: the status is documented for
//! the route, and a JSON body validates against the documented schema, where a property the
//! schema does not list is an error (so a response field missing from the document fails).
//!
//! A small validator of the JSON Schema the document uses (OpenAPI 3.1): `$ref`, `type` (one or
//! a list), `properties`, `required`, `additionalProperties`, `items`, `enum`, `oneOf` (exactly
//! one), `anyOf`, `allOf`, the numeric and length bounds and the `date`/`date-time` formats.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The document as served.
pub fn document() -> Value {
    serde_json::from_str(api::app::openapi_json()).expect("the document is JSON")
}

/// The documented path template that `concrete` (no query) matches, if any.
pub fn template_of<'a>(doc: &'a Value, concrete: &str) -> Option<&'a str> {
    let parts: Vec<&str> = concrete.split('/').collect();
    doc["paths"].as_object()?.keys().map(String::as_str).find(|template| {
        let pattern: Vec<&str> = template.split('/').collect();
        pattern.len() == parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(p, c)| p == c || (p.starts_with('{') && !c.is_empty()))
    })
}

/// Check one reply of `method path` (path with its query) against the document; `Err` says
/// what does not match.
pub fn check_reply(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    text: &str,
) -> Result<(), String> {
    let concrete = path.split('?').next().unwrap_or(path);
    let Some(template) = template_of(doc, concrete) else {
        return Ok(()); // Not a documented route (a 404 for an unknown path, /health, ...).
    };
    let Some(operation) = doc["paths"][template].get(method.to_lowercase()) else {
        return Ok(()); // A method the route does not serve (axum's 405).
    };
    let Some(response) = operation["responses"].get(status.to_string()) else {
        return Err(format!("{method} {template} answered {status}, which it does not document"));
    };
    let response = resolve(doc, response);
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if text.is_empty() {
            return Ok(());
        }
        return Err(format!("{method} {template} {status}: a body where none is documented"));
    };
    if let Some(csv) = content.get("text/csv") {
        let _ = csv;
        return match content_type {
            Some(t) if t.starts_with("text/csv") => Ok(()),
            other => Err(format!("{method} {template} {status}: content type {other:?}, not CSV")),
        };
    }
    let Some(schema) = content.get("application/json").map(|c| &c["schema"]) else {
        return Err(format!("{method} {template} {status}: no JSON schema documented"));
    };
    let body: Value = serde_json::from_str(text)
        .map_err(|e| format!("{method} {template} {status}: body is not JSON ({e}): {text}"))?;
    let mut errors = Vec::new();
    validate(doc, schema, &body, "$", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{method} {template} {status} does not match its schema: {errors:?}\n{text}"))
    }
}

/// Follow `$ref`s to the schema (or response) they name.
pub fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let mut target = doc;
        for part in reference.trim_start_matches("#/").split('/') {
            target = &target[part];
        }
        assert!(!target.is_null(), "unresolved reference {reference}");
        value = target;
    }
    value
}

/// The properties an object schema lists (through `$ref` and `allOf`).
pub fn properties(doc: &Value, schema: &Value) -> Map<String, Value> {
    let schema = resolve(doc, schema);
    let mut all = schema["properties"].as_object().cloned().unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        all.extend(properties(doc, part));
    }
    all
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn date_like(format: &str, text: &str) -> bool {
    match format {
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        _ => true,
    }
}

/// Validate `value` at `at` against `schema`, pushing what does not match onto `errors`.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(object) = schema.as_object() else {
        return; // `true` or `{}`: anything.
    };
    if let Some(variants) = schema["oneOf"].as_array() {
        let matching = variants
            .iter()
            .filter(|v| {
                let mut inner = Vec::new();
                validate(doc, v, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            let mut why = Vec::new();
            for v in variants {
                validate(doc, v, value, at, &mut why);
            }
            errors.push(format!("{at}: matches {matching} of oneOf, not 1 ({why:?})"));
        }
    }
    if let Some(variants) = schema["anyOf"].as_array() {
        let any = variants.iter().any(|v| {
            let mut inner = Vec::new();
            validate(doc, v, value, at, &mut inner);
            inner.is_empty()
        });
        if !any {
            errors.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        // Each part alone, not checking unknown properties (the parts share the object);
        // unknown properties are checked against all parts' together below.
        for part in parts {
            let mut loose = resolve(doc, part).clone();
            if let Some(o) = loose.as_object_mut() {
                o.remove("additionalProperties");
                o.insert("x-loose".into(), Value::Bool(true));
            }
            validate(doc, &loose, value, at, errors);
        }
    }
    match &schema["type"] {
        Value::String(name) if !type_matches(name, value) => {
            errors.push(format!("{at}: {value} is not of type {name}"));
            return;
        }
        Value::Array(names)
            if !names.iter().any(|n| type_matches(n.as_str().unwrap_or(""), value)) =>
        {
            errors.push(format!("{at}: {value} is not of types {names:?}"));
            return;
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| length < min) {
                errors.push(format!("{at}: shorter than minLength"));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| length > max) {
                errors.push(format!("{at}: longer than maxLength"));
            }
            if let Some(format) = schema["format"].as_str() {
                if !date_like(format, text) {
                    errors.push(format!("{at}: {text:?} is not a {format}"));
                }
            }
        }
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or(f64::NAN);
            if schema["minimum"].as_f64().is_some_and(|min| number < min) {
                errors.push(format!("{at}: below minimum"));
            }
            if schema["maximum"].as_f64().is_some_and(|max| number > max) {
                errors.push(format!("{at}: above maximum"));
            }
        }
        Value::Array(items) => {
            if schema["minItems"].as_u64().is_some_and(|min| (items.len() as u64) < min) {
                errors.push(format!("{at}: fewer than minItems"));
            }
            if schema["maxItems"].as_u64().is_some_and(|max| (items.len() as u64) > max) {
                errors.push(format!("{at}: more than maxItems"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate(doc, item_schema, item, &format!("{at}[{index}]"), errors);
                }
            }
        }
        Value::Object(fields) => {
            let listed = properties(doc, schema);
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    errors.push(format!("{at}: required property {name} is missing"));
                }
            }
            let loose = object.contains_key("x-loose");
            for (name, field) in fields {
                match listed.get(name) {
                    Some(field_schema) => {
                        validate(doc, field_schema, field, &format!("{at}.{name}"), errors)
                    }
                    None => match object.get("additionalProperties") {
                        Some(Value::Object(extra)) => validate(
                            doc,
                            &Value::Object(extra.clone()),
                            field,
                            &format!("{at}.{name}"),
                            errors,
                        ),
                        // A free-form object (`additionalProperties: true`, or a schema that
                        // lists no properties, such as `Object`).
                        Some(Value::Bool(true)) => {}
                        None if listed.is_empty() && schema.get("allOf").is_none() => {}
                        _ if loose => {}
                        _ => errors
                            .push(format!("{at}: property {name} is not in the document's schema")),
                    },
                }
            }
            if let Some(names) = schema.get("propertyNames") {
                for name in fields.keys() {
                    validate(
                        doc,
                        names,
                        &Value::String(name.clone()),
                        &format!("{at}[key]"),
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

/// The field names a `Deserialize` type accepts, read from serde's own error for an unknown
/// field (every request body type denies unknown fields, so the error lists them all).
pub fn accepted_fields<T: serde::de::DeserializeOwned>(prefix: Value) -> BTreeSet<String> {
    let mut probe = prefix;
    probe["__not_a_field__"] = Value::Bool(true);
    let error = match serde_json::from_value::<T>(probe) {
        Ok(_) => panic!("{} accepted an unknown field", std::any::type_name::<T>()),
        Err(error) => error.to_string(),
    };
    let (_, expected) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-field error: {error}"));
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}
