"""Commands other than a run of files: ``doctor`` (will CareVoice work here?), ``bench`` (how fast
on these files?) and ``models`` (which model, and pulling it). One flow each, returning values; never prints.

May import: carevoice.run, carevoice.engine and the shapes. Never imports watch, render or cli.
"""
