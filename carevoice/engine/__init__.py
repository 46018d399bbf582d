"""The engine: Whisper on a device. The only package that imports faster_whisper, ctranslate2 and
pynvml: the model catalogue, resolution, pulling from the hub and loading, device and compute-type choice, the decode policy (pure), one
batch of speech chunks through Whisper, its seeded fallback, voice activity, and NVIDIA GPU facts.

May import: the shapes (carevoice.settings, errors, results, transcript, languages, interrupts,
files). Never imports carevoice.run, watch, commands, render or cli, and never prints.
"""
