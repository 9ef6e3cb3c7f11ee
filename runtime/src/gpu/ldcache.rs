//! The dynamic linker's cache (`/etc/ld.so.cache`, what `ldconfig -p`
//! prints) read directly, and the `DT_SONAME` of an ELF library: how the
//! NVIDIA driver's libraries are found without running a program.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The most of a linker cache we read (a full distribution's is ~100 KiB).
pub(super) const MAX_CACHE_BYTES: u64 = 16 << 20;

/// glibc's cache format since 2.32 (`CACHEMAGIC_VERSION_NEW`).
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
/// The old format (`CACHEMAGIC`), followed by the new one in "compat" caches.
const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
/// Size of the new header: magic, nlibs, len_strings, flags, padding,
/// extension offset, three unused words.
const NEW_HEADER: usize = 48;
/// `struct file_entry_new`: flags, key, value, osversion, hwcap.
const NEW_ENTRY: usize = 24;
/// `struct file_entry` of the old format: flags, key, value.
const OLD_ENTRY: usize = 12;
/// `FLAG_ELF_LIBC6`.
const FLAG_LIBC6: i32 = 0x0003;
/// The architecture bits of an entry's flags for this build's libraries
/// (`FLAG_X8664_LIB64`, `FLAG_AARCH64_LIB64`, …); `None`: any.
const NATIVE_ARCH_FLAG: Option<i32> = if cfg!(target_arch = "x86_64") {
    Some(0x0300)
} else if cfg!(target_arch = "aarch64") {
    Some(0x0a00)
} else if cfg!(target_arch = "powerpc64") {
    Some(0x0500)
} else {
    None
};

/// One library of the cache: the name programs ask for (the soname) and
/// the path it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// e.g. `libcuda.so.1`.
    pub name: String,
    /// e.g. `/usr/lib/x86_64-linux-gnu/libcuda.so.1`.
    pub path: String,
}

/// The native-architecture libc6 entries of a cache file's bytes, in the
/// cache's order (the order the dynamic linker searches). Errors say what
/// is malformed.
pub(super) fn parse(data: &[u8]) -> Result<Vec<Entry>, String> {
    let new = if data.starts_with(MAGIC_NEW) {
        0
    } else if data.starts_with(MAGIC_OLD) {
        // Old header (magic padded to 12 bytes, nlibs) and entries, then
        // the new format aligned to 8 bytes.
        let n = u32_at(data, 12)? as usize;
        let end = n
            .checked_mul(OLD_ENTRY)
            .and_then(|b| b.checked_add(16))
            .ok_or("entry count overflows")?;
        let start = end.next_multiple_of(8);
        if !data.get(start..).is_some_and(|d| d.starts_with(MAGIC_NEW)) {
            return Err("old-format cache without the new format".into());
        }
        start
    } else {
        return Err("not a glibc linker cache".into());
    };
    let cache = &data[new..];
    let nlibs = u32_at(cache, MAGIC_NEW.len())? as usize;
    let table_end = nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|b| b.checked_add(NEW_HEADER))
        .filter(|&e| e <= cache.len())
        .ok_or("entry table past the end of the file")?;
    let mut out = Vec::new();
    for off in (NEW_HEADER..table_end).step_by(NEW_ENTRY) {
        let flags = u32_at(cache, off)? as i32;
        if flags & 0xff != FLAG_LIBC6 {
            continue;
        }
        if NATIVE_ARCH_FLAG.is_some_and(|a| flags & 0xff00 != a) {
            continue;
        }
        // Strings are offsets from the start of the new-format header.
        let name = c_str(cache, u32_at(cache, off + 4)? as usize)?;
        let path = c_str(cache, u32_at(cache, off + 8)? as usize)?;
        out.push(Entry { name, path });
    }
    Ok(out)
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, String> {
    data.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| format!("truncated at byte {off}"))
}

/// The NUL-terminated UTF-8 string at `off`.
fn c_str(data: &[u8], off: usize) -> Result<String, String> {
    let rest = data
        .get(off..)
        .ok_or_else(|| format!("string offset {off} past the end"))?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("unterminated string at {off}"))?;
    String::from_utf8(rest[..len].to_vec()).map_err(|_| format!("non-UTF-8 string at {off}"))
}

/// The `DT_SONAME` of a 64-bit little-endian ELF shared object, read with
/// a few small positioned reads (driver libraries are tens of MB); `None`
/// when the file is not such an ELF file or has no soname.
pub(super) fn elf_soname(path: &Path) -> Option<String> {
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const DT_STRTAB: u64 = 5;
    const DT_SONAME: u64 = 14;
    let f = File::open(path).ok()?;
    let read = |off: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, off).ok()?;
        Some(buf)
    };
    let u16_ = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_ = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_ = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let ehdr = read(0, 64)?;
    // \x7fELF, ELFCLASS64, ELFDATA2LSB.
    if ehdr.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_(&ehdr, 32)?, u16_(&ehdr, 54)?, u16_(&ehdr, 56)?);
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let phdrs = read(phoff, phentsize as usize * phnum as usize)?;
    // (p_type, p_offset, p_vaddr, p_filesz) of each program header.
    let segs: Vec<(u32, u64, u64, u64)> = (0..phnum as usize)
        .filter_map(|i| {
            let o = i * phentsize as usize;
            Some((
                u32_(&phdrs, o)?,
                u64_(&phdrs, o + 8)?,
                u64_(&phdrs, o + 16)?,
                u64_(&phdrs, o + 32)?,
            ))
        })
        .collect();
    let &(_, dyn_off, _, dyn_size) = segs.iter().find(|s| s.0 == PT_DYNAMIC)?;
    let dynamic = read(dyn_off, dyn_size.min(64 << 10) as usize)?;
    let (mut strtab, mut soname) = (None, None);
    for e in dynamic.chunks_exact(16) {
        match (u64_(e, 0)?, u64_(e, 8)?) {
            (0, _) => break,
            (DT_STRTAB, v) => strtab = Some(v),
            (DT_SONAME, v) => soname = Some(v),
            _ => {}
        }
    }
    // DT_STRTAB is an address: map it to a file offset through PT_LOAD.
    let strtab = strtab?;
    let &(_, off, vaddr, _) = segs
        .iter()
        .find(|s| s.0 == PT_LOAD && s.2 <= strtab && strtab - s.2 < s.3)?;
    let at = (strtab - vaddr).checked_add(off)?.checked_add(soname?)?;
    let name = read(at, 256).or_else(|| read(at, 64))?;
    let len = name.iter().position(|&b| b == 0)?;
    String::from_utf8(name[..len].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's cache read here lists what `ldconfig -p` prints.
    #[test]
    fn the_system_cache_matches_ldconfig() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else {
            return;
        };
        let ours = parse(&data).expect("parse the system cache");
        assert!(!ours.is_empty());
        let arch = if cfg!(target_arch = "x86_64") {
            "(libc6,x86-64"
        } else {
            "(libc6"
        };
        let theirs: Vec<Entry> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter(|l| l.contains(arch))
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once(' ')?;
                let (_, path) = rest.split_once(" => ")?;
                Some(Entry {
                    name: name.into(),
                    path: path.into(),
                })
            })
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn damaged_caches_are_errors_not_panics() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        for len in [0, 10, 20, 47, 48, 100, data.len() / 2] {
            let _ = parse(&data[..len]);
        }
        assert!(parse(b"hello").is_err());
        let mut huge = data.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&huge).is_err());
        let mut bad_offset = data.clone();
        bad_offset[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&bad_offset).is_err());
    }

    /// The sonames of real libraries: libc's is its file name, zlib's is
    /// shorter than the file's (`libz.so.1` for `libz.so.1.2.13`).
    #[test]
    fn sonames_of_real_libraries() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let entries = parse(&data).expect("parse");
        for want in ["libc.so.6", "libz.so.1"] {
            let Some(e) = entries.iter().find(|e| e.name == want) else {
                continue;
            };
            let real = std::fs::canonicalize(&e.path).expect("resolve");
            assert_eq!(
                elf_soname(&real).as_deref(),
                Some(want),
                "{}",
                real.display()
            );
        }
        assert_eq!(elf_soname(Path::new("/etc/hostname")), None);
        assert_eq!(elf_soname(Path::new("/nonexistent")), None);
    }
}
