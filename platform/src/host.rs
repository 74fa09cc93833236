//! What an agent says about the machine it runs on: its host name for
//! people, and its OS and CPU for tasks that must run on one kind.

/// The attribute key under which every agent reports its OS.
pub const OS_ATTRIBUTE: &str = "os";
/// The attribute key under which every agent reports its CPU architecture.
pub const ARCH_ATTRIBUTE: &str = "arch";
/// Attribute keys the agent sets itself; an operator's may not use them.
pub const RESERVED_ATTRIBUTES: [&str; 2] = [OS_ATTRIBUTE, ARCH_ATTRIBUTE];

/// This machine's host name as the OS knows it (`localhost` if it has none
/// or it is not text).
pub fn hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The OS this binary runs on, as Rust names it: `linux`, `macos`,
/// `windows`, `freebsd`, ...
pub fn os() -> &'static str {
    std::env::consts::OS
}

/// The CPU architecture this binary runs on, as Rust names it: `x86_64`,
/// `aarch64`, `riscv64`, ... (the binary's, so an x86_64 build under an
/// emulator says `x86_64`).
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

/// The attributes every agent reports of itself: `os` and `arch`.
pub fn attributes() -> [(&'static str, &'static str); 2] {
    [(OS_ATTRIBUTE, os()), (ARCH_ATTRIBUTE, arch())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_machine_and_its_kind() {
        assert!(!hostname().is_empty());
        #[cfg(target_os = "linux")]
        assert_eq!(
            hostname(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        );
        let attributes = attributes();
        assert_eq!(attributes[0], ("os", std::env::consts::OS));
        assert_eq!(attributes[1], ("arch", std::env::consts::ARCH));
        assert!(RESERVED_ATTRIBUTES.contains(&attributes[0].0));
    }
}
