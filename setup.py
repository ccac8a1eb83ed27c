"""Only for the relay's C fast lane; everything else is in pyproject.toml.

Optional: without a C compiler the install still succeeds, and the relay takes its
Python path for every message (app/relay/fastlane.py)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("app.relay._fastlane", ["app/relay/_fastlane.c"], extra_compile_args=["-O2"],
                             optional=True)])
