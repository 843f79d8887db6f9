//! The reproducibility mode (`reproducibility` in the config): `machine` repeats a run's
//! bytes on the machine that made them; `portable` pins every CPU code path whose rounding
//! depends on the processor, so that any x86-64 CPU with AVX2 and FMA writes the same bytes.
//!
//! libtorch reads its code-path switches once, when it first runs, so a portable process
//! sets them and re-executes itself before any tensor exists ([`enter`]):
//! - `ATEN_CPU_CAPABILITY=avx2`: ATen's vectorized kernels (reductions, activations, loss)
//!   use 256-bit vectors everywhere, rather than AVX-512 where the CPU has it;
//! - `MKL_CBWR=AVX2,STRICT`: MKL's conditional numerical reproducibility, its AVX2 code path
//!   on every processor (GEMM's blocking no longer follows the CPU's cache sizes), strict so
//!   that GEMM does not depend on the thread count either;
//! - `MKL_ENABLE_INSTRUCTIONS=AVX2`, `ONEDNN_MAX_CPU_ISA=AVX2`: the same ceiling for MKL's
//!   other routines and for oneDNN;
//! - one thread (`MKL_NUM_THREADS`, `OMP_NUM_THREADS`, libtorch's intra-op threads): ATen
//!   splits large reductions by thread, which changes their order.
//!
//! lth's own kernels (the one-pass optimizer, the sparse kernels) already choose their path
//! by CPU feature; with AVX2 and FMA required they take the same one everywhere.

use std::ffi::OsString;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// What a run's bytes repeat across (the config key `reproducibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reproducibility {
    /// The same bytes on the same machine (and thread count): libtorch's fastest paths.
    #[default]
    Machine,
    /// The same bytes on any x86-64 CPU with AVX2 and FMA, at one thread.
    Portable,
}

impl Reproducibility {
    /// Whether this is `machine` (the default, left out of saved configs).
    pub fn is_machine(&self) -> bool {
        *self == Self::Machine
    }

    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Portable => "portable",
        }
    }
}

/// The environment a portable process runs under (see the module).
pub const PINNED: &[(&str, &str)] = &[
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_CBWR", "AVX2,STRICT"),
    ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ("MKL_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
];

/// Set in the re-executed process, so that it never re-executes again.
const REEXEC_MARK: &str = "LTH_PORTABLE_REEXEC";

/// Whether this process runs under [`PINNED`].
pub fn pinned() -> bool {
    PINNED
        .iter()
        .all(|(k, v)| std::env::var_os(k).is_some_and(|x| x == *v))
}

/// Puts the process in `mode`, before libtorch first runs. `machine`: nothing. `portable`:
/// refuses a CPU without AVX2 and FMA, then re-executes the process with the same arguments
/// under [`PINNED`] unless it already runs under it (returning only in that case), and holds
/// libtorch to one thread.
pub fn enter(mode: Reproducibility) -> Result<()> {
    if mode == Reproducibility::Machine {
        return Ok(());
    }
    check_cpu()?;
    if !pinned() {
        if std::env::var_os(REEXEC_MARK).is_some() {
            bail!("reproducibility = \"portable\": the environment it sets did not hold after re-executing lth");
        }
        reexec()?;
    }
    tch::set_num_threads(1);
    Ok(())
}

/// Portable mode's code paths need AVX2 and FMA.
fn check_cpu() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Ok(());
        }
        bail!("reproducibility = \"portable\" needs a CPU with AVX2 and FMA (x86-64 since 2013-2015); this one lacks them: use \"machine\"");
    }
    #[cfg(not(target_arch = "x86_64"))]
    bail!(
        "reproducibility = \"portable\" is for x86-64 CPUs with AVX2 and FMA; use \"machine\" here"
    );
}

/// Replaces the process by lth with the same arguments under [`PINNED`].
fn reexec() -> Result<()> {
    let exe = std::env::current_exe()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).env(REEXEC_MARK, "1");
    for (k, v) in PINNED {
        cmd.env(k, v);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        bail!("reproducibility = \"portable\": could not re-execute lth: {err}");
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
