//! A small validator for the OpenAPI v3 subset that CRD structural schemas use, producing the
//! same messages as the Kubernetes API server, so a golden's expected error can be checked
//! offline and against a real server with the same text.

use serde_json::{Map, Value};

/// Validates `value` against `schema`, collecting API-server-style messages.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, value, "", &mut errors);
    errors
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn quote(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    if value.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                s.get("type").and_then(Value::as_str).unwrap_or("object")
            ));
        }
        return;
    }
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{path}: Invalid value: \"{}\": {path} in body must be of type integer,string: {}",
                type_name(value),
                quote(value)
            ));
        }
        return;
    }
    if let Some(want) = s.get("type").and_then(Value::as_str) {
        let got = type_name(value);
        let ok = want == got || (want == "number" && got == "integer");
        if !ok {
            errors.push(format!(
                "{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: {}",
                quote(value)
            ));
            return;
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(quote).collect();
        errors.push(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            quote(value),
            supported.join(", ")
        ));
    }
    match value {
        Value::String(text) => check_string(s, text, path, errors),
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or_default(), value, path, errors),
        Value::Array(items) => check_array(s, items, path, errors),
        Value::Object(fields) => check_object(s, fields, path, errors),
        _ => {}
    }
}

fn check_string(s: &Map<String, Value>, text: &str, path: &str, errors: &mut Vec<String>) {
    let len = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errors.push(format!(
            "{path}: Invalid value: \"{text}\": {path} in body should be at least {min} chars long"
        ));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(format!(
            "{path}: Too long: may not be more than {max} bytes"
        ));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => errors.push(format!(
                "{path}: Invalid value: \"{text}\": {path} in body should match '{pattern}'"
            )),
            Ok(_) => {}
            Err(e) => errors.push(format!("{path}: schema pattern does not compile: {e}")),
        }
    }
}

fn check_number(
    s: &Map<String, Value>,
    n: f64,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        errors.push(format!("{path}: Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        errors.push(format!(
            "{path}: Invalid value: {value}: {path} in body should be less than or equal to {max}"
        ));
    }
}

fn check_array(s: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<String>) {
    let n = items.len() as u64;
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        errors.push(format!(
            "{path}: Invalid value: {n}: {path} in body should have at least {min} items"
        ));
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        errors.push(format!(
            "{path}: Too many: {n}: must have at most {max} items"
        ));
    }
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(format!("{path}[{i}]: Duplicate value: {}", quote(item)));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| {
                keys.iter()
                    .map(|k| item.get(*k).cloned())
                    .collect::<Vec<_>>()
            };
            for (i, item) in items.iter().enumerate() {
                if items[..i]
                    .iter()
                    .any(|earlier| key_of(earlier) == key_of(item))
                {
                    let shown: serde_json::Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                        .collect();
                    errors.push(format!(
                        "{path}[{i}]: Duplicate value: {}",
                        Value::Object(shown)
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    s: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    for required in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = required.as_str()
            && !fields.contains_key(name)
        {
            errors.push(format!("{}: Required value", join(path, name)));
        }
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let properties = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    for (name, field) in fields {
        let child = join(path, name);
        if let Some(prop) = properties.and_then(|p| p.get(name)) {
            walk(prop, field, &child, errors);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            walk(extra, field, &child, errors);
        } else if !(preserve
            || path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata"))
        {
            errors.push(format!("unknown field \"{child}\""));
        }
    }
}
