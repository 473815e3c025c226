//! A Schedule's `email.received` filters (`from`, `subjectPattern`), checked against headers.

use regex::{Regex, RegexBuilder};

use crate::header::Header;

/// The longest `from` or `subjectPattern` accepted (the CRD's limit too).
pub const MAX_PATTERN_LEN: usize = 256;
/// The compiled program of a subject pattern is kept small: no pattern costs more than this.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Why a filter is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// Longer than [`MAX_PATTERN_LEN`].
    #[error("{0} is longer than {MAX_PATTERN_LEN} characters")]
    TooLong(&'static str),
    /// `from` is neither an address nor `@domain`.
    #[error("from must be an address (alice@example.com) or a domain (@example.com), not {0:?}")]
    BadFrom(String),
    /// `subjectPattern` does not compile (or is too costly).
    #[error("subjectPattern is not a valid regular expression: {0}")]
    BadPattern(String),
}

/// A compiled filter: a message matches when every rule given matches.
#[derive(Clone, Debug)]
pub struct Filter {
    from: Option<From>,
    subject: Option<Regex>,
}

#[derive(Clone, Debug)]
enum From {
    /// The whole address, lowercase.
    Address(String),
    /// The domain after `@`, lowercase.
    Domain(String),
}

impl Filter {
    /// Compiles the rules; `None` means "any".
    pub fn new(from: Option<&str>, subject_pattern: Option<&str>) -> Result<Self, FilterError> {
        let from = from.map(parse_from).transpose()?;
        let subject = subject_pattern
            .map(|p| {
                if p.len() > MAX_PATTERN_LEN {
                    return Err(FilterError::TooLong("subjectPattern"));
                }
                RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| FilterError::BadPattern(e.to_string()))
            })
            .transpose()?;
        Ok(Self { from, subject })
    }

    /// Whether the message's headers pass every rule. A rule on a missing header fails.
    pub fn matches(&self, header: &Header) -> bool {
        let from_ok = match &self.from {
            None => true,
            Some(rule) => header.from.as_deref().is_some_and(|f| {
                let f = f.to_lowercase();
                match rule {
                    From::Address(a) => f == *a,
                    From::Domain(d) => f.rsplit_once('@').is_some_and(|(_, dom)| dom == d),
                }
            }),
        };
        let subject_ok = match &self.subject {
            None => true,
            Some(re) => header.subject.as_deref().is_some_and(|s| re.is_match(s)),
        };
        from_ok && subject_ok
    }
}

fn parse_from(from: &str) -> Result<From, FilterError> {
    if from.len() > MAX_PATTERN_LEN {
        return Err(FilterError::TooLong("from"));
    }
    let bad = || FilterError::BadFrom(from.to_owned());
    if from.is_empty() || from.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let lower = from.to_lowercase();
    match lower.split_once('@') {
        Some(("", domain)) if !domain.is_empty() && !domain.contains('@') => {
            Ok(From::Domain(domain.to_owned()))
        }
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(From::Address(lower))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rstest::rstest;

    use super::*;

    fn header(from: Option<&str>, subject: Option<&str>) -> Header {
        Header {
            uid: 1,
            message_id: None,
            from: from.map(str::to_owned),
            to: vec![],
            subject: subject.map(str::to_owned),
            date: None,
            size: 0,
        }
    }

    #[rstest]
    #[case(None, None, Some("x@y.z"), Some("s"), true)]
    #[case(Some("alice@vexa.test"), None, Some("Alice@VEXA.test"), None, true)]
    #[case(Some("ALICE@vexa.test"), None, Some("alice@vexa.test"), None, true)]
    #[case(Some("alice@vexa.test"), None, Some("bob@vexa.test"), None, false)]
    #[case(Some("alice@vexa.test"), None, None, None, false)]
    #[case(Some("@vexa.test"), None, Some("bob@Vexa.Test"), None, true)]
    #[case(Some("@vexa.test"), None, Some("bob@evil-vexa.test"), None, false)]
    #[case(Some("@vexa.test"), None, Some("bob@vexa.test.evil.com"), None, false)]
    #[case(None, Some("^\\[triage\\]"), None, Some("[triage] help"), true)]
    #[case(None, Some("^\\[triage\\]"), None, Some("re: [triage] help"), false)]
    #[case(None, Some("invoice"), None, None, false)]
    #[case(
        Some("@vexa.test"),
        Some("(?i)urgent"),
        Some("a@vexa.test"),
        Some("URGENT now"),
        true
    )]
    #[case(
        Some("@vexa.test"),
        Some("(?i)urgent"),
        Some("a@other.test"),
        Some("URGENT now"),
        false
    )]
    fn rules(
        #[case] from: Option<&str>,
        #[case] pattern: Option<&str>,
        #[case] h_from: Option<&str>,
        #[case] h_subject: Option<&str>,
        #[case] expected: bool,
    ) {
        let f = Filter::new(from, pattern).unwrap();
        assert_eq!(f.matches(&header(h_from, h_subject)), expected);
    }

    #[rstest]
    #[case(Some(""), None)]
    #[case(Some("alice"), None)]
    #[case(Some("a@b@c"), None)]
    #[case(Some("@"), None)]
    #[case(Some("alice@"), None)]
    #[case(Some("a b@c"), None)]
    #[case(Some("a@b\r\nBcc: x"), None)]
    #[case(None, Some("("))]
    #[case(None, Some("a{1000}{1000}"))]
    fn refused(#[case] from: Option<&str>, #[case] pattern: Option<&str>) {
        assert!(Filter::new(from, pattern).is_err());
    }

    #[test]
    fn long_rules_are_refused() {
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert_eq!(
            Filter::new(None, Some(&long)).unwrap_err(),
            FilterError::TooLong("subjectPattern")
        );
        let long_from = format!("@{long}");
        assert_eq!(
            Filter::new(Some(&long_from), None).unwrap_err(),
            FilterError::TooLong("from")
        );
    }
}
