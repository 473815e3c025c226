//! Registration entries as this crate's callers see them, and their wire form.

use std::fmt;

use crate::proto::{EntryMsg, SelectorMsg, SpiffeIdMsg};

/// A SPIFFE ID (`spiffe://<trust domain><path>`), kept split as SPIRE's API wants it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

/// Why a string is not a SPIFFE ID this crate accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{id:?} is not a SPIFFE ID: {why}")]
pub struct SpiffeIdError {
    id: String,
    why: &'static str,
}

impl SpiffeId {
    /// Parses `spiffe://<trust domain>/<path>`: a non-empty lowercase trust domain and a
    /// non-empty path (SPIRE refuses an entry whose SPIFFE ID has no path).
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        let fail = |why| SpiffeIdError {
            id: id.to_string(),
            why,
        };
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| fail("it must start with spiffe://"))?;
        let (domain, path) = rest
            .find('/')
            .map(|i| rest.split_at(i))
            .ok_or_else(|| fail("it has no path"))?;
        let domain_ok = !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
        if !domain_ok {
            return Err(fail(
                "the trust domain must be lowercase letters, digits, '-', '.' or '_'",
            ));
        }
        if path.len() < 2 || path.ends_with('/') || path.contains("//") {
            return Err(fail(
                "the path must be non-empty, without empty segments or a trailing '/'",
            ));
        }
        Ok(SpiffeId {
            trust_domain: domain.to_string(),
            path: path.to_string(),
        })
    }

    /// The trust domain (`vexa.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path, with its leading `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn to_msg(&self) -> SpiffeIdMsg {
        SpiffeIdMsg {
            trust_domain: self.trust_domain.clone(),
            path: self.path.clone(),
        }
    }

    fn from_msg(msg: &SpiffeIdMsg) -> Self {
        SpiffeId {
            trust_domain: msg.trust_domain.clone(),
            path: msg.path.clone(),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// One selector (`k8s:pod-uid:<uid>` is type `k8s`, value `pod-uid:<uid>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    /// The attestor plugin that produces it (`k8s`, `unix`, …).
    pub kind: String,
    /// What that plugin must observe (`pod-uid:…`, `container-name:…`).
    pub value: String,
}

impl Selector {
    /// A selector of the given type and value.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Selector {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A registration entry: a workload matching every selector, under an agent whose ID is
/// `parent_id`, gets an SVID for `spiffe_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry ID, chosen by the caller so that a retry never creates a second entry
    /// (SPIRE allows `[A-Za-z0-9._-]`, at most 255 characters).
    pub id: String,
    /// The SPIFFE ID the workload gets.
    pub spiffe_id: SpiffeId,
    /// The SPIFFE ID of the agent (or node alias) under which the workload runs.
    pub parent_id: SpiffeId,
    /// All must match (SPIRE's semantics for an entry's selectors).
    pub selectors: Vec<Selector>,
    /// Seconds since the Unix epoch after which SPIRE drops the entry by itself; 0 = never.
    pub expires_at: i64,
    /// A free-form hint SPIRE hands to the workload with the SVID (empty = none).
    pub hint: String,
}

impl Entry {
    pub(crate) fn to_msg(&self) -> EntryMsg {
        EntryMsg {
            id: self.id.clone(),
            spiffe_id: Some(self.spiffe_id.to_msg()),
            parent_id: Some(self.parent_id.to_msg()),
            selectors: self
                .selectors
                .iter()
                .map(|s| SelectorMsg {
                    r#type: s.kind.clone(),
                    value: s.value.clone(),
                })
                .collect(),
            x509_svid_ttl: 0,
            expires_at: self.expires_at,
            hint: self.hint.clone(),
        }
    }

    pub(crate) fn from_msg(msg: &EntryMsg) -> Self {
        let id_of = |m: &Option<SpiffeIdMsg>| {
            SpiffeId::from_msg(m.as_ref().unwrap_or(&SpiffeIdMsg::default()))
        };
        Entry {
            id: msg.id.clone(),
            spiffe_id: id_of(&msg.spiffe_id),
            parent_id: id_of(&msg.parent_id),
            selectors: msg
                .selectors
                .iter()
                .map(|s| Selector::new(s.r#type.clone(), s.value.clone()))
                .collect(),
            expires_at: msg.expires_at,
            hint: msg.hint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spiffe_ids_parse_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://vexa.local/ns/team/dispatch/chat-1").unwrap();
        assert_eq!(id.trust_domain(), "vexa.local");
        assert_eq!(id.path(), "/ns/team/dispatch/chat-1");
        assert_eq!(
            id.to_string(),
            "spiffe://vexa.local/ns/team/dispatch/chat-1"
        );
    }

    #[test]
    fn malformed_spiffe_ids_are_refused() {
        for bad in [
            "https://vexa.local/x",
            "spiffe://vexa.local",
            "spiffe://vexa.local/",
            "spiffe:///x",
            "spiffe://Vexa.Local/x",
            "spiffe://vexa.local/a//b",
            "spiffe://vexa.local/a/",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn an_entry_survives_its_wire_form() {
        let entry = Entry {
            id: "vexa-pod-1".into(),
            spiffe_id: SpiffeId::parse("spiffe://vexa.local/ns/a/dispatch/b").unwrap(),
            parent_id: SpiffeId::parse("spiffe://vexa.local/vexa/node").unwrap(),
            selectors: vec![Selector::new("k8s", "pod-uid:1")],
            expires_at: 1_800_000_000,
            hint: String::new(),
        };
        assert_eq!(Entry::from_msg(&entry.to_msg()), entry);
    }
}
