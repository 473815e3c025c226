//! What the operator and the trusted applier of an approved `record` Card must agree on: which
//! paths a record may write, and the commit trailers that name the card (the applier looks for
//! them to apply a card exactly once).

/// Trailer naming the Card (`<namespace>/<name>`) a commit applied.
pub const CARD_TRAILER: &str = "Vexa-Card";
/// Trailer naming the Dispatch that proposed the card.
pub const SOURCE_DISPATCH_TRAILER: &str = "Vexa-Source-Dispatch";
/// Trailer naming the person who approved it.
pub const APPROVED_BY_TRAILER: &str = "Vexa-Approved-By";
/// The largest file a record card carries (the Card schema's `record.content` limit).
pub const MAX_RECORD_CONTENT: usize = 262_144;
/// The longest card title, in characters (the Card schema's limit).
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest card body, in characters (the Card schema's limit).
pub const MAX_BODY_CHARS: usize = 65_536;
/// The kinds an agent may propose on its stream; `send` comes only from a gated tool call
/// through the gateway.
pub const PROPOSABLE_KINDS: [&str; 5] = ["record", "draft", "suggestion", "alert", "digest"];

/// The agent worker's subcommand that applies an approved record card (the apply Job's
/// command, in the agent worker's image).
pub const APPLY_RECORD_SUBCOMMAND: &str = "apply-record";
/// The apply Job's environment, read by [`APPLY_RECORD_SUBCOMMAND`].
pub mod apply_env {
    /// Where the workspace's volume is mounted.
    pub const VOLUME: &str = "VEXA_VOLUME";
    /// The workspace's folder, relative to the volume.
    pub const SUBPATH: &str = "VEXA_WORKSPACE_SUBPATH";
    /// The Card, `<namespace>/<name>`.
    pub const CARD: &str = "VEXA_CARD";
    /// The card's title (the commit's subject line).
    pub const TITLE: &str = "VEXA_CARD_TITLE";
    /// The Dispatch that proposed the card.
    pub const SOURCE_DISPATCH: &str = "VEXA_SOURCE_DISPATCH";
    /// Who approved it (the commit's author).
    pub const APPROVED_BY: &str = "VEXA_APPROVED_BY";
    /// The file's path in the workspace.
    pub const PATH: &str = "VEXA_RECORD_PATH";
    /// A file holding the record's content (a mounted Secret key: too large for a variable).
    pub const CONTENT_FILE: &str = "VEXA_RECORD_CONTENT_FILE";
}

/// Whether `path` is a file inside a workspace: relative, no `..`, `.` or empty segment, no
/// backslash or NUL, and not under `.git` (git's own files would be configuration for every
/// later run).
pub fn safe_record_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != ".." && s != "." && !s.eq_ignore_ascii_case(".git"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_stay_inside_the_workspace_and_out_of_git() {
        for ok in [
            "a.md",
            "meetings/2026/a.md",
            ".gitignore",
            "notes/.github/x",
        ] {
            assert!(safe_record_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            ".git/config",
            "sub/.GIT/hooks/x",
            "a\\b",
            "a\0b",
        ] {
            assert!(!safe_record_path(bad), "{bad:?}");
        }
    }
}
