"""nerschat on Parsl: pilot and client apps, config loading and site options.

The only package that calls `parsl.python_app`; the rest of nerschat is plain functions
that work with or without Parsl (Parsl's "Structuring Parsl programs" guide).
"""
