//! Reading a whole model file into memory that the kernel may back with 2 MiB pages.
//!
//! Decoding streams every weight byte once per token; with 4 KiB pages a 100 MB model spans
//! 24,000 pages and the page walks cost a measurable share of that stream. Transparent huge
//! pages are often enabled only on request (`madvise` mode), so the buffer asks for them
//! before its first byte is touched.

use std::io::Read;
use std::path::Path;

/// The bytes of `path`, in a buffer advised for huge pages (Linux; a plain read elsewhere).
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    // A length the allocator refuses falls back to a growing read (the error then comes
    // from the read, not an abort here).
    if bytes.try_reserve_exact(len).is_ok() {
        advise_huge_pages(bytes.as_mut_ptr(), len);
    }
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Asks for huge pages over the whole 2 MiB pages inside `ptr..ptr + len` (advice only).
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).div_ceil(HUGE) * HUGE;
        let end = (ptr as usize).saturating_add(len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE
            // changes only how it is backed, never its contents or validity.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_whole_file() {
        let p = std::env::temp_dir().join(format!("nf-big-read-{}", std::process::id()));
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(super::read_file(&p).unwrap(), data);
        std::fs::write(&p, b"").unwrap();
        assert!(super::read_file(&p).unwrap().is_empty());
        let _ = std::fs::remove_file(&p);
        assert!(super::read_file(&p).is_err());
    }
}
