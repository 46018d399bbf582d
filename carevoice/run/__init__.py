"""One run of files: discovery -> plan (records and the rerun rules) -> decode (ffmpeg) -> chunking
-> cross-file batches -> engine -> assembly -> atomic writers, with the locks that keep two runs off
one file. Returns FileResults; never prints.

May import: carevoice.engine and the shapes. Never imports carevoice.watch, commands, render or cli.
"""
