//! The compatibility rules of a sealed version, after the Kubernetes API change rules.
//!
//! A sealed schema may grow (a new optional field, a new enum value) and loosen (a raised
//! maximum, a dropped pattern) because every object it accepted is still accepted and still
//! means the same. Anything that could refuse a stored object, or change what one means, is
//! breaking and needs a new version. The comparison is a pure function of two
//! `openAPIV3Schema` values, so the snapshot (JSON) and the generated schema compare alike.
//!
//! A keyword the rules do not know must stay exactly as sealed: the gate cannot tell whether a
//! change to it is safe, and refusing is the sound default.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// A rule of the sealed-version contract that a change can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A property is gone (a rename is a removal plus an addition).
    RemovedProperty,
    /// A property was added to an object that keeps unknown fields.
    NewPropertyInOpenObject,
    /// `type` changed.
    Retyped,
    /// `format` was added or changed.
    Format,
    /// `items` was added, removed or turned into something other than one schema.
    ItemsShape,
    /// An `x-kubernetes-*` marker of list, map or field semantics changed.
    Semantics,
    /// A name was added to `required`.
    NewRequired,
    /// A maximum was added or lowered, or a minimum added or raised.
    TighterBound,
    /// `pattern` was added or changed.
    Pattern,
    /// `enum` appeared where any value was allowed.
    NewEnum,
    /// A value left `enum`.
    RemovedEnumValue,
    /// An `x-kubernetes-validations` rule was added or its text changed.
    NewValidationRule,
    /// `default` was added, changed or removed.
    Default,
    /// `nullable` was turned off.
    NullableOff,
    /// `additionalProperties` accepts less than it did.
    AdditionalProperties,
    /// A keyword the rules do not know changed.
    UnknownKeyword,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::RemovedProperty => {
                "a sealed version keeps every property, since stored objects and clients still use it (a rename counts as a removal)"
            }
            Rule::NewPropertyInOpenObject => {
                "this object keeps unknown fields, so stored objects may already hold this field with a value the new schema refuses"
            }
            Rule::Retyped => "a field keeps its type, since stored objects hold the old one",
            Rule::Format => {
                "a new or changed format refuses values the sealed version accepted"
            }
            Rule::ItemsShape => "the shape of a list's items is part of the contract",
            Rule::Semantics => {
                "x-kubernetes-* markers decide how objects are merged, pruned and typed, so changing one changes what stored objects mean"
            }
            Rule::NewRequired => {
                "a new required field refuses objects written without it"
            }
            Rule::TighterBound => {
                "tighter bounds refuse objects the sealed version accepted"
            }
            Rule::Pattern => {
                "a new or changed pattern refuses values the sealed version accepted"
            }
            Rule::NewEnum => "a new enum refuses values the sealed version accepted",
            Rule::RemovedEnumValue => {
                "objects stored with a removed enum value would no longer validate"
            }
            Rule::NewValidationRule => {
                "a new or changed CEL rule can refuse objects the sealed version accepted (only the message of an unchanged rule may change)"
            }
            Rule::Default => {
                "the API server applies defaults when it reads stored objects, so adding, changing or removing one changes what existing objects mean"
            }
            Rule::NullableOff => "objects stored with null here would no longer validate",
            Rule::AdditionalProperties => {
                "a tighter additionalProperties refuses keys or values the sealed version accepted"
            }
            Rule::UnknownKeyword => {
                "the gate cannot tell whether a change to this keyword is compatible, so it must stay as sealed"
            }
        })
    }
}

/// One breaking difference between a sealed schema and the generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaking {
    /// Where, as `spec.workspaces[].mode`: `[]` is a list's items, `{}` a map's values.
    pub path: String,
    /// The rule the change breaks.
    pub rule: Rule,
    /// What changed, for example `maxLength lowered from 63 to 32`.
    pub change: String,
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.path, self.change, self.rule)
    }
}

/// Every breaking difference from `sealed` to `generated`, both `openAPIV3Schema` values;
/// empty when every object the sealed schema accepts is still accepted and means the same.
pub fn breaking_changes(sealed: &Value, generated: &Value) -> Vec<Breaking> {
    let mut out = Vec::new();
    compare(&Path::root(), sealed, generated, &mut out);
    out
}

/// The location of a schema inside the root schema.
#[derive(Debug, Clone)]
struct Path(Vec<String>);

impl Path {
    fn root() -> Self {
        Path(Vec::new())
    }

    fn property(&self, name: &str) -> Self {
        self.with(name.to_owned())
    }

    fn items(&self) -> Self {
        self.with("[]".to_owned())
    }

    fn values(&self) -> Self {
        self.with("{}".to_owned())
    }

    fn with(&self, segment: String) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Path(segments)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 && !segment.starts_with(['[', '{']) {
                f.write_str(".")?;
            }
            f.write_str(segment)?;
        }
        Ok(())
    }
}

/// Records a breaking change at `path`.
fn push(out: &mut Vec<Breaking>, path: &Path, rule: Rule, change: String) {
    out.push(Breaking {
        path: path.to_string(),
        rule,
        change,
    });
}

/// Compares one schema node and, through `properties`, `items` and `additionalProperties`,
/// everything below it.
fn compare(path: &Path, old: &Value, new: &Value, out: &mut Vec<Breaking>) {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        // Not a schema object (a malformed schema): only an identical one is safe.
        if old != new {
            push(
                out,
                path,
                Rule::UnknownKeyword,
                "the schema was replaced".into(),
            );
        }
        return;
    };
    let keywords: BTreeSet<&str> = old.keys().chain(new.keys()).map(String::as_str).collect();
    for keyword in keywords {
        let (o, n) = (old.get(keyword), new.get(keyword));
        match keyword {
            // Documentation: it never changes what the API server accepts.
            "description" | "title" | "example" | "externalDocs" => {}
            "properties" => properties(path, old, new, out),
            "required" => required(path, old, o, n, out),
            "items" => items(path, o, n, out),
            "additionalProperties" => additional_properties(path, o, n, out),
            "type" => {
                if o != n {
                    push(out, path, Rule::Retyped, changed("type", o, n));
                }
            }
            "format" | "pattern" => {
                // Dropping either only loosens validation; adding or changing one tightens it.
                if n.is_some() && o != n {
                    let rule = if keyword == "format" {
                        Rule::Format
                    } else {
                        Rule::Pattern
                    };
                    push(out, path, rule, changed(keyword, o, n));
                }
            }
            "x-kubernetes-list-type"
            | "x-kubernetes-list-map-keys"
            | "x-kubernetes-map-type"
            | "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-int-or-string"
            | "x-kubernetes-embedded-resource" => {
                // An explicit `false` is the same as no marker.
                if unset_if_false(o) != unset_if_false(n) {
                    push(out, path, Rule::Semantics, changed(keyword, o, n));
                }
            }
            "maxLength" | "maxItems" | "maxProperties" | "maximum" => {
                bound(path, keyword, Limit::Upper, o, n, out);
            }
            "minLength" | "minItems" | "minProperties" | "minimum" => {
                bound(path, keyword, Limit::Lower, o, n, out);
            }
            "enum" => enumeration(path, o, n, out),
            "x-kubernetes-validations" => validations(path, o, n, out),
            "default" => {
                // A new default on an existing field is refused too: the API server defaults
                // objects as it reads them from storage, so objects stored without the field
                // would silently start carrying the value. A new *property* with a default is
                // fine and never reaches here: objects stored before it existed gain it, which
                // is what adding it means.
                if o != n {
                    push(out, path, Rule::Default, changed("default", o, n));
                }
            }
            "nullable" => {
                if is_true(o) && !is_true(n) {
                    push(out, path, Rule::NullableOff, "nullable turned off".into());
                }
            }
            _ => {
                if o != n {
                    push(out, path, Rule::UnknownKeyword, changed(keyword, o, n));
                }
            }
        }
    }
}

/// Removed properties are breaking, shared ones compare recursively, and new ones are
/// allowed (their being required is the `required` rule's concern).
fn properties(
    path: &Path,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<Breaking>,
) {
    let empty = Map::new();
    let old_props = old
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_props = new
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, old_schema) in old_props {
        match new_props.get(name) {
            Some(new_schema) => compare(&path.property(name), old_schema, new_schema, out),
            None => push(
                out,
                &path.property(name),
                Rule::RemovedProperty,
                "property removed".into(),
            ),
        }
    }
    if is_true(old.get("x-kubernetes-preserve-unknown-fields")) {
        for name in new_props.keys().filter(|n| !old_props.contains_key(*n)) {
            push(
                out,
                &path.property(name),
                Rule::NewPropertyInOpenObject,
                "property added".into(),
            );
        }
    }
}

/// Every name new to `required` is breaking, whether the field is new or already existed.
fn required(
    path: &Path,
    old_schema: &Map<String, Value>,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Breaking>,
) {
    let names = |v: Option<&Value>| -> BTreeSet<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = names(old);
    let existed = |name: &str| {
        old_schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key(name))
    };
    for name in names(new).difference(&old) {
        let change = if existed(name) {
            "existing field made required"
        } else {
            "new required field"
        };
        push(out, &path.property(name), Rule::NewRequired, change.into());
    }
}

/// Two item schemas compare recursively; anything else must stay as it was.
fn items(path: &Path, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Breaking>) {
    match (old, new) {
        (Some(o), Some(n)) if o.is_object() && n.is_object() => compare(&path.items(), o, n, out),
        _ if old == new => {}
        _ => push(out, path, Rule::ItemsShape, changed("items", old, new)),
    }
}

/// How much `additionalProperties` lets through, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Openness {
    /// Absent or `false`: no keys beyond `properties`.
    Closed,
    /// A schema: any key, with values that schema accepts.
    Schema,
    /// `true`: any key, any value.
    Open,
}

fn openness(v: Option<&Value>) -> Option<Openness> {
    match v {
        None | Some(Value::Bool(false)) => Some(Openness::Closed),
        Some(Value::Bool(true)) => Some(Openness::Open),
        Some(Value::Object(_)) => Some(Openness::Schema),
        Some(_) => None,
    }
}

/// `additionalProperties` may open up; two value schemas compare recursively.
fn additional_properties(
    path: &Path,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Breaking>,
) {
    match (openness(old), openness(new), old, new) {
        (Some(Openness::Schema), Some(Openness::Schema), Some(o), Some(n)) => {
            compare(&path.values(), o, n, out);
        }
        (Some(o), Some(n), _, _) if n >= o => {}
        _ if old == new => {}
        _ => push(
            out,
            path,
            Rule::AdditionalProperties,
            changed("additionalProperties", old, new),
        ),
    }
}

/// Which side of the accepted range a bound keyword limits.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Upper,
    Lower,
}

/// A bound may loosen or go; a new one, or a tighter one, is breaking.
fn bound(
    path: &Path,
    keyword: &str,
    limit: Limit,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Breaking>,
) {
    // A missing bound is the loosest: +inf for a maximum. For the counting minimums
    // (minLength, minItems, minProperties) 0 is as loose as none, so adding `minItems: 0`
    // is not a change; `minimum` has no such floor.
    let loosest = match limit {
        Limit::Upper => f64::INFINITY,
        Limit::Lower if keyword == "minimum" => f64::NEG_INFINITY,
        Limit::Lower => 0.0,
    };
    let value = |v: Option<&Value>| match v {
        None => Some(loosest),
        Some(v) => v.as_f64(),
    };
    let (Some(o), Some(n)) = (value(old), value(new)) else {
        // Not a number: only an unchanged value is safe.
        if old != new {
            push(out, path, Rule::TighterBound, changed(keyword, old, new));
        }
        return;
    };
    let tighter = match limit {
        Limit::Upper => n < o,
        Limit::Lower => n > o,
    };
    if tighter {
        let change = match old {
            None => format!("{keyword} {} added", show(new)),
            Some(_) => match limit {
                Limit::Upper => format!("{keyword} lowered from {} to {}", show(old), show(new)),
                Limit::Lower => format!("{keyword} raised from {} to {}", show(old), show(new)),
            },
        };
        push(out, path, Rule::TighterBound, change);
    }
}

/// An enum may gain values or go; a new enum, or a value removed from one, is breaking.
fn enumeration(path: &Path, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Breaking>) {
    match (old, new) {
        (_, None) => {}
        (None, Some(_)) => push(out, path, Rule::NewEnum, changed("enum", old, new)),
        (Some(o), Some(n)) => {
            let empty = Vec::new();
            let new_values = n.as_array().unwrap_or(&empty);
            let removed: Vec<String> = o
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter(|v| !new_values.contains(v))
                .map(ToString::to_string)
                .collect();
            if !removed.is_empty() {
                push(
                    out,
                    path,
                    Rule::RemovedEnumValue,
                    match removed.as_slice() {
                        [one] => format!("enum value {one} removed"),
                        many => format!("enum values {} removed", many.join(", ")),
                    },
                );
            }
        }
    }
}

/// A CEL rule is identified by its text and whether it runs without an old object; its
/// message, reason and field path only shape the error, so they may change freely.
fn validations(path: &Path, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Breaking>) {
    let rules = |v: Option<&Value>| -> BTreeSet<(String, bool)> {
        v.and_then(Value::as_array)
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| {
                        // Keep a malformed entry whole, so any change to it still counts.
                        let text = match r.get("rule").and_then(Value::as_str) {
                            Some(t) => t.to_owned(),
                            None => r.to_string(),
                        };
                        (text, is_true(r.get("optionalOldSelf")))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = rules(old);
    for (text, optional_old_self) in rules(new).difference(&old) {
        let change = if *optional_old_self {
            format!("new or changed CEL rule `{text}` (optionalOldSelf)")
        } else {
            format!("new or changed CEL rule `{text}`")
        };
        push(out, path, Rule::NewValidationRule, change);
    }
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool).unwrap_or(false)
}

fn unset_if_false(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| v.as_bool() != Some(false))
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

/// `keyword added: x`, `keyword removed (was x)` or `keyword changed from x to y`.
fn changed(keyword: &str, old: Option<&Value>, new: Option<&Value>) -> String {
    match (old, new) {
        (None, Some(n)) => format!("{keyword} {n} added"),
        (Some(o), None) => format!("{keyword} {o} removed"),
        _ => format!("{keyword} changed from {} to {}", show(old), show(new)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    /// A root schema whose `spec.f` is `field`, so every case reports under `spec.f`.
    fn with_field(field: Value) -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": { "type": "object", "properties": { "f": field }, "required": ["f"] }
            }
        })
    }

    fn object(properties: Value) -> Value {
        json!({ "type": "object", "properties": properties })
    }

    fn string(extra: Value) -> Value {
        let mut schema = json!({ "type": "string" });
        if let (Some(s), Some(extra)) = (schema.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        schema
    }

    fn rule(text: &str, message: &str) -> Value {
        json!({ "rule": text, "message": message })
    }

    #[rstest]
    #[case::new_optional_property(
        object(json!({ "a": string(json!({})) })),
        object(json!({ "a": string(json!({})), "b": string(json!({})) }))
    )]
    #[case::new_optional_property_inside_list_items(
        json!({ "type": "array", "items": object(json!({ "a": string(json!({})) })) }),
        json!({ "type": "array", "items": object(json!({ "a": string(json!({})), "b": string(json!({})) })) })
    )]
    #[case::new_optional_object_with_required_fields_and_a_default(
        object(json!({})),
        object(json!({ "b": {
            "type": "object", "properties": { "c": string(json!({ "default": "x" })) }, "required": ["c"]
        } }))
    )]
    #[case::new_enum_value(string(json!({ "enum": ["a"] })), string(json!({ "enum": ["a", "b"] })))]
    #[case::enum_removed_entirely(string(json!({ "enum": ["a"] })), string(json!({})))]
    #[case::raised_max_length(string(json!({ "maxLength": 63 })), string(json!({ "maxLength": 253 })))]
    #[case::raised_max_items(json!({ "type": "array", "maxItems": 1 }), json!({ "type": "array", "maxItems": 2 }))]
    #[case::raised_max_properties(json!({ "type": "object", "maxProperties": 1 }), json!({ "type": "object", "maxProperties": 2 }))]
    #[case::raised_maximum(json!({ "type": "integer", "maximum": 10 }), json!({ "type": "integer", "maximum": 10.5 }))]
    #[case::removed_maximum(json!({ "type": "integer", "maximum": 10 }), json!({ "type": "integer" }))]
    #[case::lowered_min_length(string(json!({ "minLength": 2 })), string(json!({ "minLength": 1 })))]
    #[case::lowered_min_items(json!({ "type": "array", "minItems": 2 }), json!({ "type": "array", "minItems": 1 }))]
    #[case::lowered_min_properties(json!({ "type": "object", "minProperties": 2 }), json!({ "type": "object" }))]
    #[case::lowered_minimum(json!({ "type": "integer", "minimum": 0 }), json!({ "type": "integer", "minimum": -1 }))]
    #[case::a_zero_min_items_is_no_bound(json!({ "type": "array" }), json!({ "type": "array", "minItems": 0 }))]
    #[case::removed_pattern(string(json!({ "pattern": "^a$" })), string(json!({})))]
    #[case::removed_format(string(json!({ "format": "date-time" })), string(json!({})))]
    #[case::removed_cel_rule(
        string(json!({ "x-kubernetes-validations": [rule("self != ''", "m")] })),
        string(json!({}))
    )]
    #[case::cel_message_changed(
        string(json!({ "x-kubernetes-validations": [rule("self != ''", "old")] })),
        string(json!({ "x-kubernetes-validations": [rule("self != ''", "new")] }))
    )]
    #[case::property_no_longer_required(
        json!({ "type": "object", "properties": { "a": string(json!({})) }, "required": ["a"] }),
        json!({ "type": "object", "properties": { "a": string(json!({})) } })
    )]
    #[case::description_and_title_changed(
        string(json!({ "description": "old", "title": "Old" })),
        string(json!({ "description": "new", "title": "New" }))
    )]
    #[case::unchanged_default(string(json!({ "default": "a" })), string(json!({ "default": "a" })))]
    #[case::nullable_turned_on(string(json!({})), string(json!({ "nullable": true })))]
    #[case::explicit_false_marker_is_no_marker(
        json!({ "type": "object" }),
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": false })
    )]
    #[case::additional_properties_opened(
        json!({ "type": "object", "additionalProperties": string(json!({})) }),
        json!({ "type": "object", "additionalProperties": true })
    )]
    #[case::map_values_loosened(
        json!({ "type": "object", "additionalProperties": string(json!({ "maxLength": 1 })) }),
        json!({ "type": "object", "additionalProperties": string(json!({ "maxLength": 2 })) })
    )]
    #[case::unchanged_unknown_keyword(
        json!({ "type": "integer", "multipleOf": 2 }),
        json!({ "type": "integer", "multipleOf": 2 })
    )]
    fn compatible_changes_pass(#[case] sealed: Value, #[case] generated: Value) {
        let found = breaking_changes(&with_field(sealed), &with_field(generated));
        assert_eq!(found, vec![]);
    }

    #[rstest]
    #[case::removed_property(
        object(json!({ "a": string(json!({})), "b": string(json!({})) })),
        object(json!({ "a": string(json!({})) })),
        Rule::RemovedProperty, "spec.f.b", "property removed"
    )]
    #[case::renamed_property_is_removed(
        object(json!({ "a": string(json!({})) })),
        object(json!({ "b": string(json!({})) })),
        Rule::RemovedProperty, "spec.f.a", "property removed"
    )]
    #[case::new_property_in_an_object_keeping_unknown_fields(
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": { "b": string(json!({})) } }),
        Rule::NewPropertyInOpenObject, "spec.f.b", "property added"
    )]
    #[case::retyped(
        string(json!({})), json!({ "type": "integer" }),
        Rule::Retyped, "spec.f", r#"type changed from "string" to "integer""#
    )]
    #[case::new_format(
        string(json!({})), string(json!({ "format": "date-time" })),
        Rule::Format, "spec.f", r#"format "date-time" added"#
    )]
    #[case::changed_format(
        json!({ "type": "integer", "format": "int64" }), json!({ "type": "integer", "format": "int32" }),
        Rule::Format, "spec.f", r#"format changed from "int64" to "int32""#
    )]
    #[case::items_removed(
        json!({ "type": "array", "items": string(json!({})) }), json!({ "type": "array" }),
        Rule::ItemsShape, "spec.f", "items"
    )]
    #[case::items_turned_into_a_tuple(
        json!({ "type": "array", "items": string(json!({})) }),
        json!({ "type": "array", "items": [string(json!({}))] }),
        Rule::ItemsShape, "spec.f", "items changed"
    )]
    #[case::list_type_changed(
        json!({ "type": "array", "x-kubernetes-list-type": "atomic" }),
        json!({ "type": "array", "x-kubernetes-list-type": "set" }),
        Rule::Semantics, "spec.f", "x-kubernetes-list-type changed"
    )]
    #[case::list_map_keys_changed(
        json!({ "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] }),
        json!({ "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "kind"] }),
        Rule::Semantics, "spec.f", "x-kubernetes-list-map-keys changed"
    )]
    #[case::preserve_unknown_fields_turned_on(
        json!({ "type": "object" }),
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        Rule::Semantics, "spec.f", "x-kubernetes-preserve-unknown-fields true added"
    )]
    #[case::int_or_string_turned_off(
        json!({ "x-kubernetes-int-or-string": true }),
        json!({ "x-kubernetes-int-or-string": false }),
        Rule::Semantics, "spec.f", "x-kubernetes-int-or-string changed"
    )]
    #[case::new_required_field(
        object(json!({ "a": string(json!({})) })),
        json!({ "type": "object", "properties": { "a": string(json!({})), "b": string(json!({})) }, "required": ["b"] }),
        Rule::NewRequired, "spec.f.b", "new required field"
    )]
    #[case::existing_field_made_required(
        object(json!({ "a": string(json!({})) })),
        json!({ "type": "object", "properties": { "a": string(json!({})) }, "required": ["a"] }),
        Rule::NewRequired, "spec.f.a", "existing field made required"
    )]
    #[case::lowered_max_length(
        string(json!({ "maxLength": 63 })), string(json!({ "maxLength": 32 })),
        Rule::TighterBound, "spec.f", "maxLength lowered from 63 to 32"
    )]
    #[case::new_max_items(
        json!({ "type": "array" }), json!({ "type": "array", "maxItems": 8 }),
        Rule::TighterBound, "spec.f", "maxItems 8 added"
    )]
    #[case::lowered_max_properties(
        json!({ "type": "object", "maxProperties": 8 }), json!({ "type": "object", "maxProperties": 4 }),
        Rule::TighterBound, "spec.f", "maxProperties lowered from 8 to 4"
    )]
    #[case::lowered_maximum(
        json!({ "type": "number", "maximum": 1.5 }), json!({ "type": "number", "maximum": 1 }),
        Rule::TighterBound, "spec.f", "maximum lowered from 1.5 to 1"
    )]
    #[case::raised_min_length(
        string(json!({})), string(json!({ "minLength": 1 })),
        Rule::TighterBound, "spec.f", "minLength 1 added"
    )]
    #[case::raised_min_items(
        json!({ "type": "array", "minItems": 1 }), json!({ "type": "array", "minItems": 2 }),
        Rule::TighterBound, "spec.f", "minItems raised from 1 to 2"
    )]
    #[case::raised_min_properties(
        json!({ "type": "object", "minProperties": 0 }), json!({ "type": "object", "minProperties": 1 }),
        Rule::TighterBound, "spec.f", "minProperties raised from 0 to 1"
    )]
    #[case::new_minimum(
        json!({ "type": "integer" }), json!({ "type": "integer", "minimum": -5 }),
        Rule::TighterBound, "spec.f", "minimum -5 added"
    )]
    #[case::new_pattern(
        string(json!({})), string(json!({ "pattern": "^a$" })),
        Rule::Pattern, "spec.f", r#"pattern "^a$" added"#
    )]
    #[case::changed_pattern(
        string(json!({ "pattern": "^a+$" })), string(json!({ "pattern": "^a$" })),
        Rule::Pattern, "spec.f", "pattern changed"
    )]
    #[case::new_enum(
        string(json!({})), string(json!({ "enum": ["a"] })),
        Rule::NewEnum, "spec.f", r#"enum ["a"] added"#
    )]
    #[case::removed_enum_value_inside_list_items(
        json!({ "type": "array", "items": object(json!({ "mode": string(json!({ "enum": ["ro", "rw"] })) })) }),
        json!({ "type": "array", "items": object(json!({ "mode": string(json!({ "enum": ["ro"] })) })) }),
        Rule::RemovedEnumValue, "spec.f[].mode", r#"enum value "rw" removed"#
    )]
    #[case::new_cel_rule(
        string(json!({})),
        string(json!({ "x-kubernetes-validations": [rule("self != ''", "m")] })),
        Rule::NewValidationRule, "spec.f", "new or changed CEL rule `self != ''`"
    )]
    #[case::changed_cel_rule_text(
        string(json!({ "x-kubernetes-validations": [rule("self != ''", "m")] })),
        string(json!({ "x-kubernetes-validations": [rule("self.size() > 1", "m")] })),
        Rule::NewValidationRule, "spec.f", "new or changed CEL rule `self.size() > 1`"
    )]
    #[case::cel_rule_now_runs_without_an_old_object(
        string(json!({ "x-kubernetes-validations": [rule("self == oldSelf", "m")] })),
        string(json!({ "x-kubernetes-validations": [
            { "rule": "self == oldSelf", "message": "m", "optionalOldSelf": true }
        ] })),
        Rule::NewValidationRule, "spec.f", "(optionalOldSelf)"
    )]
    #[case::changed_default(
        string(json!({ "default": "a" })), string(json!({ "default": "b" })),
        Rule::Default, "spec.f", r#"default changed from "a" to "b""#
    )]
    #[case::removed_default(
        string(json!({ "default": "a" })), string(json!({})),
        Rule::Default, "spec.f", r#"default "a" removed"#
    )]
    #[case::new_default_on_an_existing_field(
        string(json!({})), string(json!({ "default": "a" })),
        Rule::Default, "spec.f", r#"default "a" added"#
    )]
    #[case::nullable_turned_off(
        string(json!({ "nullable": true })), string(json!({})),
        Rule::NullableOff, "spec.f", "nullable turned off"
    )]
    #[case::additional_properties_narrowed_to_a_schema(
        json!({ "type": "object", "additionalProperties": true }),
        json!({ "type": "object", "additionalProperties": string(json!({})) }),
        Rule::AdditionalProperties, "spec.f", "additionalProperties changed"
    )]
    #[case::additional_properties_removed(
        json!({ "type": "object", "additionalProperties": string(json!({})) }),
        json!({ "type": "object" }),
        Rule::AdditionalProperties, "spec.f", "additionalProperties"
    )]
    #[case::map_values_tightened(
        json!({ "type": "object", "additionalProperties": string(json!({ "maxLength": 2 })) }),
        json!({ "type": "object", "additionalProperties": string(json!({ "maxLength": 1 })) }),
        Rule::TighterBound, "spec.f{}", "maxLength lowered from 2 to 1"
    )]
    #[case::changed_unknown_keyword(
        json!({ "type": "integer" }), json!({ "type": "integer", "multipleOf": 2 }),
        Rule::UnknownKeyword, "spec.f", "multipleOf 2 added"
    )]
    fn breaking_changes_are_refused_with_path_and_rule(
        #[case] sealed: Value,
        #[case] generated: Value,
        #[case] rule: Rule,
        #[case] path: &str,
        #[case] change: &str,
    ) {
        let found = breaking_changes(&with_field(sealed), &with_field(generated));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].rule, found[0].path.as_str()), (rule, path));
        let message = found[0].to_string();
        assert!(message.starts_with(&format!("{path}: ")), "{message}");
        assert!(message.contains(change), "{message}");
        assert!(message.ends_with(&rule.to_string()), "{message}");
    }

    #[test]
    fn a_root_change_is_reported_at_the_root() {
        let found = breaking_changes(&json!({ "type": "object" }), &json!({ "type": "array" }));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "(root)");
    }

    #[test]
    fn every_breaking_change_is_reported() {
        let sealed =
            object(json!({ "a": string(json!({})), "b": string(json!({ "maxLength": 2 })) }));
        let generated = object(json!({ "b": string(json!({ "maxLength": 1 })) }));
        let rules: Vec<Rule> = breaking_changes(&sealed, &generated)
            .into_iter()
            .map(|b| b.rule)
            .collect();
        assert_eq!(rules, vec![Rule::RemovedProperty, Rule::TighterBound]);
    }
}
