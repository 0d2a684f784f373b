"""The pack job: cleaned documents -> fixed-length ELECTRA examples (common/packformat.py).

`pipelines.pack` is the entry point; `run(cfg, beam_args)` the library call.
"""
