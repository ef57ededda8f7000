"""Traces exported to other tools' formats.

  perfetto.py  a Perfetto trace (protobuf TracePackets of track events) for ui.perfetto.dev
Layer: beside emu.replay (it reads traces); the commands use it.
"""
