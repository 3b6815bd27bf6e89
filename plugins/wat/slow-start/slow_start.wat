;; A hostile plugin, as far as the sandbox lets one go: every instance spins in a start function (run
;; while the host instantiates it, before any hook call and outside any call deadline), and every
;; `authorize-join` grows linear memory by 70 MiB and allows the join, so the host throws the instance
;; away after each call and must start a new one. Used to prove one tenant's plugin cannot stall others.
(module
  (memory (export "memory") 1)
  (global $spun (mut i64) (i64.const 0))
  (func $slow_start
    (local $i i64)
    (loop $spin
      (global.set $spun (i64.add (global.get $spun) (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $spin (i64.lt_u (local.get $i) (i64.const 200000000)))))
  (start $slow_start)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 1024))
  ;; join-request flattens to 15 parameters; result<_, string> is returned through a pointer.
  (func (export "ioplex:plugin/authorize-join@0.1.0#authorize-join")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (drop (memory.grow (i32.const 1120)))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.const 16)))
