"""Building blocks of `pipelines.clean`: readers, text rules, dedup, Beam transforms, sinks.

The rule modules (normalize, c4, gopher, langid, minhash) are plain functions on strings,
so the Beam transforms and the plain-Python benchmark loop run exactly the same code.
"""
