"""Only for the relay's C fast lane; everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("app.relay._fastlane", ["app/relay/_fastlane.c"], extra_compile_args=["-O2"])])
