"""Trace replay: what a trace header must hold to run the recording again, finding and
verifying its inputs, and rerunning it while comparing events as they happen.

  header.py    the header of a version-2 trace (kernel, full configuration, inputs with
               their hashes, the run's checks, seeds, the harness) and back to a config
  inputs.py    finding a recorded input by its path or under search directories, by hash
  compare.py   which events and fields a replay compares (`--compare`)
  divergence.py the observer that compares a rerun with the recording and stops at the
               first difference with a report
Layer: beside emu.workloads (it builds Machines); the commands use it.
"""
