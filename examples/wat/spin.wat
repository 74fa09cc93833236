;; Loops forever without calling the host: stopped only by `max_fuel`
;; (REASON_OUT_OF_FUEL), its timeout, or a kill.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever (br $forever))))
