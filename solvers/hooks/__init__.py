"""In-sandbox halves of the harness, kept as source text and never imported by the host.

`runtime.py` is the trusted prelude (channel, framing, run-as-`__main__`); each `<api>_hook.py` defines
`install(capture, flip_sense)` for one solver API. `solvers.harness.build_program` concatenates the runtime,
one hook and the program into the single script that the sandbox runs.
"""
