;; ZeroState's built-in tasks: real workloads a devnet can run without any toolchain.
;; One module, one entry point per task; each reads stdin and writes one line to stdout.
;;
;;   primes  stdin: a number N      stdout: how many primes are <= N (sieve of Eratosthenes)
;;   matmul  stdin: a number N      stdout: the sum of all entries of A x B, where A and B are
;;                                          N x N with A[i][j] = (i*j + 1) mod 7 and
;;                                          B[i][j] = (i + 2j) mod 5, entries as wrapping u32
;;   crc32   stdin: any bytes       stdout: their CRC-32 (IEEE 802.3), 8 hex digits
;;
;; Memory: 0..16 iovec scratch, 16..64 number text, from 1024 the task's own data.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)

  ;; Reads stdin into $buf until $max bytes or end of input; returns the count.
  (func $read_into (param $buf i32) (param $max i32) (result i32)
    (local $total i32) (local $n i32)
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $total) (local.get $max)))
        (i32.store (i32.const 0) (i32.add (local.get $buf) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (local.get $max) (local.get $total)))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $more)))
    (local.get $total))

  ;; The decimal number at the start of stdin (digits up to the first non-digit).
  (func $read_number (result i64)
    (local $len i32) (local $i i32) (local $c i32) (local $v i64)
    (local.set $len (call $read_into (i32.const 16) (i32.const 40)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (i32.const 16) (local.get $i))))
        (br_if $done (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57))))
        (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
                               (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $v))

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; Writes $v in decimal and a newline.
  (func $write_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 63))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (call $write (local.get $p) (i32.sub (i32.const 64) (local.get $p))))

  ;; Writes $v as 8 lower-case hex digits and a newline.
  (func $write_hex32 (param $v i32)
    (local $i i32) (local $d i32)
    (loop $digit
      (local.set $d (i32.and
        (i32.shr_u (local.get $v) (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2))))
        (i32.const 15)))
      (i32.store8 (i32.add (i32.const 16) (local.get $i))
        (i32.add (local.get $d) (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $d) (i32.const 10)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $digit (i32.lt_u (local.get $i) (i32.const 8))))
    (i32.store8 (i32.const 24) (i32.const 10))
    (call $write (i32.const 16) (i32.const 9)))

  ;; Grows memory to at least $end bytes (the host's memory limit stops runaway sizes).
  (func $reserve (param $end i64)
    (local $pages i64)
    (local.set $pages (i64.sub (i64.shr_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 16))
                               (i64.extend_i32_u (memory.size))))
    (if (i64.gt_s (local.get $pages) (i64.const 0))
      (then
        (if (i64.gt_u (local.get $pages) (i64.const 65536)) (then unreachable))
        (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $pages))) (i32.const -1)) (then unreachable)))))

  (func (export "primes")
    (local $n i32) (local $i i32) (local $j i32) (local $count i64)
    (local.set $n (i32.wrap_i64 (call $read_number)))
    (call $reserve (i64.add (i64.const 1025) (i64.extend_i32_u (local.get $n))))
    (local.set $i (i32.const 2))
    (block $done
      (loop $outer
        (br_if $done (i32.gt_u (local.get $i) (local.get $n)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
          (then
            (local.set $count (i64.add (local.get $count) (i64.const 1)))
            (if (i64.le_u (i64.mul (i64.extend_i32_u (local.get $i)) (i64.extend_i32_u (local.get $i)))
                          (i64.extend_i32_u (local.get $n)))
              (then
                (local.set $j (i32.mul (local.get $i) (local.get $i)))
                (loop $mark
                  (i32.store8 (i32.add (i32.const 1024) (local.get $j)) (i32.const 1))
                  (local.set $j (i32.add (local.get $j) (local.get $i)))
                  (br_if $mark (i32.le_u (local.get $j) (local.get $n))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (call $write_u64 (local.get $count)))

  (func (export "matmul")
    (local $n i32) (local $i i32) (local $j i32) (local $k i32)
    (local $a i32) (local $b i32) (local $acc i32) (local $total i64) (local $size i32)
    (local.set $n (i32.wrap_i64 (call $read_number)))
    (if (i32.gt_u (local.get $n) (i32.const 16384)) (then unreachable))
    (local.set $size (i32.shl (i32.mul (local.get $n) (local.get $n)) (i32.const 2)))
    (local.set $a (i32.const 1024))
    (local.set $b (i32.add (local.get $a) (local.get $size)))
    (call $reserve (i64.add (i64.extend_i32_u (local.get $b)) (i64.extend_i32_u (local.get $size))))
    ;; Fill A and B.
    (local.set $i (i32.const 0))
    (block $filled
      (loop $rows
        (br_if $filled (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $j (i32.const 0))
        (block $row_done
          (loop $cols
            (br_if $row_done (i32.ge_u (local.get $j) (local.get $n)))
            (i32.store (i32.add (local.get $a) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $j)) (i32.const 2)))
              (i32.rem_u (i32.add (i32.mul (local.get $i) (local.get $j)) (i32.const 1)) (i32.const 7)))
            (i32.store (i32.add (local.get $b) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $j)) (i32.const 2)))
              (i32.rem_u (i32.add (local.get $i) (i32.shl (local.get $j) (i32.const 1))) (i32.const 5)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cols)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows)))
    ;; Sum every entry of A x B.
    (local.set $i (i32.const 0))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $j (i32.const 0))
        (block $row_done
          (loop $cols
            (br_if $row_done (i32.ge_u (local.get $j) (local.get $n)))
            (local.set $acc (i32.const 0))
            (local.set $k (i32.const 0))
            (block $dot_done
              (loop $dot
                (br_if $dot_done (i32.ge_u (local.get $k) (local.get $n)))
                (local.set $acc (i32.add (local.get $acc)
                  (i32.mul
                    (i32.load (i32.add (local.get $a) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $k)) (i32.const 2))))
                    (i32.load (i32.add (local.get $b) (i32.shl (i32.add (i32.mul (local.get $k) (local.get $n)) (local.get $j)) (i32.const 2)))))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br $dot)))
            (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $acc))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cols)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows)))
    (call $write_u64 (local.get $total)))

  (func (export "crc32")
    (local $crc i32) (local $n i32) (local $i i32) (local $k i32)
    (local.set $crc (i32.const -1))
    (block $eof
      (loop $chunk
        (local.set $n (call $read_into (i32.const 1024) (i32.const 65536)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $i (i32.const 0))
        (loop $byte
          (local.set $crc (i32.xor (local.get $crc) (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
          (local.set $k (i32.const 8))
          (loop $bit
            (local.set $crc (i32.xor (i32.shr_u (local.get $crc) (i32.const 1))
              (i32.and (i32.const 0xEDB88320) (i32.sub (i32.const 0) (i32.and (local.get $crc) (i32.const 1))))))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (br_if $bit (local.get $k)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $byte (i32.lt_u (local.get $i) (local.get $n))))
        (br $chunk)))
    (call $write_hex32 (i32.xor (local.get $crc) (i32.const -1))))
)
