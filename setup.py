"""The relay's C parts, and the top-level folders the package needs at run time;
everything else is in pyproject.toml.

The C parts are optional: without a C compiler the install still succeeds, and the
Python they stand in for does their work (app/relay/postgres/fastlane.py,
app/relay/postgres/answers.py).

templates/ and migrations/ stay at the top of the checkout (the layout users asked
for, and where `alembic` looks); a built wheel carries them inside the package, where
app/paths.py finds them once installed.
"""
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# checkout folder -> where it lands in the package (keep in step with app/paths.py)
BUNDLED = {"templates": "app/portal/templates", "migrations": "app/migrations"}


class build_py_bundled(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        for source, target in BUNDLED.items():
            for path in sorted(Path(source).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    dest = Path(self.build_lib, target, path.relative_to(source))
                    self.mkpath(str(dest.parent))
                    self.copy_file(str(path), str(dest))


def _c(name: str) -> Extension:
    return Extension(f"app.relay.postgres.{name}", [f"app/relay/postgres/{name}.c"], extra_compile_args=["-O2"],
                     optional=True)


setup(ext_modules=[_c("_fastlane"), _c("_answers")], cmdclass={"build_py": build_py_bundled})
