//! The name of a space, validated once where it enters (SPEC 6.1).

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use crate::error::{Error, Result};

/// What a request with a bad name is told (SPEC 6.1).
pub const INVALID_NAME: &str = "Invalid name (alphanumeric, _, - only)";

/// A valid space name: `^[a-zA-Z0-9_-]{1,63}$`. Only [`SpaceName::new`]
/// (or `parse`) makes one, so whoever holds one need not check it again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceName(String);

impl SpaceName {
    /// `name` if it is valid, else [`Error::InvalidInput`] with
    /// [`INVALID_NAME`].
    pub fn new(name: impl Into<String>) -> Result<SpaceName> {
        let name = name.into();
        if is_valid_name(&name) {
            Ok(SpaceName(name))
        } else {
            Err(Error::InvalidInput(INVALID_NAME.into()))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SpaceName {
    type Err = Error;

    fn from_str(s: &str) -> Result<SpaceName> {
        SpaceName::new(s)
    }
}

impl Deref for SpaceName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SpaceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SpaceName> for String {
    fn from(n: SpaceName) -> String {
        n.0
    }
}

/// Whether `name` is a valid space name.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        for ok in [
            "my-space",
            "my_space",
            "MySpace123",
            "test-123_abc",
            &"a".repeat(63),
        ] {
            assert_eq!(SpaceName::new(ok).expect(ok).as_str(), ok);
        }
        for bad in ["", "invalid name!", "a.b", "a/b", "é", &"a".repeat(64)] {
            let e = bad.parse::<SpaceName>().expect_err(bad);
            assert_eq!(e.to_string(), INVALID_NAME, "{bad}");
        }
    }
}
