//! Which spaces an MCP session may touch: `--allow`/`--deny` glob patterns
//! on space names (`*` any run of characters, `?` one character).

/// Allow and deny patterns; a name is allowed when it matches an allow
/// pattern (or there are none) and no deny pattern.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Whether `name` matches the glob `pat`.
pub fn glob(pat: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pat.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Splits comma-separated pattern lists (`a*,b*`) and drops empty entries.
fn split(lists: &[String]) -> Vec<String> {
    lists
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Policy {
    /// From `--allow`/`--deny` values (each may hold several, comma-separated).
    pub fn new(allow: &[String], deny: &[String]) -> Policy {
        Policy {
            allow: split(allow),
            deny: split(deny),
        }
    }

    /// Whether the session may touch space `name`.
    pub fn allows(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|p| glob(p, name)))
            && !self.deny.iter().any(|p| glob(p, name))
    }

    /// `Ok` when allowed, else the refusal to show.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if self.allows(name) {
            return Ok(());
        }
        let mut why = format!("space '{name}' is not allowed in this MCP session");
        if !self.allow.is_empty() {
            why.push_str(&format!(" (allowed: {})", self.allow.join(", ")));
        }
        if !self.deny.is_empty() {
            why.push_str(&format!(" (denied: {})", self.deny.join(", ")));
        }
        Err(why)
    }

    /// A one-line summary for the server's instructions.
    pub fn describe(&self) -> Option<String> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return None;
        }
        let mut s = String::from("This session may only touch spaces");
        if !self.allow.is_empty() {
            s.push_str(&format!(" whose names match {}", self.allow.join(" or ")));
        }
        if !self.deny.is_empty() {
            if !self.allow.is_empty() {
                s.push_str(" and");
            }
            s.push_str(&format!(
                " whose names do not match {}",
                self.deny.join(" or ")
            ));
        }
        s.push('.');
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("agent-*", "agent-1"));
        assert!(glob("agent-*", "agent-"));
        assert!(!glob("agent-*", "prod"));
        assert!(glob("*-tmp", "a-b-tmp"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = Policy::new(&["agent-*,ci-*".into()], &["*-prod".into()]);
        assert!(p.allows("agent-1"));
        assert!(p.allows("ci-x"));
        assert!(!p.allows("agent-prod"));
        assert!(!p.allows("dev"));
        assert!(p
            .check("dev")
            .expect_err("dev is not allowed")
            .contains("not allowed"));
        assert!(Policy::default().allows("anything"));
        assert!(Policy::default().describe().is_none());
    }
}
