print("bulkhead-bench: no benchmarks yet")
