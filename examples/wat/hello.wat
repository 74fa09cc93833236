;; The smallest WASI command: writes "hello\n" to stdout and exits 0.
;; Used by the SDK's end-to-end tests and `hello_job`.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; An iovec at 0: { buf = 16, len = 6 }; the text at 16.
  (data (i32.const 0) "\10\00\00\00\06\00\00\00")
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    ;; fd 1 (stdout), 1 iovec at 0, bytes written stored at 8.
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
