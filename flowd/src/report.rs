//! How an error reaches the operator: one line.
//!
//! - The cause chain is joined with `: `, skipping a cause whose text the
//!   line already holds (an error that prints its source in its own message
//!   and also returns it as `source()` would otherwise show it twice:
//!   "Is a directory (os error 21): Is a directory (os error 21)").
//! - A verifier rejection (hundreds of lines of log) becomes one line with
//!   its probable cause; the whole log goes to a file named in the line,
//!   and to the log at `FLOWD_LOG=debug`.

use std::path::PathBuf;

/// What aya puts between the syscall's error and the verifier's log.
const VERIFIER_MARK: &str = "Verifier output:";

/// The error and its causes in one line, each cause once, a verifier log
/// summarized.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    summarize_verifier(&line)
}

/// `text` itself, or, when it holds a verifier log, one line naming the
/// probable cause and the file with the whole text.
pub fn summarize_verifier(text: &str) -> String {
    let Some((head, log)) = text.split_once(VERIFIER_MARK) else {
        return text.to_owned();
    };
    tracing::debug!("verifier log:\n{log}");
    let saved = match save(text) {
        Ok(p) => format!("the whole log is in {}", p.display()),
        Err(e) => format!("saving the log failed ({e}); FLOWD_LOG=debug prints it"),
    };
    let head = head.trim().trim_end_matches('.');
    format!(
        "{head}: the verifier rejected the program; probable cause: {} ({saved})",
        probable_cause(log, &crate::caps::missing())
    )
}

/// The verifier's complaint in words, from the lines that name it.
pub fn probable_cause(log: &str, missing_caps: &[&str]) -> String {
    if missing_caps.contains(&"CAP_PERFMON") {
        return "flowd lacks CAP_PERFMON, without which the verifier refuses pointer arithmetic and some helpers (grant it, e.g. with deploy/flowd.service)".into();
    }
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let find = |pat: &str| lines.iter().rev().find(|l| l.contains(pat)).copied();
    if let Some(l) = find("prohibited for !root").or_else(|| find("without CAP_PERFMON")) {
        return format!("an operation allowed only with CAP_PERFMON ({l})");
    }
    if let Some(l) = find("unknown func") {
        return format!("a helper this kernel does not offer to this program type ({l})");
    }
    if let Some(l) = find("too large")
        .or_else(|| find("too complex"))
        .or_else(|| find("limit 1000000"))
    {
        return format!("the program exceeds this kernel's verifier limits ({l})");
    }
    if let Some(l) = find("invalid access to packet")
        .or_else(|| find("invalid mem access"))
        .or_else(|| find("out of bounds"))
    {
        return format!(
            "a memory access the verifier of this kernel cannot prove safe, a kernel version difference ({l})"
        );
    }
    match lines.last() {
        Some(l) => format!("see its last line: {l}"),
        None => "the kernel gave no log".into(),
    }
}

/// Writes the whole error to `flowd-verifier.log` in the unit's logs
/// directory (`LOGS_DIRECTORY`), else in the temporary directory.
fn save(text: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::var_os("LOGS_DIRECTORY")
        .map(|d| {
            // systemd may list several, separated by ':'.
            let d = d.to_string_lossy().into_owned();
            PathBuf::from(d.split(':').next().unwrap_or_default())
        })
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join("flowd-verifier.log");
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_not_repeated() {
        // A cause both in the message and returned as the source.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read /etc: {0}")]
        struct Twice(#[source] std::io::Error);
        let e = anyhow::Error::new(Twice(std::io::Error::from_raw_os_error(libc::EISDIR)));
        assert_eq!(
            one_line(&e),
            "cannot read /etc: Is a directory (os error 21)"
        );
        let io = std::io::Error::from_raw_os_error(libc::EISDIR);
        let e = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "/etc".into(),
            error: io,
        });
        assert_eq!(
            one_line(&e),
            "cannot read /etc: Is a directory (os error 21)"
        );
        let e = anyhow::anyhow!("outer").context("ctx");
        assert_eq!(one_line(&e), "ctx: outer");
    }

    #[test]
    fn a_verifier_log_becomes_one_line_and_a_file() {
        let log = "0: (b7) r0 = 2\n1: (61) r2 = *(u32 *)(r1 +0)\n; some source\n12: (0f) r3 += r2\nR3 pointer arithmetic on pkt_end prohibited\nprocessed 13 insns (limit 1000000)\n";
        let text = format!(
            "loading program `flowd_ingress` into the kernel failed: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: {log}"
        );
        let dir = std::env::temp_dir().join(format!("flowd-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: this test alone reads LOGS_DIRECTORY.
        unsafe { std::env::set_var("LOGS_DIRECTORY", &dir) };
        let line = summarize_verifier(&text);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.starts_with("loading program `flowd_ingress` into the kernel failed: the BPF_PROG_LOAD syscall returned Permission denied (os error 13): the verifier rejected the program; probable cause: "), "{line}");
        let file = dir.join("flowd-verifier.log");
        assert!(
            line.ends_with(&format!("(the whole log is in {})", file.display())),
            "{line}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn probable_causes() {
        let c = |log: &str| probable_cause(log, &[]);
        assert!(
            c("x\nR3 pointer arithmetic on pkt_end prohibited\n")
                .contains("see its last line: R3 pointer arithmetic on pkt_end prohibited")
        );
        assert!(
            c("R1 pointer arithmetic of map value goes out of range, prohibited for !root\n")
                .contains("CAP_PERFMON")
        );
        assert!(c("5: (85) call bpf_foo#999\nunknown func bpf_foo#999\n").contains("helper"));
        assert!(
            c("BPF program is too large. Processed 1000001 insn\n").contains("verifier limits")
        );
        assert!(c("invalid access to packet, off=14 size=20\n").contains("cannot prove safe"));
        assert!(
            probable_cause("anything", &["CAP_PERFMON"]).starts_with("flowd lacks CAP_PERFMON")
        );
        assert_eq!(c(""), "the kernel gave no log");
    }
}
