//! ANSI colours, only on a terminal and only without `NO_COLOR`.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Which streams get colour.
#[derive(Debug, Clone, Copy)]
struct Colors {
    out: bool,
    err: bool,
}

static COLORS: OnceLock<Colors> = OnceLock::new();

fn colors() -> Colors {
    *COLORS.get_or_init(|| {
        let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Colors {
            out: allowed && std::io::stdout().is_terminal(),
            err: allowed && std::io::stderr().is_terminal(),
        }
    })
}

pub const RED: &str = "\x1b[0;31m";
pub const GREEN: &str = "\x1b[0;32m";
pub const YELLOW: &str = "\x1b[1;33m";
pub const BLUE: &str = "\x1b[0;34m";
pub const CYAN: &str = "\x1b[0;36m";
const RESET: &str = "\x1b[0m";

fn paint(on: bool, color: &str, s: &str) -> String {
    if on {
        format!("{color}{s}{RESET}")
    } else {
        s.to_string()
    }
}

/// `s` coloured for stdout.
pub fn out(color: &str, s: &str) -> String {
    paint(colors().out, color, s)
}

/// `s` coloured for stderr.
pub fn err(color: &str, s: &str) -> String {
    paint(colors().err, color, s)
}
