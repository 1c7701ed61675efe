"""`hybrid-serve bench EXPERIMENT`: cold start, warm latency, throughput, batching gain and time to first
token of one experiment, on the local emulator or a deployed endpoint.

Why this package exists: the benchmarks in `benchmarks/` measure the project on its demo and tiny
models; a user wants the same figures for their own model, with their own registry and settings. One
module per concept: the plan (`plan`), statistics (`stats`), the load generator (`load`), the probes
of single requests (`probes`), the local target (`local`), the run (`run`) and the report (`report`).
"""
