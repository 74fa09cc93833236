;; Grows its memory 1 MiB at a time until a grow fails: under a `mem` cap the
;; agent fails it with REASON_MEMORY_LIMIT at the first grow past the cap.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))
