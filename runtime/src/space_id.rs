//! Space ids: 64 lowercase hex characters, random; safe as a path
//! component and an interface or namespace name suffix.

/// Whether `s` is a 64-character lowercase hex id.
pub fn is_space_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random 64-hex id.
pub fn new_space_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
