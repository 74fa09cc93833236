//! Hands WASI's `fd_write` what no correct program would, so that its
//! failure is the program's own: `buf-past-end`, an iovec whose buffer runs
//! past the end of memory; `iovs-past-end`, an iovec array that lies there
//! itself. Built as a module, the call goes to the host's preview 1; as a
//! component, through the preview 1 adapter to preview 2's
//! `blocking-write-and-flush`.

/// An iovec: a buffer's address and length.
type Ciovec = [usize; 2];

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn fd_write(fd: i32, iovs: *const Ciovec, iovs_len: usize, nwritten: *mut usize) -> i32;
}

/// Past the end of any memory short of 4 GiB (the memory may grow
/// before the call reads it: the adapter takes a page on first use).
const PAST_THE_END: usize = usize::MAX - 7;

#[inline(never)]
fn write_past_the_end(case: &str) -> i32 {
    let beyond: Ciovec = [PAST_THE_END, 100];
    let iovs = match case {
        "buf-past-end" => &beyond as *const Ciovec,
        "iovs-past-end" => PAST_THE_END as *const Ciovec,
        other => panic!("unknown case {other:?}"),
    };
    let mut written = 0;
    // SAFETY: none; that is the point. The host checks the pointers.
    unsafe { fd_write(1, std::hint::black_box(iovs), 1, &mut written) }
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let errno = write_past_the_end(&case);
    println!("fd_write returned errno {errno}");
}
