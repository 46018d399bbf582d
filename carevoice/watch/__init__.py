"""The drop-folder service (``carevoice watch``): file-system events or walks, the pure settle rule
for arrivals, the heartbeat and its health rule, the per-day report, and the service loop that hands
settled files to a run. Its lines go to a log the caller gives it; it never prints.

May import: carevoice.run, carevoice.engine and the shapes. Never imports commands, render or cli.
"""
