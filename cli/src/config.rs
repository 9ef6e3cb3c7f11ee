//! Configuration (SPEC 11.2): `~/.clawdspace` is parsed as shell
//! assignments, never executed; the environment wins over the file, the file
//! over built-in defaults.

use std::fs;
use std::path::{Path, PathBuf};

/// Port of a host entry without one.
pub const DEFAULT_PORT: u16 = 7777;
/// Key used when nothing else gives one (the daemon's historical default).
pub const DEV_KEY: &str = "clawdspace_dev_key";
/// Default state directory of a daemon on this host.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clawdspace";
/// Hosts probed when none are configured.
pub const DEFAULT_HOSTS: &str = "localhost";

/// Everything the commands need to know about the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `~/.clawdspace`.
    pub config_file: PathBuf,
    /// `~/.clawdspace-servers`.
    pub cache_file: PathBuf,
    /// The API key.
    pub key: String,
    /// Where the key came from, in words (for `config` and 401 hints).
    pub key_source: String,
    /// Host entries as configured (name, host:port or URL).
    pub hosts: Vec<String>,
    /// Where the host list came from, in words.
    pub hosts_source: String,
    /// Problems found in the config file (not fatal).
    pub warnings: Vec<String>,
}

/// One `NAME=value` line of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// Result of parsing a config file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub assignments: Vec<Assignment>,
    pub warnings: Vec<String>,
}

impl Parsed {
    /// The last value assigned to `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.assignments
            .iter()
            .rev()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses shell-assignment syntax: `[export ]NAME=value` per line, values
/// optionally single- or double-quoted, `#` comments, blank lines. `$NAME`
/// and `${NAME}` expand from earlier assignments, then from `env`; command
/// substitutions are never run (kept literally, with a warning).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("export") {
            if rest.starts_with(char::is_whitespace) {
                line = rest.trim_start();
            }
        }
        let Some((name, rest)) = line.split_once('=') else {
            continue;
        };
        let mut chars = name.chars();
        if !chars.next().is_some_and(is_name_start) || !chars.all(is_name_char) {
            continue;
        }
        let lookup = |n: &str| -> String {
            out.get(n)
                .map(String::from)
                .or_else(|| env(n))
                .unwrap_or_default()
        };
        let (value, substitution) = parse_value(rest, &lookup);
        if substitution {
            out.warnings.push(format!(
                "line {line_no}: command substitution in {name} is not run (the file is parsed, not executed)"
            ));
        }
        out.assignments.push(Assignment {
            name: name.to_string(),
            value,
            line: line_no,
        });
    }
    out
}

/// Parses one value; returns it and whether it held a command substitution.
fn parse_value(s: &str, lookup: &dyn Fn(&str) -> String) -> (String, bool) {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut subst = false;
    let mut i = 0;
    // Expands `$...` at chars[i] (a '$') or keeps a '`' (noting the command
    // substitution); returns the index after it.
    let special = |i: usize, out: &mut String, subst: &mut bool| -> usize {
        if chars[i] == '`' {
            *subst = true;
            out.push('`');
            return i + 1;
        }
        let next = chars.get(i + 1).copied();
        match next {
            Some('{') => {
                if let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') {
                    let name: String = chars[i + 2..i + 2 + end].iter().collect();
                    if !name.is_empty() && name.chars().all(is_name_char) {
                        out.push_str(&lookup(&name));
                        return i + 3 + end;
                    }
                }
                out.push('$');
                i + 1
            }
            Some('(') => {
                *subst = true;
                out.push('$');
                i + 1
            }
            Some(c) if is_name_start(c) => {
                let mut j = i + 1;
                while j < chars.len() && is_name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name));
                j
            }
            _ => {
                out.push('$');
                i + 1
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    out.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        '\\' if matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`')) => {
                            out.push(chars[i + 1]);
                            i += 2;
                        }
                        '$' | '`' => i = special(i, &mut out, &mut subst),
                        ch => {
                            out.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            '\\' => {
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                }
                i += 2;
            }
            '$' | '`' => i = special(i, &mut out, &mut subst),
            // Unquoted whitespace ends the value (a following `# ...` is a
            // comment; anything else would be a command: ignored).
            c if c.is_whitespace() => break,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out, subst)
}

/// The user's home directory: `$HOME`, else the password database.
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Splits a host list (whitespace or commas).
pub fn split_hosts(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

/// Reads the key file of a daemon on this host, if readable.
fn local_key_file() -> Option<(String, PathBuf)> {
    let dir = std::env::var_os("CLAWDSPACE_STATE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let path = dir.join("api-key");
    let key = fs::read_to_string(&path).ok()?;
    let key = key.trim();
    (!key.is_empty()).then(|| (key.to_string(), path))
}

/// Shows a path with `~` for the home directory.
pub fn tilde(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if home != Path::new("/") => format!("~/{}", rest.display()),
        _ => path.display().to_string(),
    }
}

impl Settings {
    /// Loads the configuration from the environment and `~/.clawdspace`.
    pub fn load() -> Settings {
        let home = home_dir();
        let config_file = home.join(".clawdspace");
        let cache_file = home.join(".clawdspace-servers");
        let shown = tilde(&config_file, &home);
        let parsed = match fs::read_to_string(&config_file) {
            Ok(text) => parse(&text, &|n| std::env::var(n).ok()),
            Err(_) => Parsed::default(),
        };
        let file_value = |name: &str| {
            parsed
                .get(name)
                .filter(|v| !v.trim().is_empty())
                .map(String::from)
        };
        let (key, key_source) = if let Some(k) = env_nonempty("CLAWDSPACE_KEY") {
            (k, "the environment variable CLAWDSPACE_KEY".to_string())
        } else if let Some(k) = file_value("CLAWDSPACE_KEY") {
            (k, format!("CLAWDSPACE_KEY in {shown}"))
        } else if let Some(k) = file_value("API_KEY") {
            (k, format!("API_KEY in {shown}"))
        } else if let Some((k, path)) = local_key_file() {
            (k, format!("the local daemon's key file {}", path.display()))
        } else {
            (
                DEV_KEY.to_string(),
                format!("the built-in default ({DEV_KEY})"),
            )
        };
        let (hosts, hosts_source) = if let Some(h) = env_nonempty("CLAWDSPACE_HOSTS") {
            (
                split_hosts(&h),
                "the environment variable CLAWDSPACE_HOSTS".to_string(),
            )
        } else if let Some(h) = file_value("CLAWDSPACE_HOSTS") {
            (split_hosts(&h), format!("CLAWDSPACE_HOSTS in {shown}"))
        } else if let Some(h) = file_value("KNOWN_HOSTS") {
            (split_hosts(&h), format!("KNOWN_HOSTS in {shown}"))
        } else {
            (
                split_hosts(DEFAULT_HOSTS),
                "the built-in default".to_string(),
            )
        };
        let warnings = parsed
            .warnings
            .iter()
            .map(|w| format!("{shown} {w}"))
            .collect();
        Settings {
            config_file,
            cache_file,
            key,
            key_source,
            hosts,
            hosts_source,
            warnings,
        }
    }

    /// The key with all but (at most) its first 4 characters hidden.
    pub fn masked_key(&self) -> String {
        let n = (self.key.chars().count() / 4).min(4);
        format!("{}...", self.key.chars().take(n).collect::<String>())
    }
}

/// Base URL of a host entry: `http(s)://...` as given (without trailing
/// `/`), `host:port`, `[v6]:port`, or a bare host/IP on port 7777.
pub fn host_url(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return host.trim_end_matches('/').to_string();
    }
    if host.starts_with('[') {
        return if host.contains("]:") {
            format!("http://{host}")
        } else {
            format!("http://{host}:{DEFAULT_PORT}")
        };
    }
    match host.matches(':').count() {
        0 => format!("http://{host}:{DEFAULT_PORT}"),
        1 => format!("http://{host}"),
        _ => format!("http://[{host}]:{DEFAULT_PORT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map_env<'a>(m: &'a HashMap<&str, &str>) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| m.get(n).map(|v| v.to_string())
    }

    fn p(text: &str) -> Parsed {
        let env = HashMap::from([("HOME", "/home/u"), ("KNOWN_HOSTS", "envhost")]);
        let lookup = map_env(&env);
        parse(text, &lookup)
    }

    #[test]
    fn parses_shell_assignments_without_running_them() {
        let parsed = p(r#"
# a comment
export CLAWDSPACE_KEY="abc def"
API_KEY='single $HOME'
CLAWDSPACE_HOSTS=one two   # only "one": unquoted whitespace ends it
KNOWN_HOSTS="$KNOWN_HOSTS  box2"
X=${HOME}/y
Y="esc \" \$HOME \\"
Z=$(cat /etc/shadow)
not an assignment
1BAD=x
"#);
        assert_eq!(parsed.get("CLAWDSPACE_KEY"), Some("abc def"));
        assert_eq!(parsed.get("API_KEY"), Some("single $HOME"));
        assert_eq!(parsed.get("CLAWDSPACE_HOSTS"), Some("one"));
        assert_eq!(parsed.get("KNOWN_HOSTS"), Some("envhost  box2"));
        assert_eq!(parsed.get("X"), Some("/home/u/y"));
        assert_eq!(parsed.get("Y"), Some("esc \" $HOME \\"));
        assert_eq!(parsed.get("Z"), Some("$(cat"));
        assert_eq!(parsed.get("1BAD"), None);
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.warnings[0].contains("line 9"));
    }

    #[test]
    fn backticks_are_kept_and_reported() {
        let parsed = p("A=`id`\nB=\"x `id` y\"\n");
        assert_eq!(parsed.get("A"), Some("`id`"));
        assert_eq!(parsed.get("B"), Some("x `id` y"));
        assert_eq!(parsed.warnings.len(), 2);
    }

    #[test]
    fn later_assignments_win_and_expand_earlier_ones() {
        let parsed = p("A=1\nA=\"$A 2\"\nexport\tB=x\n");
        assert_eq!(parsed.get("A"), Some("1 2"));
        assert_eq!(parsed.get("B"), Some("x"));
    }

    #[test]
    fn host_entries() {
        assert_eq!(host_url("oracle"), "http://oracle:7777");
        assert_eq!(host_url("100.64.1.2"), "http://100.64.1.2:7777");
        assert_eq!(host_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(host_url("http://x:1/"), "http://x:1");
        assert_eq!(host_url("https://box.example"), "https://box.example");
        assert_eq!(host_url("::1"), "http://[::1]:7777");
        assert_eq!(host_url("[::1]:9000"), "http://[::1]:9000");
        assert_eq!(host_url("[::1]"), "http://[::1]:7777");
        assert_eq!(split_hosts(" a  b,c\n"), vec!["a", "b", "c"]);
    }

    #[test]
    fn key_is_masked() {
        let mut s = Settings {
            config_file: PathBuf::new(),
            cache_file: PathBuf::new(),
            key: "clawdspace_dev_key".into(),
            key_source: String::new(),
            hosts: vec![],
            hosts_source: String::new(),
            warnings: vec![],
        };
        assert_eq!(s.masked_key(), "claw...");
        s.key = "abc".into();
        assert_eq!(s.masked_key(), "...");
    }
}
