"""Only for the optional C accelerator; everything else is in pyproject.toml.

If the extension cannot be compiled (no C compiler), the build goes on
without it and trio_ws uses wsproto's pure-Python masking.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trio_ws._speedups", ["trio_ws/_speedups.c"], optional=True),
    ]
)
