"""Only for the relay's C parts; everything else is in pyproject.toml.

Both are optional: without a C compiler the install still succeeds, and the Python
they stand in for does their work (app/relay/postgres/fastlane.py, app/relay/postgres/answers.py)."""
from setuptools import Extension, setup


def _c(name: str) -> Extension:
    return Extension(f"app.relay.postgres.{name}", [f"app/relay/postgres/{name}.c"], extra_compile_args=["-O2"],
                     optional=True)


setup(ext_modules=[_c("_fastlane"), _c("_answers")])
