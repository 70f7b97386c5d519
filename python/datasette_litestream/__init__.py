"""Datasette plugin: replicate every database Datasette serves with the bundled walship binary.

The hooks arrive with the plugin issue; until then this package only carries the binary.
"""
