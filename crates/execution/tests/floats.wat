;; Floating point whose results the WebAssembly spec leaves open: NaNs from 0/0,
;; sqrt(-1), inf - inf and min/max of NaNs, in f32 and f64, their bits written to stdout.
;; Deterministic only with NaN canonicalization; also sums a series so that fuel is spent.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32) (local $acc f64)
    (f64.store (i32.const 100) (f64.div (f64.const 0) (f64.const 0)))
    (f64.store (i32.const 108) (f64.sqrt (f64.const -1)))
    (f64.store (i32.const 116) (f64.sub (f64.const inf) (f64.const inf)))
    (f32.store (i32.const 124) (f32.div (f32.const 0) (f32.const 0)))
    (f32.store (i32.const 128) (f32.min (f32.const nan:0x200000) (f32.const 1)))
    (f64.store (i32.const 132) (f64.max (f64.neg (f64.const nan)) (f64.const 2)))
    (f32.store (i32.const 140) (f32.demote_f64 (f64.div (f64.const 0) (f64.const 0))))
    (f64.store (i32.const 144) (f64.promote_f32 (f32.sqrt (f32.const -4))))
    (loop $sum
      (local.set $acc (f64.add (local.get $acc)
        (f64.div (f64.const 1) (f64.convert_i32_u (i32.add (local.get $i) (i32.const 1))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $sum (i32.lt_u (local.get $i) (i32.const 100000))))
    (f64.store (i32.const 152) (local.get $acc))
    ;; iovec at 0: 60 bytes from 100
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 60))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
