//! Keys of `portrace top`: which key does what, in each mode (the main screen, the filter
//! being typed, an overlay open, a recording being browsed). Pure: a key event in, an
//! [`Action`] out; the help screen lists the same bindings from [`HELP`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Action, Overlay};

/// What the keys act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    pub editing_filter: bool,
    pub overlay: Overlay,
    /// Browsing a recording (`--from FILE`).
    pub browsing: bool,
}

/// The key bindings as the help screen shows them: (keys, what they do, browsing only).
pub const HELP: &[(&str, &str, bool)] = &[
    ("q  Esc  Ctrl-C", "quit (Esc closes an open window first)", false),
    ("Up Down  PgUp PgDn  Home End", "move the selection (or scroll a timeline)", false),
    ("Enter", "open the selected connection's timeline", false),
    ("/", "filter: keep the rows that contain every word typed", false),
    ("s  S", "next sort column, reverse the order", false),
    ("p  Space", "pause the display (tracing goes on), resume", false),
    ("?", "this help", false),
    ("Space  p", "play the recording, stop", true),
    ("Right  Left", "one transition forward, back", true),
    ("]  [", "ten seconds forward, back", true),
    ("g  G", "the recording's start, its end", true),
    ("+  -", "play faster, slower", true),
];

/// The action for `key` in `mode`, if any.
pub fn action(key: KeyEvent, mode: Mode) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return Some(Action::Quit);
    }
    if mode.editing_filter {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterDone),
            KeyCode::Esc => Some(Action::FilterClear),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Char('u') if ctrl => Some(Action::FilterClear),
            KeyCode::Char(c) if !ctrl => Some(Action::FilterChar(c)),
            _ => None,
        };
    }
    let common = match key.code {
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Home => Some(Action::Home),
        KeyCode::End => Some(Action::End),
        KeyCode::Char('?') | KeyCode::F(1) => Some(Action::Help),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    if mode.overlay != Overlay::None {
        return match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => Some(Action::Close),
            _ => None,
        };
    }
    let browse = if mode.browsing {
        match key.code {
            KeyCode::Right | KeyCode::Char('l') => Some(Action::StepForward),
            KeyCode::Left | KeyCode::Char('h') => Some(Action::StepBack),
            KeyCode::Char(']') => Some(Action::JumpForward),
            KeyCode::Char('[') => Some(Action::JumpBack),
            KeyCode::Char('g') => Some(Action::ToStart),
            KeyCode::Char('G') => Some(Action::ToEnd),
            KeyCode::Char('+') | KeyCode::Char('=') => Some(Action::Faster),
            KeyCode::Char('-') => Some(Action::Slower),
            _ => None,
        }
    } else {
        None
    };
    browse.or(match key.code {
        KeyCode::Esc => Some(Action::Quit),
        KeyCode::Enter => Some(Action::OpenTimeline),
        KeyCode::Char('/') => Some(Action::EditFilter),
        KeyCode::Char('s') => Some(Action::CycleSort),
        KeyCode::Char('S') => Some(Action::ReverseSort),
        KeyCode::Char('p') | KeyCode::Char(' ') => Some(Action::TogglePause),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    const MAIN: Mode = Mode { editing_filter: false, overlay: Overlay::None, browsing: false };

    #[test]
    fn main_screen_keys() {
        let cases = [
            (KeyCode::Char('q'), Action::Quit),
            (KeyCode::Esc, Action::Quit),
            (KeyCode::Char('/'), Action::EditFilter),
            (KeyCode::Char('s'), Action::CycleSort),
            (KeyCode::Char('S'), Action::ReverseSort),
            (KeyCode::Char('p'), Action::TogglePause),
            (KeyCode::Char(' '), Action::TogglePause),
            (KeyCode::Enter, Action::OpenTimeline),
            (KeyCode::Char('?'), Action::Help),
            (KeyCode::Down, Action::Down),
            (KeyCode::PageUp, Action::PageUp),
        ];
        for (code, want) in cases {
            assert_eq!(action(key(code), MAIN), Some(want), "{code:?}");
        }
        assert_eq!(action(key(KeyCode::Right), MAIN), None, "live: no time travel");
        assert_eq!(action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), MAIN), Some(Action::Quit));
    }

    #[test]
    fn typing_a_filter_takes_every_character() {
        let mode = Mode { editing_filter: true, ..MAIN };
        assert_eq!(action(key(KeyCode::Char('q')), mode), Some(Action::FilterChar('q')));
        assert_eq!(action(key(KeyCode::Char('/')), mode), Some(Action::FilterChar('/')));
        assert_eq!(action(key(KeyCode::Enter), mode), Some(Action::FilterDone));
        assert_eq!(action(key(KeyCode::Esc), mode), Some(Action::FilterClear));
        assert_eq!(action(key(KeyCode::Backspace), mode), Some(Action::FilterBackspace));
        assert_eq!(action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), mode), Some(Action::Quit));
    }

    #[test]
    fn esc_closes_an_overlay_before_it_quits() {
        let mode = Mode { overlay: Overlay::Help, ..MAIN };
        assert_eq!(action(key(KeyCode::Esc), mode), Some(Action::Close));
        assert_eq!(action(key(KeyCode::Char('q')), mode), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Char('s')), mode), None);
    }

    #[test]
    fn browsing_keys_move_through_time() {
        let mode = Mode { browsing: true, ..MAIN };
        assert_eq!(action(key(KeyCode::Right), mode), Some(Action::StepForward));
        assert_eq!(action(key(KeyCode::Left), mode), Some(Action::StepBack));
        assert_eq!(action(key(KeyCode::Char(']')), mode), Some(Action::JumpForward));
        assert_eq!(action(key(KeyCode::Char('G')), mode), Some(Action::ToEnd));
        assert_eq!(action(key(KeyCode::Char(' ')), mode), Some(Action::TogglePause));
    }

    #[test]
    fn key_releases_do_nothing() {
        let mut k = key(KeyCode::Char('q'));
        k.kind = KeyEventKind::Release;
        assert_eq!(action(k, MAIN), None);
    }
}
