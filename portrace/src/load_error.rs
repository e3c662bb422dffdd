//! What a kernel program's failed load says to the user: this module owns telling a
//! verifier rejection from a refusal of privileges, trimming the verifier's log to the
//! lines that say why, and the message with what to do. Privilege advice is given only
//! when the effective capabilities really lack what loading needs (`preflight` decides
//! that); as root, a rejection is reported as what it is. Pure: the caller hands in the
//! capabilities and the kernel release.

use crate::features::printable;
use crate::format::errno;
use crate::preflight;

/// Verifier log lines shown at most.
pub const TAIL_LINES: usize = 3;
/// Characters of one verifier line shown at most.
const LINE_MAX: usize = 200;

/// Why a program did not load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadFailure {
    /// The kernel's verifier rejected it; its last lines say why.
    Verifier { errno: i32, tail: Vec<String> },
    /// The kernel refused without a verifier log (EPERM or EACCES).
    Refused { errno: i32 },
    /// The object has no such program (a build problem).
    Missing,
    /// Anything else, as the library said it.
    Other(String),
}

impl LoadFailure {
    /// Classifies a failed `BPF_PROG_LOAD`: the error number and the verifier's log.
    pub fn from_load(errno: i32, log: &str) -> LoadFailure {
        let tail = log_tail(log, TAIL_LINES);
        if !tail.is_empty() {
            LoadFailure::Verifier { errno, tail }
        } else if errno == libc::EPERM || errno == libc::EACCES {
            LoadFailure::Refused { errno }
        } else {
            LoadFailure::Other(format!("BPF_PROG_LOAD failed with {}", errno::described(errno)))
        }
    }

    /// Why, in a few words, without advice: for the feature list and `portrace doctor`.
    pub fn reason(&self) -> String {
        match self {
            LoadFailure::Verifier { tail, .. } => format!("the kernel's verifier rejected it: {}", tail.join(" / ")),
            LoadFailure::Refused { errno } => format!("the kernel refused to load it ({})", errno::described(*errno)),
            LoadFailure::Missing => "the eBPF object has no such program (a build problem)".to_owned(),
            LoadFailure::Other(what) => printable(what),
        }
    }
}

/// The lines of a verifier log that say why it rejected a program: the last `n` lines
/// before the statistics the kernel appends (`verification time`, `stack depth`,
/// `processed N insns`), blank lines left out, control bytes shown as `?`, each cut to a
/// readable length. Empty when the log is.
pub fn log_tail(log: &str, n: usize) -> Vec<String> {
    let is_stats = |line: &str| {
        line.starts_with("verification time")
            || line.starts_with("stack depth")
            || (line.starts_with("processed ") && line.contains(" insns"))
    };
    let mut lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    while lines.last().is_some_and(|l| is_stats(l)) {
        lines.pop();
    }
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|line| {
            let clean = printable(line.trim());
            match clean.char_indices().nth(LINE_MAX) {
                Some((cut, _)) => format!("{}...", &clean[..cut]),
                None => clean,
            }
        })
        .collect()
}

/// What the loading process may do, as far as the message needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The effective capability set; `None` when it could not be read.
    pub cap_eff: Option<u64>,
    /// The kernel release (`uname -r`), for a report.
    pub kernel: String,
}

impl Context {
    /// Whether the effective capabilities really lack what loading needs: CAP_BPF and
    /// CAP_PERFMON together, or CAP_SYS_ADMIN. Unknown capabilities are not blamed.
    pub fn lacks_privileges(&self) -> bool {
        self.cap_eff.is_some_and(|caps| preflight::check_capabilities(caps, "portrace").is_err())
    }
}

/// The full message for a program that did not load: what failed, why, and what to do.
pub fn message(program: &str, purpose: &str, failure: &LoadFailure, cx: &Context) -> String {
    let privileges = "this process lacks CAP_BPF and CAP_PERFMON (or else CAP_SYS_ADMIN): run portrace as \
                      root, or see `portrace doctor` for the capabilities it needs";
    let report = format!(
        "please report this to the portrace developers with the kernel version ({}) and the output of \
         `portrace doctor`",
        printable(&cx.kernel)
    );
    match failure {
        LoadFailure::Verifier { tail, .. } => {
            let mut text = format!(
                "the kernel's verifier rejected {program} ({purpose}): {}; {report}",
                tail.join(" / ")
            );
            if cx.lacks_privileges() {
                text.push_str(&format!("; also, {privileges}"));
            }
            text
        }
        LoadFailure::Refused { errno } if cx.lacks_privileges() => {
            format!("the kernel refused to load {program} ({purpose}) with {}: {privileges}", errno::described(*errno))
        }
        LoadFailure::Refused { errno } => format!(
            "the kernel refused to load {program} ({purpose}) with {} although this process has the \
             capabilities it needs: something else forbids it here (kernel lockdown, a seccomp profile, a \
             security module, or this kind of program is not allowed on this kernel); run `portrace doctor` \
             to see which programs load",
            errno::described(*errno)
        ),
        LoadFailure::Missing => format!("the eBPF object has no program {program} ({purpose}): a build problem"),
        LoadFailure::Other(what) => {
            format!("loading {program} ({purpose}) failed: {}; {report}", printable(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of the log the kernel gave on this machine for the main state program.
    const REJECTION: &str = "func#0 @0\n\
        0: R1=ctx() R10=fp0\n\
        ; let args = ctx.as_ptr() as *const u64; @ program.rs:346\n\
        0: (bf) r6 = r1                       ; R1=ctx() R6_w=ctx()\n\
        \n\
        combined stack size of 2 calls is 720. Too large\n\
        verification time 1234 usec\n\
        stack depth 400+320\n\
        processed 5423 insns (limit 1000000) max_states_per_insn 4 total_states 301 peak_states 301 mark_read 12\n";

    const ROOT: u64 = 0x0000_01ff_ffff_ffff;

    fn cx(cap_eff: Option<u64>) -> Context {
        Context { cap_eff, kernel: "6.18.44-fc-v1300".into() }
    }

    #[test]
    fn the_tail_is_the_reason_not_the_statistics() {
        let tail = log_tail(REJECTION, 1);
        assert_eq!(tail, ["combined stack size of 2 calls is 720. Too large"]);
        assert_eq!(log_tail(REJECTION, 3).len(), 3);
        assert!(log_tail("", 3).is_empty());
        assert!(log_tail("\n\n  \n", 3).is_empty());
        let noisy = log_tail("R1 invalid mem access 'scalar'\x1b[2J\n", 3);
        assert_eq!(noisy, ["R1 invalid mem access 'scalar'?[2J"]);
        let long = log_tail(&"x".repeat(500), 1);
        assert_eq!(long[0].len(), LINE_MAX + 3);
    }

    #[test]
    fn as_root_a_verifier_rejection_never_says_to_run_as_root() {
        let failure = LoadFailure::from_load(libc::EACCES, REJECTION);
        assert!(matches!(failure, LoadFailure::Verifier { .. }), "{failure:?}");
        for caps in [Some(ROOT), Some(ROOT & !(1 << 24)), Some(1 << preflight::CAP_SYS_ADMIN), None] {
            let text = message("inet_sock_set_state", "every state transition", &failure, &cx(caps));
            assert!(!text.contains("root"), "{caps:?}: {text}");
            assert!(!text.contains("CAP_"), "{caps:?}: {text}");
            assert!(
                text.starts_with("the kernel's verifier rejected inet_sock_set_state (every state transition): "),
                "{text}"
            );
            assert!(text.contains("combined stack size of 2 calls is 720. Too large; please report"), "{text}");
            assert!(text.contains("6.18.44-fc-v1300") && text.contains("portrace doctor"), "{text}");
        }
        let eperm = LoadFailure::from_load(libc::EPERM, REJECTION);
        let text = message("timer_start", "TIME_WAIT", &eperm, &cx(Some(ROOT)));
        assert!(!text.contains("root"), "{text}");
    }

    #[test]
    fn privileges_are_blamed_only_when_they_are_missing() {
        let refused = LoadFailure::from_load(libc::EPERM, "");
        assert_eq!(refused, LoadFailure::Refused { errno: libc::EPERM });
        let unprivileged = message("kfree_skb", "FIN_WAIT2 to TIME_WAIT", &refused, &cx(Some(0)));
        assert!(unprivileged.contains("lacks CAP_BPF and CAP_PERFMON") && unprivileged.contains("root"), "{unprivileged}");
        let as_root = message("kfree_skb", "FIN_WAIT2 to TIME_WAIT", &refused, &cx(Some(ROOT)));
        assert!(!as_root.contains("root") && as_root.contains("something else forbids it"), "{as_root}");
        let only_bpf = cx(Some(1 << preflight::CAP_BPF));
        assert!(only_bpf.lacks_privileges());
        assert!(!cx(Some((1 << preflight::CAP_BPF) | (1 << preflight::CAP_PERFMON))).lacks_privileges());
        assert!(!cx(None).lacks_privileges(), "unknown capabilities are not blamed");
    }

    #[test]
    fn other_failures_keep_their_words() {
        let failure = LoadFailure::from_load(libc::E2BIG, "");
        assert_eq!(failure.reason(), "BPF_PROG_LOAD failed with E2BIG (argument list too long)");
        let verifier = LoadFailure::from_load(libc::EINVAL, "invalid func unknown#195896080\n");
        assert_eq!(verifier.reason(), "the kernel's verifier rejected it: invalid func unknown#195896080");
    }
}
