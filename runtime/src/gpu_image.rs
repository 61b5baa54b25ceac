//! A GPU kernel module's image, as a GPU artifact's host code embeds it: the module's PTX,
//! and the machine code (SASS, a cubin) that `ptxas` assembled from it at compile time for
//! the chips named beside each.
//!
//! The driver compiles PTX at a module's first load (26-34 s for a Llama-3.1-8B-shaped
//! artifact on an H200, then cached per machine); a cubin for the GPU loads as it is. The
//! runtime ([`crate::cuda`]) loads the cubin that runs on the device and keeps the PTX for
//! any other chip, or for a driver that refuses the cubin. An image without SASS is plain
//! NUL-terminated PTX, as before this container existed.
//!
//! ```text
//! 0   magic    8 bytes  "MAXKIMG\0"
//! 8   version  u32      VERSION
//! 12  count    u32      entries
//! 16  total    u64      bytes of the whole image
//! 24  entries  count x 32 bytes: kind u32 (0 PTX, 1 SASS), reserved u32, offset u64,
//!                                length u64, chip 8 bytes (`sm_90a`, NUL-padded)
//!     payloads          each at a 16-byte aligned offset; PTX is followed by a NUL
//! ```
//! Integers are little-endian; offsets count from the image's first byte.

/// The image's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"MAXKIMG\0";
/// The container version this runtime reads and the compiler writes.
pub const VERSION: u32 = 1;
const HEADER: usize = 24;
const ENTRY: usize = 32;
const ALIGN: usize = 16;

/// What an image entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PTX text (without its terminating NUL).
    Ptx,
    /// A cubin: machine code for one chip.
    Sass,
}

/// One entry of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: Kind,
    /// The chip the entry was written for (`sm_90a`; PTX: its `.target`).
    pub chip: &'a str,
    pub bytes: &'a [u8],
}

/// Why bytes are not a valid image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("GPU kernel image: {0}")]
    Malformed(String),
}

/// Writes an image of `ptx` (for `ptx_chip`) and `sass`, cubins with their chips.
pub fn write(ptx: &str, ptx_chip: &str, sass: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<(u32, &str, &[u8])> = std::iter::once((0, ptx_chip, ptx.as_bytes())).chain(sass.iter().map(|(c, b)| (1, *c, *b))).collect();
    let mut out = vec![0u8; HEADER + ENTRY * entries.len()];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (i, (kind, chip, bytes)) in entries.into_iter().enumerate() {
        out.resize(out.len().next_multiple_of(ALIGN), 0);
        let off = out.len() as u64;
        out.extend_from_slice(bytes);
        if kind == 0 {
            out.push(0); // PTX goes to the driver as a C string
        }
        let e = &mut out[HEADER + ENTRY * i..HEADER + ENTRY * (i + 1)];
        e[0..4].copy_from_slice(&kind.to_le_bytes());
        e[8..16].copy_from_slice(&off.to_le_bytes());
        e[16..24].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        let name = &chip.as_bytes()[..chip.len().min(8)];
        e[24..24 + name.len()].copy_from_slice(name);
    }
    let total = out.len() as u64;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    out
}

/// Whether `bytes` start like an image (rather than plain PTX).
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// The total length an image's header records (`header` holds at least its first 24 bytes).
pub fn total_len(header: &[u8]) -> Option<usize> {
    (is_image(header) && header.len() >= HEADER).then(|| u64::from_le_bytes(header[16..24].try_into().unwrap()) as usize)
}

/// The entries of an image, checked against its bounds.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry<'_>>, ImageError> {
    let bad = |why: String| ImageError::Malformed(why);
    if !is_image(bytes) || bytes.len() < HEADER {
        return Err(bad("no image header".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    if u32_at(8) != VERSION {
        return Err(bad(format!("container version {} (this runtime reads {VERSION}); recompile the artifact", u32_at(8))));
    }
    let count = u32_at(12) as usize;
    if u64_at(16) != bytes.len() as u64 || HEADER + ENTRY * count > bytes.len() {
        return Err(bad(format!("{} bytes, but the header records {} and {count} entries", bytes.len(), u64_at(16))));
    }
    (0..count)
        .map(|i| {
            let e = HEADER + ENTRY * i;
            let kind = match u32_at(e) {
                0 => Kind::Ptx,
                1 => Kind::Sass,
                k => return Err(bad(format!("entry {i} has unknown kind {k}"))),
            };
            let (off, len) = (u64_at(e + 8) as usize, u64_at(e + 16) as usize);
            let body = off.checked_add(len).filter(|end| *end <= bytes.len()).map(|end| &bytes[off..end]).ok_or_else(|| bad(format!("entry {i} lies outside the image")))?;
            let name = &bytes[e + 24..e + 32];
            let chip = std::str::from_utf8(&name[..name.iter().position(|b| *b == 0).unwrap_or(8)]).map_err(|_| bad(format!("entry {i}'s chip is not text")))?;
            // PTX is handed to the driver as a C string.
            if kind == Kind::Ptx && bytes.get(off + len) != Some(&0) {
                return Err(bad(format!("entry {i}'s PTX is not NUL-terminated")));
            }
            Ok(Entry { kind, chip, bytes: body })
        })
        .collect()
}

/// A chip name's (major, minor) compute capability and whether it is architecture-specific
/// (`sm_90a`: runs on that chip only).
pub fn chip_version(chip: &str) -> Option<(i32, i32, bool)> {
    let num = chip.strip_prefix("sm_")?;
    let (num, specific) = match num.strip_suffix('a') {
        Some(n) => (n, true),
        None => (num, false),
    };
    let v: i32 = num.parse().ok()?;
    Some((v / 10, v % 10, specific))
}

/// Whether SASS for `chip` runs on a device of compute capability `cc`: the same major
/// version, a minor version at most the device's, and exactly the device's for an
/// architecture-specific chip (CUDA's binary compatibility rule).
pub fn sass_runs_on(chip: &str, cc: (i32, i32)) -> bool {
    chip_version(chip).is_some_and(|(major, minor, specific)| major == cc.0 && if specific { minor == cc.1 } else { minor <= cc.1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_aligns_its_payloads() {
        let img = write(".version 8.0\n.target sm_90a\n", "sm_90a", &[("sm_90a", b"\x7fELF123")]);
        assert_eq!(total_len(&img), Some(img.len()));
        let e = parse(&img).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].kind, e[0].chip, e[0].bytes), (Kind::Ptx, "sm_90a", &b".version 8.0\n.target sm_90a\n"[..]));
        assert_eq!((e[1].kind, e[1].chip, e[1].bytes), (Kind::Sass, "sm_90a", &b"\x7fELF123"[..]));
        for x in &e {
            assert_eq!((x.bytes.as_ptr() as usize - img.as_ptr() as usize) % ALIGN, 0);
        }
    }

    #[test]
    fn refuses_damaged_images() {
        let img = write("ptx", "sm_80", &[("sm_80", &[1; 40])]);
        assert!(parse(&img[..img.len() - 1]).is_err(), "truncated");
        let mut v = img.clone();
        v[8] = 9;
        assert!(parse(&v).unwrap_err().to_string().contains("container version 9"));
        let mut v = img.clone();
        v[HEADER + ENTRY + 16] = 0xff; // the cubin's length
        assert!(parse(&v).unwrap_err().to_string().contains("outside the image"));
        assert!(parse(b".version 8.0").is_err());
        assert!(!is_image(b"//\n// Generated by LLVM NVPTX Back-End"));
    }

    #[test]
    fn follows_the_binary_compatibility_rule() {
        assert!(sass_runs_on("sm_90a", (9, 0)));
        assert!(sass_runs_on("sm_90", (9, 0)));
        assert!(sass_runs_on("sm_80", (8, 6)));
        assert!(!sass_runs_on("sm_86", (8, 0)));
        assert!(!sass_runs_on("sm_80", (9, 0)), "SASS does not run on a later major version");
        assert!(!sass_runs_on("sm_90a", (10, 0)));
        assert!(!sass_runs_on("sm_100a", (10, 3)));
        assert!(!sass_runs_on("compute_90", (9, 0)));
    }
}
