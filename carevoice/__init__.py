"""CareVoice: batch transcription of care-work recordings with faster-whisper."""

__version__ = "0.2.0"
