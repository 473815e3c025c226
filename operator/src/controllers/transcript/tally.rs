//! A transcript's stream folded into what its status says, pure: the completed segments in the
//! order they completed, a chained digest over them, the last segment seen and whether the
//! session ended.
//!
//! The stream is written by a meeting integration, not by us, so every entry is hostile input:
//! an entry that is not `{type, segments}` JSON, a segment of another session, a segment whose
//! id is not `<sessionUid>:<speakerKey>:<startMs>`, an oversize payload, entries after
//! `session_end`: each is counted as refused with its reason and changes nothing else. A
//! segment completed twice counts once (the first completion is the one digested), so a
//! transcriber that re-sends final segments cannot inflate the count or move the digest.
//!
//! Digest: `d0 = SHA-256("vexa-transcript-v1")`, `dn = SHA-256(dn-1 || segmentId || 0x00 ||
//! speaker || 0x00 || text || 0x00 || start || 0x00 || end)` over completed segments in the order
//! they completed, hex. Anyone holding the stream recomputes it; an edited, dropped or
//! reordered segment changes it.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use vexa_crds::Segment;

/// The largest payload one entry may carry.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// The most segments one entry may carry.
pub const MAX_SEGMENTS_PER_ENTRY: usize = 512;
/// The most distinct completed segments one transcript keeps track of (a 4-hour meeting has a
/// few thousand); past it, segments are refused `TooManySegments`.
pub const MAX_SEGMENTS: usize = 100_000;

/// Why an entry or a segment changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The entry has no `payload` field, or it is not JSON of the expected shape.
    Malformed,
    /// The payload is over [`MAX_PAYLOAD_BYTES`] or carries over [`MAX_SEGMENTS_PER_ENTRY`].
    Oversize,
    /// A segment id that is not `<sessionUid>:<speakerKey>:<startMs>` of this session.
    ForeignSegment,
    /// A segment whose start or end is not a finite, non-negative number, or ends before it
    /// starts.
    BadTiming,
    /// An entry after `session_end`.
    AfterEnd,
    /// Past [`MAX_SEGMENTS`].
    TooManySegments,
}

impl Refusal {
    /// The reason as metrics and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "Malformed",
            Refusal::Oversize => "Oversize",
            Refusal::ForeignSegment => "ForeignSegment",
            Refusal::BadTiming => "BadTiming",
            Refusal::AfterEnd => "AfterEnd",
            Refusal::TooManySegments => "TooManySegments",
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Payload {
    Transcription {
        segments: Vec<Segment>,
    },
    SessionEnd {
        #[serde(default)]
        segments: Vec<Segment>,
    },
}

/// A transcript as far as its stream has been read.
#[derive(Debug, Clone)]
pub struct Tally {
    session: String,
    completed: HashSet<String>,
    digest: [u8; 32],
    /// Completed segments, in the order they completed.
    pub segment_count: u64,
    /// The id of the last segment seen (completed or not).
    pub last_segment_id: Option<String>,
    /// Whether `session_end` has been read.
    pub ended: bool,
    /// The id of the last stream entry read: where reading resumes.
    pub cursor: Option<String>,
    /// Refusals so far, by reason.
    pub refused: BTreeMap<Refusal, u64>,
}

impl Tally {
    /// An empty tally for the session `session` (the meeting's `sessionUid`, else its id).
    pub fn new(session: &str) -> Self {
        Self {
            session: session.to_owned(),
            completed: HashSet::new(),
            digest: Sha256::digest(b"vexa-transcript-v1").into(),
            segment_count: 0,
            last_segment_id: None,
            ended: false,
            cursor: None,
            refused: BTreeMap::new(),
        }
    }

    /// The digest so far, hex.
    pub fn digest(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn refuse(&mut self, why: Refusal) {
        *self.refused.entry(why).or_default() += 1;
    }

    /// Reads one stream entry: `id` and its `payload` field (`None` when the entry has none).
    pub fn feed(&mut self, id: &str, payload: Option<&[u8]>) {
        self.cursor = Some(id.to_owned());
        if self.ended {
            return self.refuse(Refusal::AfterEnd);
        }
        let Some(payload) = payload else {
            return self.refuse(Refusal::Malformed);
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            return self.refuse(Refusal::Oversize);
        }
        let (segments, end) = match serde_json::from_slice::<Payload>(payload) {
            Ok(Payload::Transcription { segments }) => (segments, false),
            Ok(Payload::SessionEnd { segments }) => (segments, true),
            Err(_) => return self.refuse(Refusal::Malformed),
        };
        if segments.len() > MAX_SEGMENTS_PER_ENTRY {
            return self.refuse(Refusal::Oversize);
        }
        for s in segments {
            self.segment(s);
        }
        self.ended = end;
    }

    fn segment(&mut self, s: Segment) {
        if !self.is_ours(&s.segment_id) {
            return self.refuse(Refusal::ForeignSegment);
        }
        if !(s.start.is_finite() && s.end.is_finite() && s.start >= 0.0 && s.end >= s.start) {
            return self.refuse(Refusal::BadTiming);
        }
        self.last_segment_id = Some(s.segment_id.clone());
        if !s.completed || self.completed.contains(&s.segment_id) {
            return;
        }
        if self.completed.len() >= MAX_SEGMENTS {
            return self.refuse(Refusal::TooManySegments);
        }
        let mut h = Sha256::new();
        h.update(self.digest);
        for part in [
            s.segment_id.as_bytes(),
            s.speaker.as_bytes(),
            s.text.as_bytes(),
            s.start.to_string().as_bytes(),
        ] {
            h.update(part);
            h.update([0]);
        }
        h.update(s.end.to_string().as_bytes());
        self.digest = h.finalize().into();
        self.completed.insert(s.segment_id);
        self.segment_count += 1;
    }

    /// `<session>:<speakerKey>:<startMs>` with a non-empty speaker key and digits for startMs.
    fn is_ours(&self, id: &str) -> bool {
        let Some(rest) = id
            .strip_prefix(self.session.as_str())
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        match rest.rsplit_once(':') {
            Some((speaker, ms)) => {
                !speaker.is_empty()
                    && id.len() <= 512
                    && !ms.is_empty()
                    && ms.len() <= 12
                    && ms.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SESSION: &str = "abc-defg-hij";

    fn seg(speaker: &str, start_ms: u64, text: &str, completed: bool) -> serde_json::Value {
        json!({"segmentId": format!("{SESSION}:{speaker}:{start_ms}"), "speaker": speaker,
               "text": text, "start": start_ms as f64 / 1000.0,
               "end": start_ms as f64 / 1000.0 + 1.5, "completed": completed})
    }

    fn entry(kind: &str, segments: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "segments": segments})).unwrap_or_default()
    }

    fn golden() -> Vec<Vec<u8>> {
        vec![
            entry("transcription", vec![seg("ann", 0, "Morning", false)]),
            entry("transcription", vec![seg("ann", 0, "Morning all.", true)]),
            entry(
                "transcription",
                vec![seg("bo", 2000, "Shipping the schedule controller.", true)],
            ),
            entry("session_end", vec![seg("ann", 4000, "Thanks.", true)]),
        ]
    }

    fn tally_of(entries: &[Vec<u8>]) -> Tally {
        let mut t = Tally::new(SESSION);
        for (i, e) in entries.iter().enumerate() {
            t.feed(&format!("{i}-0"), Some(e));
        }
        t
    }

    #[test]
    fn completed_segments_count_once_and_the_session_end_completes() {
        let t = tally_of(&golden());
        assert_eq!(t.segment_count, 3);
        assert!(t.ended);
        assert_eq!(t.last_segment_id.as_deref(), Some("abc-defg-hij:ann:4000"));
        assert_eq!(t.cursor.as_deref(), Some("3-0"));
        assert!(t.refused.is_empty(), "{:?}", t.refused);
    }

    #[test]
    fn a_resent_final_segment_changes_neither_count_nor_digest() {
        let mut entries = golden();
        let clean = tally_of(&entries);
        entries.insert(
            2,
            entry("transcription", vec![seg("ann", 0, "Morning all!!", true)]),
        );
        let resent = tally_of(&entries);
        assert_eq!(resent.segment_count, clean.segment_count);
        assert_eq!(resent.digest(), clean.digest());
    }

    #[test]
    fn an_edited_or_reordered_segment_moves_the_digest() {
        let clean = tally_of(&golden()).digest();
        let mut edited = golden();
        edited[2] = entry(
            "transcription",
            vec![seg("bo", 2000, "Shipping nothing.", true)],
        );
        assert_ne!(tally_of(&edited).digest(), clean);
        let mut reordered = golden();
        reordered.swap(1, 2);
        assert_ne!(tally_of(&reordered).digest(), clean);
    }

    #[test]
    fn hostile_entries_are_refused_with_their_reason_and_change_nothing() {
        let clean = tally_of(&golden());
        let mut t = Tally::new(SESSION);
        let other_session = json!({"segmentId": "zzz-zzzz-zzz:eve:0", "speaker": "eve",
            "text": "injected", "start": 0.0, "end": 1.0, "completed": true});
        let bad_id = json!({"segmentId": format!("{SESSION}:eve:notms"), "speaker": "eve",
            "text": "x", "start": 0.0, "end": 1.0, "completed": true});
        let prefix_trick = json!({"segmentId": format!("{SESSION}x:eve:1"), "speaker": "eve",
            "text": "x", "start": 0.0, "end": 1.0, "completed": true});
        let backwards = json!({"segmentId": format!("{SESSION}:eve:5"), "speaker": "eve",
            "text": "x", "start": 9.0, "end": 1.0, "completed": true});
        let too_many: Vec<_> = (0..=MAX_SEGMENTS_PER_ENTRY as u64)
            .map(|i| seg("eve", 100_000 + i, "x", true))
            .collect();
        let hostile: Vec<Option<Vec<u8>>> = vec![
            None,
            Some(b"not json".to_vec()),
            Some(br#"{"type":"delete_all"}"#.to_vec()),
            Some(vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            Some(entry("transcription", too_many)),
            Some(entry("transcription", vec![other_session])),
            Some(entry("transcription", vec![bad_id])),
            Some(entry("transcription", vec![prefix_trick])),
            Some(entry("transcription", vec![backwards])),
        ];
        let mut n = 0;
        for e in &golden()[..3] {
            t.feed(&format!("{n}-0"), Some(e));
            n += 1;
        }
        for h in &hostile {
            t.feed(&format!("{n}-0"), h.as_deref());
            n += 1;
        }
        t.feed(&format!("{n}-0"), Some(&golden()[3]));
        n += 1;
        t.feed(
            &format!("{n}-0"),
            Some(&entry(
                "transcription",
                vec![seg("eve", 9000, "late", true)],
            )),
        );
        assert_eq!(t.segment_count, clean.segment_count);
        assert_eq!(t.digest(), clean.digest());
        let reasons: Vec<(&str, u64)> = t.refused.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        assert_eq!(
            reasons,
            vec![
                ("Malformed", 3),
                ("Oversize", 2),
                ("ForeignSegment", 3),
                ("BadTiming", 1),
                ("AfterEnd", 1),
            ]
        );
    }
}
