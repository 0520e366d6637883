"""Builds the wheel with rimd's C ABI library inside it.

`pip install clients/python` (from a checkout of the rimd repository) runs
`cargo build --release -p rim-ring` and puts `librim_ring.so` into the package, so the
installed client needs nothing else. Two environment variables change that:

- `RIM_RING_LIB=/path/to/librim_ring.so`: ship that file instead of building one;
- `RIM_CARGO_PROFILE=dev`: build with that cargo profile (the test suite reuses its debug
  build this way).

The library does not depend on the Python version, so the wheel is tagged
`py3-none-<platform>`.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LIB = "librim_ring.so"


def cargo_library() -> Path:
    """Builds librim_ring.so with cargo and returns its path."""
    if not (REPO / "ring" / "Cargo.toml").exists():
        raise SystemExit(
            f"rimd-client: no rimd checkout around {HERE}; set RIM_RING_LIB to a built {LIB}"
        )
    profile = os.environ.get("RIM_CARGO_PROFILE", "release")
    subprocess.run(
        ["cargo", "build", "--profile", profile, "-p", "rim-ring", "--lib"],
        cwd=REPO,
        check=True,
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    target = Path(json.loads(meta.stdout)["target_directory"])
    # Cargo's `dev` profile builds into `debug/`.
    return target / ("debug" if profile == "dev" else profile) / LIB


class BuildWithLibrary(build_py):
    """Copies librim_ring.so into the package beside the Python modules."""

    def run(self):
        super().run()
        given = os.environ.get("RIM_RING_LIB")
        source = Path(given) if given else cargo_library()
        if not source.is_file():
            raise SystemExit(f"rimd-client: {source} does not exist")
        dest = Path(self.build_lib) / "rimd_client" / LIB
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


class PlatformWheel(bdist_wheel):
    """A wheel for this platform (it holds a shared library), any Python 3."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(
    cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel},
    distclass=BinaryDistribution,
)
