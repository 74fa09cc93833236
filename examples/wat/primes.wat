;; Counts the primes in [LO, HI) by trial division and prints the count.
;; Usage: primes LO HI. Real, CPU-bound work with no wasm toolchain needed:
;; the demo and the README's first command run it. Exits 2 on bad arguments.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; Layout: 0 argc, 4 argv buffer size, 16.. argv pointers (at most 64),
  ;; 1024.. argv strings (at most 1 KiB), 2048..2091 digits, 2100 iovec.
  (memory (export "memory") 1)

  ;; A decimal number at $p, up to the first non-digit.
  (func $parse (param $p i32) (result i64)
    (local $n i64) (local $c i32)
    (block $done
      (loop $next
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.ge_u (local.get $c) (i32.const 10)))
        (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10))
                               (i64.extend_i32_u (local.get $c))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func $is_prime (param $n i64) (result i32)
    (local $d i64)
    (if (i64.lt_u (local.get $n) (i64.const 2)) (then (return (i32.const 0))))
    (local.set $d (i64.const 2))
    (block $prime
      (loop $try
        (br_if $prime (i64.gt_u (i64.mul (local.get $d) (local.get $d)) (local.get $n)))
        (if (i64.eqz (i64.rem_u (local.get $n) (local.get $d)))
          (then (return (i32.const 0))))
        (local.set $d (i64.add (local.get $d) (i64.const 1)))
        (br $try)))
    (i32.const 1))

  ;; Prints $n in decimal and a newline on stdout.
  (func $print (param $n i64)
    (local $p i32)
    (local.set $p (i32.const 2090))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $n) (i64.const 0))))
    (i32.store (i32.const 2100) (local.get $p))
    (i32.store (i32.const 2104) (i32.sub (i32.const 2091) (local.get $p)))
    (drop (call $fd_write (i32.const 1) (i32.const 2100) (i32.const 1) (i32.const 2108))))

  (func (export "_start")
    (local $lo i64) (local $hi i64) (local $count i64)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.or (i32.lt_u (i32.load (i32.const 0)) (i32.const 3))
                (i32.or (i32.gt_u (i32.load (i32.const 0)) (i32.const 64))
                        (i32.gt_u (i32.load (i32.const 4)) (i32.const 1024))))
      (then (call $proc_exit (i32.const 2))))
    (drop (call $args_get (i32.const 16) (i32.const 1024)))
    (local.set $lo (call $parse (i32.load (i32.const 20))))
    (local.set $hi (call $parse (i32.load (i32.const 24))))
    (block $end
      (loop $each
        (br_if $end (i64.ge_u (local.get $lo) (local.get $hi)))
        (local.set $count
          (i64.add (local.get $count) (i64.extend_i32_u (call $is_prime (local.get $lo)))))
        (local.set $lo (i64.add (local.get $lo) (i64.const 1)))
        (br $each)))
    (call $print (local.get $count))))
