"""Side-cars: the call's data tier (live state, history, events, recording), fed by taps.

Side-cars watch a call and never slow it: see :mod:`processors.sidecars.facts` for the
contract every one of them keeps.
"""
