//! Text formats of the contract: JavaScript's `trim`, `formatBytes`,
//! `df -h` sizes, uptime, ISO timestamps, and numbers without `.0`.

use chrono::{DateTime, SecondsFormat, Utc};

/// JavaScript `String.prototype.trim`: ASCII and Unicode white space,
/// including U+FEFF.
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// The original's `formatBytes`: one decimal, units up to TB.
pub fn format_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// GNU `df -h` size: powers of 1024, rounded up, one decimal below 10.
pub fn df_human(n: u64) -> String {
    let units = ["", "K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return format!("{n}");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v < 10.0 {
        let r = (v * 10.0).ceil() / 10.0;
        if r >= 10.0 {
            format!("{}{}", r.ceil() as u64, units[i])
        } else {
            format!("{r:.1}{}", units[i])
        }
    } else {
        let r = v.ceil();
        if r >= 1024.0 && i + 1 < units.len() {
            format!("1.0{}", units[i + 1])
        } else {
            format!("{}{}", r as u64, units[i])
        }
    }
}

/// `<d>d <h>h <m>m`, floored.
pub fn uptime(secs: u64) -> String {
    format!(
        "{}d {}h {}m",
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60
    )
}

/// Node.js `os.arch()` name for a `uname -m` machine.
pub fn node_arch(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" => "x64",
        "aarch64" | "arm64" => "arm64",
        "x86" | "i386" | "i686" => "ia32",
        "powerpc64" | "ppc64" | "ppc64le" => "ppc64",
        "loongarch64" => "loong64",
        m if m.starts_with("arm") => "arm",
        other => other,
    }
    .to_string()
}

/// ISO-8601 with nanoseconds and `Z` (`created`, `started`).
pub fn iso_nanos(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// JavaScript `Date.toISOString()`: milliseconds and `Z`.
pub fn iso_millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A JSON number without a fractional part when it is integral.
pub fn number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Value::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_like_javascript() {
        assert_eq!(js_trim("  hi  \n"), "hi");
        assert_eq!(js_trim("\u{feff}\u{a0}a b\r\n\t\u{b}\u{c}"), "a b");
        assert_eq!(js_trim("a\n\nb"), "a\n\nb");
    }

    #[test]
    fn formats_bytes_like_the_original() {
        assert_eq!(format_bytes(1023), "1023.0 B");
        assert_eq!(format_bytes(1024), "1.0 KB");
        assert_eq!(format_bytes(25_125_558_272), "23.4 GB");
        assert_eq!(format_bytes(5 << 40), "5.0 TB");
        assert_eq!(format_bytes(5000 << 40), "5000.0 TB");
    }

    #[test]
    fn formats_sizes_like_df() {
        assert_eq!(df_human(10_522_669_875), "9.8G");
        assert_eq!(df_human(483_183_820_800), "450G");
        assert_eq!(df_human(1 << 40), "1.0T");
        assert_eq!(df_human(500), "500");
        assert_eq!(df_human(9_663_676_416 + 1), "9.1G");
    }

    #[test]
    fn other_formats() {
        assert_eq!(uptime(5 * 86_400 + 3 * 3600 + 20 * 60 + 59), "5d 3h 20m");
        assert_eq!(node_arch("x86_64"), "x64");
        assert_eq!(node_arch("aarch64"), "arm64");
        assert_eq!(number(1.0).to_string(), "1");
        assert_eq!(number(0.5).to_string(), "0.5");
    }
}
