//! Progress on stderr, for people: bars and spinners drawn only where someone watches
//! (indicatif hides them when stderr is not a terminal) and never on stdout, whose lines
//! (tables, JSON) stay as they are.

use std::{borrow::Cow, io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps drawn with `template` (indicatif's: `{msg}`, `{bar:30}`, `{pos}`,
/// `{len}`, `{elapsed}`, `{eta}`), or a hidden one unless `shown`.
pub fn bar(shown: bool, len: usize, template: &str) -> ProgressBar {
    if !shown || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(len).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// A spinner that says what is under way (`message`) and for how long, ticking on its own
/// while the caller waits (a setup, processes starting); hidden unless `shown`. Finish it
/// with `finish_and_clear`.
pub fn spinner(shown: bool, message: impl Into<Cow<'static, str>>) -> ProgressBar {
    if !shown || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
