//! Is a compiled module a WASI preview 1 command, or a component a WASI
//! preview 2 `wasi:cli/command`? Checked before any task runs it, so that a
//! bad program is an `ERROR`/`REASON_INVALID_MODULE` with a message that
//! names the problem, never a trap halfway through.

use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, Module};

/// The only import module a task may use.
pub const WASI_P1: &str = "wasi_snapshot_preview1";

/// Checks that `module` exports `_start: [] -> []` and imports only
/// functions of WASI preview 1 that `is_wasi_function` knows. Returns why
/// not, in one sentence.
pub fn check_command(
    module: &Module,
    is_wasi_function: impl Fn(&str) -> bool,
) -> Result<(), String> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if m != WASI_P1 {
            return Err(format!(
                "the module imports `{m}::{name}`, which is not WASI preview 1 \
                 (only `{WASI_P1}` imports are provided)"
            ));
        }
        if !matches!(import.ty(), ExternType::Func(_)) || !is_wasi_function(name) {
            return Err(format!(
                "the module imports `{m}::{name}`, which WASI preview 1 does not define"
            ));
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        Some(_) => Err("the module's `_start` export is not a function `[] -> []`".into()),
        None => Err("the module has no `_start` export: it is not a WASI command".into()),
    }
}

/// WASI preview 1 functions that reach no descriptor other than stdin,
/// stdout and stderr (and behave the same on a directory descriptor as on a
/// missing one: `fd_write` and a `poll_oneoff` subscription on a descriptor
/// answer `EBADF` to both; without `path_open` there is no other file).
const NO_FILE_ACCESS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_write",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
];

/// False when the module imports only functions of [`NO_FILE_ACCESS`]:
/// it can then neither see nor change its root directory. (Imports are
/// all a module can call: WASI preview 1 has no dynamic linking.)
pub fn can_touch_files(module: &Module) -> bool {
    module
        .imports()
        .any(|import| import.module() != WASI_P1 || !NO_FILE_ACCESS.contains(&import.name()))
}

/// Why a component cannot be linked, in words that say what is provided.
pub fn component_link_error(err: &wasmtime::Error) -> String {
    format!(
        "the component cannot be linked: {err:#} (only WASI preview 2 interfaces \
         are provided)"
    )
}

/// Why a component is not a `wasi:cli/command`.
pub fn component_command_error(err: &wasmtime::Error) -> String {
    format!(
        "the component does not export `wasi:cli/run`, so it is not a WASI command \
         (build it as a binary for wasm32-wasip2): {err:#}"
    )
}

/// Where a component reaches files: `wasi:filesystem` (its preopens and
/// descriptors). A component that imports neither, nor anything outside
/// WASI, gets no preopen, no disk watch and no end-of-task walk, as a
/// module that imports only [`NO_FILE_ACCESS`] functions.
pub fn component_can_touch_files(component: &Component, engine: &Engine) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| !name.starts_with("wasi:") || name.starts_with("wasi:filesystem/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Engine;

    fn module(wat: &str) -> Module {
        Module::new(&Engine::default(), wat).unwrap()
    }

    #[test]
    fn accepts_a_command_with_wasi_imports() {
        let m = module(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (func (export "_start")))"#,
        );
        assert_eq!(check_command(&m, |n| n == "proc_exit"), Ok(()));
    }

    #[test]
    fn names_a_foreign_import() {
        let m = module(r#"(module (import "env" "now" (func)) (func (export "_start")))"#);
        let err = check_command(&m, |_| true).unwrap_err();
        assert!(err.contains("`env::now`"), "{err}");
    }

    #[test]
    fn names_an_unknown_wasi_function() {
        let m = module(
            r#"(module (import "wasi_snapshot_preview1" "teleport" (func)) (func (export "_start")))"#,
        );
        let err = check_command(&m, |n| n == "fd_write").unwrap_err();
        assert!(
            err.contains("teleport") && err.contains("does not define"),
            "{err}"
        );
    }

    fn component(wat: &str) -> (Component, Engine) {
        let engine = Engine::default();
        (Component::new(&engine, wat).unwrap(), engine)
    }

    #[test]
    fn a_component_touches_files_through_wasi_filesystem_only() {
        let (c, e) = component(r#"(component (import "wasi:cli/environment@0.2.0" (instance)))"#);
        assert!(!component_can_touch_files(&c, &e));
        let (c, e) =
            component(r#"(component (import "wasi:filesystem/preopens@0.2.0" (instance)))"#);
        assert!(component_can_touch_files(&c, &e));
        let (c, e) = component(r#"(component (import "acme:fs/open" (instance)))"#);
        assert!(component_can_touch_files(&c, &e));
    }

    #[test]
    fn requires_start() {
        let err = check_command(&module("(module)"), |_| true).unwrap_err();
        assert!(err.contains("_start"), "{err}");
        let err = check_command(
            &module(r#"(module (func (export "_start") (param i32)))"#),
            |_| true,
        )
        .unwrap_err();
        assert!(err.contains("[] -> []"), "{err}");
    }
}
