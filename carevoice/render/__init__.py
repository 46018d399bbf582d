"""Facts in, words and pictures out: the live progress bar and per-file lines, run summaries and plans,
doctor's table, the model catalogue and pull bar, bench tables, the HTML run report, and charts. Decides nothing.

May import: everything below it (commands, watch, run, engine, shapes) for their result types.
With carevoice.cli, the only package that uses rich or prints. Never imports carevoice.cli.
"""
