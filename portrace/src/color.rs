//! Whether output may be coloured when the user has not said (`--color auto`, and `top`,
//! which has no flag): only on a terminal, and not when the environment asks for none.
//! This module owns those conventions: `NO_COLOR` set to a non-empty value turns colour
//! off (an empty one does not, as no-color.org specifies), and so does `TERM=dumb`, a
//! terminal that cannot show it.

use std::ffi::OsStr;

/// Whether the environment allows colour: pure, from the values of `NO_COLOR` and `TERM`.
pub fn allowed_by(no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    let dumb = term.is_some_and(|t| t == "dumb");
    !no_color && !dumb
}

/// Whether this process's environment allows colour.
pub fn allowed() -> bool {
    allowed_by(std::env::var_os("NO_COLOR").as_deref(), std::env::var_os("TERM").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_with(no_color: Option<&str>, term: Option<&str>) -> bool {
        allowed_by(no_color.map(OsStr::new), term.map(OsStr::new))
    }

    #[test]
    fn no_color_counts_only_when_not_empty() {
        assert!(allowed_with(None, Some("xterm-256color")));
        assert!(allowed_with(Some(""), Some("xterm-256color")), "an empty NO_COLOR is as if unset");
        assert!(!allowed_with(Some("1"), Some("xterm-256color")));
        assert!(!allowed_with(Some("0"), None), "any non-empty value, even 0");
    }

    #[test]
    fn a_dumb_terminal_gets_no_colour() {
        assert!(!allowed_with(None, Some("dumb")));
        assert!(allowed_with(None, Some("dumb-not")));
        assert!(allowed_with(None, None));
    }
}
