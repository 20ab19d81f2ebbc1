//! Intel AMX (tile matrix unit): run-time detection, the process's permission to use the tile
//! data, the tile configuration and thin `asm!` wrappers (stable Rust has no AMX intrinsics).
//!
//! Every tile here is configured 16 rows x 64 bytes ([`Tiles::load`]); a thread must load the
//! configuration itself before its first tile instruction (the state is per thread) and should
//! release it when done so the OS need not save 8 KiB of tile data at each switch.

/// Whether AMX-TILE + AMX-INT8 are usable here (CPU, OS state and permission), together with
/// the AVX-512 the kernels around the tiles need; `NEURALFORGE_AMX=0` turns it off. Detected
/// once per process.
pub fn int8_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("NEURALFORGE_AMX").is_ok_and(|v| v == "0");
        !off && detect_int8()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect_int8() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
    if !["avx512f", "avx512bw", "avx512vl", "fma", "f16c"]
        .iter()
        .all(|f| feature(f))
    {
        return false;
    }
    // Leaf 7 means something only where leaf 0 reports it.
    let (max, l1, l7) = (__cpuid(0).eax, __cpuid(1), __cpuid_count(7, 0));
    let osxsave = l1.ecx & (1 << 27) != 0;
    let tile_int8 = max >= 7 && l7.edx & (1 << 24) != 0 && l7.edx & (1 << 25) != 0;
    if !osxsave || !tile_int8 {
        return false;
    }
    // SAFETY: XGETBV(0) is available because OSXSAVE is set.
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    request_tile_permission()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn feature(f: &str) -> bool {
    match f {
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        _ => std::arch::is_x86_feature_detected!("f16c"),
    }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the tile data state
/// only to processes that ask (once per process, for all its threads).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a plain Linux system call; it reads no memory of ours and clobbers only
    // rax, rcx and r11 (declared).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect_int8() -> bool {
    false
}

/// Bytes of one tile row (and the widest row the configuration gives every tile).
pub const TILE_BYTES: usize = 64;
/// Rows of one tile.
pub const TILE_ROWS: usize = 16;

/// The tile configuration of this thread while alive: all 8 tiles 16 rows x 64 bytes.
/// Created by [`Tiles::load`], released on drop.
#[cfg(target_arch = "x86_64")]
pub struct Tiles {
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(target_arch = "x86_64")]
impl Tiles {
    /// Loads the configuration into this thread.
    ///
    /// # Safety
    /// [`int8_available`] must have returned true.
    pub unsafe fn load() -> Tiles {
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette 1
        for t in 0..8 {
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&(TILE_BYTES as u16).to_le_bytes());
            cfg[48 + t] = TILE_ROWS as u8;
        }
        // SAFETY: AMX is enabled (caller); `cfg` is a valid 64-byte palette-1 configuration.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
        }
        Tiles {
            _not_send: std::marker::PhantomData,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: a configuration was loaded by `Tiles::load` in this thread (not Send).
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) }
    }
}

/// `tilezero tmm{N}`.
#[cfg(target_arch = "x86_64")]
#[macro_export]
macro_rules! tile_zero {
    ($t:literal) => {
        std::arch::asm!(concat!("tilezero tmm", $t), options(nostack, nomem))
    };
}

/// `tileloadd tmm{N}, [base + stride]`: 16 rows of 64 bytes, `stride` bytes apart.
#[cfg(target_arch = "x86_64")]
#[macro_export]
macro_rules! tile_load {
    ($t:literal, $base:expr, $stride:expr) => {
        std::arch::asm!(
            concat!("tileloadd tmm", $t, ", [{b} + {s}*1]"),
            b = in(reg) $base,
            s = in(reg) $stride,
            options(nostack, readonly)
        )
    };
}

/// `tilestored [base + stride], tmm{N}`.
#[cfg(target_arch = "x86_64")]
#[macro_export]
macro_rules! tile_store {
    ($t:literal, $base:expr, $stride:expr) => {
        std::arch::asm!(
            concat!("tilestored [{b} + {s}*1], tmm", $t),
            b = in(reg) $base,
            s = in(reg) $stride,
            options(nostack)
        )
    };
}

/// `tdpb{op}d tmm{C}, tmm{A}, tmm{B}`: `C[m][n] += Σ_k A[m][k] * B[k/4][4n + k%4]` over
/// bytes, `op` giving the signs of A and B (`ss`, `su`, `us`, `uu`).
#[cfg(target_arch = "x86_64")]
#[macro_export]
macro_rules! tile_dp {
    ($op:literal, $c:literal, $a:literal, $b:literal) => {
        std::arch::asm!(
            concat!("tdpb", $op, "d tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem)
        )
    };
}
